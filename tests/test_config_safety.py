"""Configs and files from elsewhere fail fast with a clear error, run no code, and cannot hang.

* ``from_config`` (and so ``load_model``) of a config with a wrong type, an
  unknown key, or a number outside float32 / int64 raises a ``ValueError``
  naming the class and the argument.
* Name patterns are matched by RE2: a pattern that backtracks exponentially in
  Python's ``re`` takes linear time on a long variable name; syntax RE2 cannot
  run in linear time is refused when the optimizer is made.
* A Python lambda smuggled into a saved model is refused (safe mode), also by
  ``tf-bertopt decay-report`` on tf-keras ``.h5`` files, where tf-keras itself
  would run it.
* ``tf-bertopt decay-report`` and ``inspect-tf1`` on empty, truncated or
  foreign files exit with code 2 and one line.
"""

from __future__ import annotations

import json
import os
import time
import zipfile

import keras
import numpy as np
import pytest
import tf_keras

import harness
from cli_helpers import error_lines
from tf_bertopt import cli

KINDS = ["AdamWeightDecay", "LAMB"]
TIME_LIMIT_S = 2.0  # a backtracking matcher would take longer than the age of the universe

# (argument, bad value) -> the argument must be named in the error.
BAD_VALUES = [
    ("weight_decay_rate", "0.01"),
    ("weight_decay_rate", [0.01]),
    ("weight_decay_rate", -1.0),
    ("weight_decay_rate", 1e300),
    ("learning_rate", 1e39),
    ("learning_rate", "0.1"),
    ("epsilon", 1e-300),
    ("epsilon", float("nan")),
    ("beta_1", 1.0),
    ("beta_2", -0.5),
    ("exclude_from_weight_decay", 5),
    ("exclude_from_weight_decay", [7]),
    ("include_in_weight_decay", ["(?=lookahead)"]),
    ("exclude_from_weight_decay", ["(a)\\1"]),
    ("clipnorm", -1.0),
    ("global_clipnorm", float("inf")),
    ("use_ema", "yes"),
    ("ema_momentum", 5.0),
    ("ema_overwrite_frequency", -3),
    ("ema_overwrite_frequency", 2**64),
    ("name", 5),
    ("fused", "true"),
    ("skip_nonfinite_steps", "false"),
    ("unknown_argument", 1),
]
KERAS3_ONLY = [("gradient_accumulation_steps", 2**70), ("gradient_accumulation_steps", 1), ("loss_scale_factor", 0)]
TF_KERAS_ONLY = [("jit_compile", "x"), ("gradient_accumulation_steps", 2)]  # tf-keras has no accumulation
LAMB_ONLY = [("bias_correction", 1), ("weight_norm_bounds", (1e39, None)), ("trust_ratio_bounds", (2.0, 1.0))]


def bad_configs(flavour, kind):
    cases = BAD_VALUES + (KERAS3_ONLY if flavour == "keras3" else TF_KERAS_ONLY)
    return cases + (LAMB_ONLY if kind == "LAMB" else [("bias_correction", True)])


def optimizer_class(flavour, kind):
    return getattr(harness.front_end(flavour), kind)


@pytest.mark.parametrize("kind", KINDS)
def test_from_config_refuses_every_bad_value_naming_class_and_argument(flavour, kind):
    cls = optimizer_class(flavour, kind)
    good = cls(learning_rate=0.01).get_config()
    accepted = []
    for argument, value in bad_configs(flavour, kind):
        start = time.perf_counter()
        with pytest.raises(ValueError) as error:
            cls.from_config({**good, argument: value})
        assert time.perf_counter() - start < TIME_LIMIT_S
        message = str(error.value)
        if not (message.startswith(f"{kind}:") and argument in message):
            accepted.append((argument, value, message))
    assert accepted == []


def test_schedule_from_config_refuses_unknown_keys_and_out_of_range_steps(flavour):
    schedule = harness.front_end(flavour).WarmupPolynomialDecay
    good = schedule(0.1, 10).get_config()
    with pytest.raises(ValueError, match="WarmupPolynomialDecay: unknown config key.*'bogus'"):
        schedule.from_config({**good, "bogus": 1})
    with pytest.raises(ValueError, match="WarmupPolynomialDecay: `decay_steps` must be at most"):
        schedule.from_config({**good, "decay_steps": 10**30})
    with pytest.raises(ValueError, match="WarmupPolynomialDecay: `warmup_steps`"):
        schedule.from_config({**good, "warmup_steps": -1})


PATHOLOGICAL_PATTERNS = ["(a+)+$", "(a|aa)+$", "(a*)*b", "(x+x+)+y", "^(a|a?)+$"]


def long_variables(flavour, length: int = 100_000):
    names = {"a" * length + "!": np.zeros(2, np.float32), "x" * length: np.zeros(2, np.float32)}
    if flavour == "keras3":
        return [keras.Variable(value, name=name) for name, value in names.items()]
    return [tf_keras.backend.variable(value, name=name) for name, value in names.items()]


@pytest.mark.parametrize("kind", KINDS)
def test_backtracking_patterns_against_long_names_take_linear_time(flavour, kind):
    variables = long_variables(flavour)
    arguments = dict(exclude_from_weight_decay=PATHOLOGICAL_PATTERNS, include_in_weight_decay=["(a+)+!$"])
    if kind == "LAMB":
        arguments["exclude_from_layer_adaptation"] = PATHOLOGICAL_PATTERNS
    optimizer = optimizer_class(flavour, kind)(learning_rate=0.01, weight_decay_rate=0.1, **arguments)
    start = time.perf_counter()
    with pytest.warns(Warning):  # the patterns that match nothing are reported, as for any config
        optimizer.build(variables)
    assert time.perf_counter() - start < TIME_LIMIT_S
    # re.search semantics kept: "(a+)+!$" is found in the first name, nothing else matches.
    assert [optimizer.uses_weight_decay(v) for v in variables] == [True, True]


