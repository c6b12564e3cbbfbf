"""Layer-wise learning-rate decay: a learning rate per variable, by its depth in the network.

ELECTRA's fine-tuning recipe (and many BERT, RoBERTa and DeBERTa recipes
since) trains the layers near the input more slowly than those near the
output. Each variable gets a depth -- embeddings 0, encoder layer ``i`` depth
``i + 1``, the task head ``L + 2`` for ``L`` encoder layers -- and its
learning rate is multiplied by::

    multiplier = decay ** (max_depth - depth)

The multiplier is computed in double precision and rounded to float32 once,
and the optimizer multiplies the scheduled learning rate by it
(``lr_t * multiplier``) before anything else, as ELECTRA's TF1 code does
(``learning_rate * (layer_decay ** (n_layers + 2 - depth))``, a tensor times a
Python float).

Depths come from ``LayerDepths``: an ordered list of ``(pattern, depth)``
rules, regular expressions matched with ``re.search`` against the variable's
full name (see ``tf_bertopt.name_matching``); the first rule that matches
decides. A variable that no rule places takes ``default_depth`` or, without
one, is a ``ValueError`` when the optimizer is built. Ready rule sets:
``tf1_bert_layer_depths``, ``electra_layer_depths`` and
``keras_hub_bert_layer_depths``.

``LayerwiseDecayMixin`` gives the optimizers the option
(``layerwise_lr_decay=``, ``layer_depths=``): depths and multipliers are
decided once per variable when the optimizer is built, like the weight-decay
exclusions, and the update -- op by op or fused -- sees each variable's own
learning rate.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping, Sequence

from tf_bertopt import name_matching, validation

_OWNER = "LayerDepths"


# The layer-wise arguments, as both optimizers' docstrings give them (continuing their ``Args:``).
ARGUMENT_DOC = """    layerwise_lr_decay: float > 0 or None (default). With ``layer_depths``,
            multiplies each variable's learning rate by
            ``layerwise_lr_decay ** (max_depth - depth)`` (ELECTRA's layer-wise
            decay, e.g. 0.8); see ``tf_bertopt.layerwise``.
        layer_depths: which depth each variable has: a
            ``tf_bertopt.layerwise.LayerDepths`` (ready ones:
            ``tf1_bert_layer_depths``, ``electra_layer_depths``,
            ``keras_hub_bert_layer_depths``) or a list of ``(pattern, depth)``
            rules, the first matching one deciding. A variable no rule places
            is a ``ValueError`` when the optimizer is built, unless the
            ``LayerDepths`` has a ``default_depth``.
    """

@dataclasses.dataclass(frozen=True)
class LayerDepths:
    """Ordered depth rules: which depth each variable of a model has.

    Args:
        rules: ``(pattern, depth)`` pairs (or a dict, in its order): a
            regular expression matched with ``re.search`` against the full
            variable name, and an integer depth >= 0. The first rule that
            matches decides.
        default_depth: depth of a variable no rule matches; None (default)
            makes such a variable an error when the optimizer is built.
        max_depth: the depth whose multiplier is 1. Defaults to the largest
            depth among ``rules`` and ``default_depth``.
    """

    rules: tuple[tuple[str, int], ...]
    default_depth: int | None = None
    max_depth: int | None = None

    def __post_init__(self) -> None:
        rules = self.rules.items() if isinstance(self.rules, Mapping) else self.rules
        checked = []
        for rule in rules:
            if isinstance(rule, str) or len(tuple(rule)) != 2:
                raise ValueError(
                    f"{_OWNER}: every rule must be a (pattern, depth) pair; received {rule!r} in rules={self.rules!r}."
                )
            pattern, depth = rule
            name_matching.compile_patterns(_OWNER, "rules", [pattern])
            checked.append((pattern, validation.non_negative_int(_OWNER, f"depth of {pattern!r}", depth)))
        if not checked:
            raise ValueError(
                f"{_OWNER}: `rules` must hold at least one (pattern, depth) pair; received {self.rules!r}."
            )
        object.__setattr__(self, "rules", tuple(checked))
        if self.default_depth is not None:
            default_depth = validation.non_negative_int(_OWNER, "default_depth", self.default_depth)
            object.__setattr__(self, "default_depth", default_depth)
        deepest = max([d for _, d in checked] + ([self.default_depth] if self.default_depth is not None else []))
        if self.max_depth is None:
            object.__setattr__(self, "max_depth", deepest)
        else:
            object.__setattr__(self, "max_depth", validation.non_negative_int(_OWNER, "max_depth", self.max_depth))
            if self.max_depth < deepest:
                raise ValueError(
                    f"{_OWNER}: `max_depth` must be at least the deepest rule or default depth ({deepest}), "
                    f"or the multiplier of the deepest variables would exceed 1; received max_depth={self.max_depth}."
                )

    def matching_rule(self, name: str) -> tuple[str, int] | None:
        """The first rule whose pattern is found in ``name``, or None."""
        return next(((p, d) for p, d in self.rules if re.search(p, name) is not None), None)

    def depth_of(self, name: str) -> int | None:
        """The depth of the variable named ``name``; None if no rule places it and there is no default."""
        rule = self.matching_rule(name)
        return self.default_depth if rule is None else rule[1]

    def depths(self, owner: str, names: Sequence[str]) -> list[int]:
        """The depth of each of ``names``; a ``ValueError`` names those no rule places."""
        depths = [self.depth_of(name) for name in names]
        unplaced = [name for name, depth in zip(names, depths) if depth is None]
        if unplaced:
            shown = ", ".join(repr(n) for n in unplaced[:5])
            if len(unplaced) > 5:
                shown += f" and {len(unplaced) - 5} more"
            raise ValueError(
                f"{owner}: no `layer_depths` rule gives a depth to the variable(s) {shown}. Add a "
                "(pattern, depth) rule that matches them, or give LayerDepths a `default_depth`. "
                f"The rules are {[p for p, _ in self.rules]}."
            )
        return depths

    def multiplier(self, decay: float, depth: int) -> float:
        """``decay ** (max_depth - depth)``, in double precision (the optimizer rounds it to float32)."""
        return decay ** (self.max_depth - depth)

    def to_config(self) -> dict[str, Any]:
        rules = [list(rule) for rule in self.rules]
        return {"rules": rules, "default_depth": self.default_depth, "max_depth": self.max_depth}


def layer_depths_argument(owner: str, layer_depths) -> LayerDepths | None:
    """``layer_depths`` as given to an optimizer: None, a ``LayerDepths``, its config dict, or rules."""
    if layer_depths is None or isinstance(layer_depths, LayerDepths):
        return layer_depths
    if isinstance(layer_depths, Mapping) and "rules" in layer_depths:
        return LayerDepths(**layer_depths)
    if isinstance(layer_depths, (Mapping, Iterable)) and not isinstance(layer_depths, str):
        return LayerDepths(layer_depths)
    raise TypeError(
        f"{owner}: `layer_depths` must be a tf_bertopt.layerwise.LayerDepths, a list of (pattern, depth) "
        f"pairs or None; received {type(layer_depths).__name__} {layer_depths!r}."
    )


def _layer_rules(prefix: str, num_layers: int, first_depth: int = 1) -> list[tuple[str, int]]:
    return [(f"{prefix}{i}/", i + first_depth) for i in range(num_layers)]


def tf1_bert_layer_depths(num_layers: int, default_depth: int | None = None) -> LayerDepths:
    """Depths for TF1 BERT and ELECTRA names (``bert/embeddings/...``, ``bert/encoder/layer_3/...``).

    Embeddings (``embeddings/``, and ELECTRA's ``embeddings_project/``) at 0,
    ``encoder/layer_<i>/`` at ``i + 1``, and the head at ``num_layers + 2``:
    the pooler (``pooler/``), ``cls/`` (pre-training heads, SQuAD),
    ``output_weights`` / ``output_bias`` (``run_classifier``) and
    ``task_specific/`` (ELECTRA).

    Args:
        num_layers: number of encoder layers ``L`` (> 0).
        default_depth: depth of any other variable (None: an error at build time).
    """
    num_layers = validation.positive_int("tf1_bert_layer_depths", "num_layers", num_layers)
    return LayerDepths(
        [(r"(^|/)embeddings(_project)?/", 0)]
        + _layer_rules(r"(^|/)encoder/layer_", num_layers)
        + [(r"(^|/)(pooler|cls|task_specific)/|(^|/)output_(weights|bias)$", num_layers + 2)],
        default_depth,
    )


def electra_layer_depths(num_layers: int) -> LayerDepths:
    """ELECTRA's own keys (``model/optimization.py``, ``_get_layer_lrs``), in its order.

    ``/embeddings/`` and ``/embeddings_project/`` at depth 0, ``task_specific/``
    at ``num_layers + 2``, ``encoder/layer_<i>/`` at ``i + 1``, matched as
    substrings of the variable name. ELECTRA raises for a variable no key
    matches; so does the optimizer at build time (there is no default depth).
    A variable that two keys match takes the first key's depth, and is
    updated once (see the layer-wise decay documentation).

    Args:
        num_layers: ELECTRA's ``n_transformer_layers`` (> 0).
    """
    num_layers = validation.positive_int("electra_layer_depths", "num_layers", num_layers)
    keys = [("/embeddings/", 0), ("/embeddings_project/", 0), ("task_specific/", num_layers + 2)]
    keys += [(f"encoder/layer_{i}/", i + 1) for i in range(num_layers)]
    return LayerDepths([(re.escape(key), depth) for key, depth in keys], max_depth=num_layers + 2)


def keras_hub_bert_layer_depths(num_layers: int, default_depth: int | None = None) -> LayerDepths:
    """Depths for keras-hub's ``BertBackbone`` and its task models (Keras 3 ``variable.path``).

    ``token_embedding/``, ``position_embedding/``, ``segment_embedding/`` and
    ``embeddings_layer_norm/`` at 0; ``transformer_layer_<i>/`` at ``i + 1``;
    the pooler ``pooled_dense/``, ``BertTextClassifier``'s ``logits/`` and
    ``BertMaskedLM``'s ``mlm_head/`` at ``num_layers + 2``.

    Args:
        num_layers: the backbone's ``num_layers`` (> 0).
        default_depth: depth of any other variable (None: an error at build time).
    """
    num_layers = validation.positive_int("keras_hub_bert_layer_depths", "num_layers", num_layers)
    return LayerDepths(
        [(r"(^|/)((token|position|segment)_embedding|embeddings_layer_norm)/", 0)]
        + _layer_rules(r"(^|/)transformer_layer_", num_layers)
        + [(r"(^|/)(pooled_dense|logits|mlm_head)/", num_layers + 2)],
        default_depth,
    )
