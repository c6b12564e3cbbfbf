"""``tf-bertopt decay-report``: which variables of a saved model are decayed and adapted."""

from __future__ import annotations

import sys
import warnings

from tf_bertopt import layerwise, name_matching
from tf_bertopt.cli.arguments import UsageError
from tf_bertopt.decay_reporting import _LIST_NAMES, decay_report
from tf_bertopt.name_matching import NameRules
from tf_bertopt.recipe import BERT_EXCLUSIONS

def load_model(path: str, compile: bool = False):
    """A saved Keras 3 or tf-keras model, the flavour chosen from the file.

    ``.keras`` archives name the Keras version that wrote them (2.x is
    tf-keras); ``.h5`` files and SavedModel folders are tf-keras.
    """
    import os
    import zipfile

    if not os.path.exists(path):
        raise UsageError(f"no such model file or folder: {path!r}")
    if zipfile.is_zipfile(path):
        flavour = "tf_keras" if _keras_version(path).startswith("2.") else "keras"
    elif path.endswith(".keras"):
        raise UsageError(f"{path!r} is not a complete .keras archive (empty, truncated, or not a zip file)")
    elif path.endswith((".h5", ".hdf5")) or os.path.isdir(path):
        flavour = "tf_keras"
    else:
        raise UsageError(f"{path!r} is not a saved Keras model (.keras, .h5 or a SavedModel folder)")
    import importlib

    library = importlib.import_module(flavour)
    try:
        if flavour == "keras":
            return library.models.load_model(path, compile=compile, safe_mode=True)
        # tf-keras applies safe mode to .keras files only: a Python lambda in
        # an .h5 file would run while the model is rebuilt, unless asked here.
        from tf_keras.src.saving.serialization_lib import SafeModeScope

        with SafeModeScope(True):
            return library.models.load_model(path, compile=compile)
    except Exception as error:  # noqa: BLE001 - any loading failure is reported in one line
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(
            f"could not load {path!r} with {flavour}: {first_line} "
            "(custom layers? pass --custom-module with the module that registers them)"
        ) from None