@pytest.mark.parametrize(
    "pattern, refused",
    [("(?=x)", "(?="), ("(?!x)", "(?!"), ("(?<=x)y", "(?<"), ("(?<!x)y", "(?<"), ("(a)\\1", "\\1"), ("bias\\Z", "\\Z")],
)
def test_patterns_re2_cannot_run_are_refused_when_the_optimizer_is_made(flavour, pattern, refused):
    with pytest.raises(ValueError) as error:
        optimizer_class(flavour, "LAMB")(exclude_from_weight_decay=["LayerNorm", pattern])
    message = str(error.value)
    assert message.startswith("LAMB: `exclude_from_weight_decay` holds an invalid regular expression")
    assert refused in message and "RE2" in message


# A learning rate that leaves a file behind (at $CANARY_FILE) when it is called.
_smuggled_learning_rate = lambda *_: (open(__import__("os").environ["CANARY_FILE"], "w").close(), 0.1)[1]  # noqa: E731


def test_keras3_load_model_refuses_a_lambda_learning_rate_in_safe_mode(tmp_path, monkeypatch):
    canary = tmp_path / "ran"
    monkeypatch.setenv("CANARY_FILE", str(canary))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizer_class("keras3", "LAMB")(learning_rate=0.01), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    tampered = tmp_path / "tampered.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["compile_config"]["optimizer"]["config"]["learning_rate"] = keras.saving.serialize_keras_object(
                    _smuggled_learning_rate
                )
                data = json.dumps(config)
            target.writestr(item, data)
    with pytest.raises((ValueError, TypeError), match="lambda|could not be deserialized"):
        keras.models.load_model(tampered)
    assert not canary.exists()
    # Trusted (safe_mode=False), the same file loads and the function is the learning rate.
    loaded = keras.models.load_model(tampered, safe_mode=False)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.1) and canary.exists()


@pytest.fixture(scope="module")
def damaged_files(tmp_path_factory):
    """Files that are not (whole) models or checkpoints, by name."""
    folder = tmp_path_factory.mktemp("damaged")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(folder / "whole.keras")
    whole = (folder / "whole.keras").read_bytes()
    legacy = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(2)])
    legacy.save(str(folder / "whole.h5"))
    files = {
        "empty.keras": b"",
        "empty.h5": b"",
        "truncated.keras": whole[: len(whole) // 2],
        "truncated.h5": (folder / "whole.h5").read_bytes()[:3000],
        "random.keras": np.random.default_rng(0).bytes(4096),
        "random.h5": np.random.default_rng(1).bytes(4096),
        "notes.txt": b"not a model\n",
        "ckpt.index": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    with zipfile.ZipFile(folder / "bad_metadata.keras", "w") as archive:
        archive.writestr("metadata.json", "[1, 2")
    with zipfile.ZipFile(folder / "list_metadata.keras", "w") as archive:
        archive.writestr("metadata.json", "[1, 2]")
    with zipfile.ZipFile(folder / "no_metadata.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    (folder / "empty_folder").mkdir()
    return folder


DECAY_REPORT_INPUTS = [
    "empty.keras", "empty.h5", "truncated.keras", "truncated.h5", "random.keras", "random.h5", "notes.txt",
    "bad_metadata.keras", "list_metadata.keras", "no_metadata.keras", "empty_folder", "missing.keras",
]
INSPECT_TF1_INPUTS = [
    "empty.keras", "empty.h5", "truncated.keras", "random.h5", "notes.txt",
    "ckpt", "empty_folder", "missing", "whole.keras",
]


def one_line_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    lines = error_lines(capsys.readouterr().err)
    return exit_info.value.code, lines


@pytest.mark.parametrize("name", DECAY_REPORT_INPUTS)
def test_decay_report_on_a_damaged_or_foreign_file_exits_2_in_one_line(damaged_files, name, capsys):
    code, lines = one_line_usage_error(["decay-report", str(damaged_files / name)], capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("tf-bertopt decay-report: error:"), lines


@pytest.mark.parametrize("name", INSPECT_TF1_INPUTS)
def test_inspect_tf1_on_a_damaged_or_foreign_file_exits_2_in_one_line(damaged_files, name, capsys):
    code, lines = one_line_usage_error(["inspect-tf1", str(damaged_files / name)], capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("tf-bertopt inspect-tf1: error:"), lines


def test_inspect_tf1_on_a_checkpoint_with_truncated_data_exits_2_before_printing(tmp_path, capsys):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.get_variable("bert/kernel", [64, 64])
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(session, str(tmp_path / "model.ckpt"))
    data = tmp_path / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    code, lines = one_line_usage_error(["inspect-tf1", prefix], capsys)
    assert code == 2
    assert len(lines) == 1 and "damaged" in lines[0], lines
    assert capsys.readouterr().out == ""


def test_decay_report_does_not_run_a_lambda_saved_in_a_tf_keras_h5_file(tmp_path, capsys):
    canary = tmp_path / "ran"
    function = eval(f"lambda x: (open({str(canary)!r}, 'w').close(), x)[1]")  # noqa: S307
    model = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Lambda(function), tf_keras.layers.Dense(2)])
    model.save(str(tmp_path / "lambda.h5"))
    canary.unlink()  # saving traced the function
    code, lines = one_line_usage_error(["decay-report", str(tmp_path / "lambda.h5")], capsys)
    assert code == 2 and len(lines) == 1 and "arbitrary code execution" in lines[0], lines
    assert not canary.exists()