def _keras_version(path: str) -> str:
    """The Keras version a .keras archive names in its metadata.json."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
    except KeyError:
        raise UsageError(f"{path!r} is a zip file but not a saved Keras model (no metadata.json)") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:  # JSON and decoding errors are ValueErrors
        raise UsageError(f"{path!r} is a damaged .keras archive: its metadata.json cannot be read ({error})") from None
    if not isinstance(metadata, dict):
        raise UsageError(f"{path!r} is a damaged .keras archive: its metadata.json is not a JSON object")
    return str(metadata.get("keras_version", "3"))


def run(args) -> int:
    import importlib

    given = [argument for argument in _LIST_NAMES if getattr(args, argument) is not None]
    layer_options = args.layer_depths or args.layerwise_lr_decay is not None
    if args.saved_optimizer and (given or layer_options):
        raise UsageError(
            "--saved-optimizer uses the saved optimizer's patterns and layer depths; "
            "give no pattern or layer options with it"
        )
    for module in args.custom_module:
        importlib.import_module(module)
    with warnings.catch_warnings():
        # A model whose class overrides compile() (keras-hub's) is loaded with its own optimizer;
        # --saved-optimizer reads the saved one from the file's compile_config instead.
        warnings.filterwarnings("ignore", message=r"`compile\(\)` was not called as part of model loading")
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model = load_model(args.model, compile=args.saved_optimizer)
    if args.saved_optimizer:
        optimizer = getattr(model, "optimizer", None)
        if not isinstance(getattr(optimizer, "name_rules", None), NameRules):
            optimizer = _optimizer_in_compile_config(args.model) or optimizer
        if not isinstance(getattr(optimizer, "name_rules", None), NameRules):
            raise UsageError(
                f"{args.model!r} was not saved compiled with a tf_bertopt optimizer "
                f"(its optimizer is {type(optimizer).__name__}); drop --saved-optimizer and give the patterns"
            )
        report = decay_report(optimizer, model)
    else:
        defaults = {"exclude_from_weight_decay": BERT_EXCLUSIONS}
        try:
            rules = NameRules(
                *(
                    name_matching.compile_patterns(
                        "decay-report",
                        f"--{argument.replace('_', '-')}",
                        getattr(args, argument) if argument in given else defaults.get(argument, ()),
                    )
                    for argument in _LIST_NAMES
                )
            )
        except ValueError as error:  # an invalid regular expression
            raise UsageError(str(error)) from None
        if args.optimizer == "adamw" and rules.exclude_from_layer_adaptation:
            raise UsageError("--exclude-from-layer-adaptation only applies to --optimizer lamb")
        report = decay_report(
            rules,
            model,
            layer_adaptation=args.optimizer == "lamb",
            layer_depths=_layer_depths(args),
            layerwise_lr_decay=args.layerwise_lr_decay,
        )
    print(f"{args.model}: {type(model).__name__} {model.name!r}")
    print(report)
    note = _names_note(model, report)
    if note:
        print(note)
    return 1 if args.strict and report.warnings else 0


LAYER_DEPTH_RULES = {
    "tf1-bert": layerwise.tf1_bert_layer_depths,
    "electra": layerwise.electra_layer_depths,
    "keras-hub-bert": layerwise.keras_hub_bert_layer_depths,
}


def _layer_depths(args):
    if args.layer_depths is None:
        if args.layerwise_lr_decay is not None:
            raise UsageError("--layerwise-lr-decay needs --layer-depths (the rules that give each variable its depth)")
        return None
    if args.num_layers is None:
        raise UsageError(f"--layer-depths {args.layer_depths} needs --num-layers (the encoder's layer count)")
    if args.layer_depths == "electra":
        if args.default_layer_depth is not None:
            raise UsageError("--layer-depths electra has no default depth (ELECTRA refuses unplaced variables)")
        return layerwise.electra_layer_depths(args.num_layers)
    return LAYER_DEPTH_RULES[args.layer_depths](args.num_layers, args.default_layer_depth)


def _optimizer_in_compile_config(path: str):
    """The optimizer a Keras 3 ``.keras`` file was saved compiled with, rebuilt from its ``compile_config``."""
    from tf_bertopt import saved_models

    try:
        config = saved_models.saved_compile_config(path)
    except ValueError:  # not a Keras 3 archive
        return None
    if not config or not config.get("optimizer"):
        return None
    import keras

    import tf_bertopt.keras3  # noqa: F401 - registers tf_bertopt's classes for deserialization

    return keras.saving.deserialize_keras_object(config["optimizer"])


def _names_note(model, report) -> str | None:
    """For a Keras 3 Sequential model: its names here lack the prefix they had where it was built."""
    keras = sys.modules.get("keras")
    if not report.variables or keras is None or not isinstance(model, keras.Sequential):
        return None
    example = report.variables[0].name
    return (
        "Names: the variable paths of the model as loaded from the file. In the process that built it, "
        f"a Keras 3 Sequential model's paths usually start with its name ({model.name}/{example} for {example}); "
        "patterns are searched (re.search) anywhere in the path, so the decisions are the same there "
        "unless a pattern is anchored with ^."
    )


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "decay-report",
        help="list which variables of a saved model get weight decay and layer adaptation",
        description=(
            "Loads a saved Keras model (.keras from Keras 3 or tf-keras; .h5 and SavedModel folders from "
            "tf-keras) and prints, for each trainable variable, whether the given patterns give it weight "
            "decay and LAMB's layer adaptation, which pattern decided, and a warning for every pattern that "
            "matches no variable. Patterns are regular expressions searched (re.search) in the full "
            "variable name: Keras 3 variable.path, tf-keras variable.name without ':0'. The defaults are "
            "those of tf_bertopt.create_optimizer."
        ),
    )
    parser.add_argument("model", help="saved model: a .keras file, a .h5 file or a SavedModel folder")
    parser.add_argument("--exclude-from-weight-decay", nargs="*", metavar="PATTERN", 
                        help=f"variables not decayed (default: BERT's {list(BERT_EXCLUSIONS)}; "
                             "the option with no pattern gives an empty list)")
    parser.add_argument("--include-in-weight-decay", nargs="*", metavar="PATTERN",
                        help="variables decayed even if excluded (default: none)")
    parser.add_argument("--exclude-from-layer-adaptation", nargs="*", metavar="PATTERN",
                        help="variables LAMB does not adapt (default: none, as TF1 LAMB; ALBERT passes BERT's list)")
    parser.add_argument("--optimizer", choices=("lamb", "adamw"), default="lamb",
                        help="lamb (default) also reports layer adaptation; adamw reports weight decay only")
    parser.add_argument("--saved-optimizer", action="store_true",
                        help="use the patterns of the tf_bertopt optimizer the model was saved compiled with, read from the "
                             "file's compile_config (also for models, such as keras-hub's, that Keras loads "
                             "with an optimizer of their own)")
    parser.add_argument("--custom-module", action="append", default=[], metavar="MODULE",
                        help="import this module first (it registers the model's custom layers); repeatable")
    parser.add_argument("--layer-depths", choices=sorted(LAYER_DEPTH_RULES),
                        help="also show each variable's depth by these ready rules (tf_bertopt.layerwise)")
    parser.add_argument("--num-layers", type=int, metavar="L", help="encoder layers, for --layer-depths")
    parser.add_argument("--default-layer-depth", type=int, metavar="DEPTH",
                        help="depth of variables no rule places (default: none, they are reported)")
    parser.add_argument("--layerwise-lr-decay", type=float, metavar="DECAY",
                        help="show each variable's learning-rate multiplier DECAY ** (max_depth - depth)")
    parser.add_argument("--strict", action="store_true", help="exit with code 1 if there is any warning")
    parser.set_defaults(func=run)
