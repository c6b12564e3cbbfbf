"""Which variables get weight decay and layer adaptation, and patterns that match nothing.

A pattern that matches no variable fails silently: the variables it was
meant to exclude are decayed. This happens when names change between TF1
(``bert/encoder/layer_0/attention/output/LayerNorm/gamma``), tf-keras
(``layer_normalization/gamma:0``) and Keras 3 (``encoder/layer_norm/gamma``).
Three tools show it:

* ``decay_report(optimizer, variables)`` (``tf_bertopt.decay_report``): every
  variable with its decisions and the patterns that decided them; ``str()``
  is a readable table.
* The optimizers warn when they are built: ``warn_unmatched_patterns`` emits
  an ``UnmatchedPatternWarning`` (a ``UserWarning``, through Python's
  ``warnings``, so it is shown once per pattern and can be silenced or made
  an error with a warnings filter) for each pattern that matches none of the
  variables. ``"LayerNorm"`` and ``"layer_norm"`` are one rule spelled two
  ways (TF1 and Keras): when either matches, the other is not reported, so
  BERT's default list stays quiet on models of any flavour.
* ``tf-bertopt decay-report MODEL`` (``tf_bertopt.cli.decay_report``) prints
  the report for a saved model.

This module imports neither Keras nor TensorFlow: both front ends use it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from typing import Any, Iterable, Sequence

from tf_bertopt import name_matching
from tf_bertopt.name_matching import NameRules
from tf_bertopt.recipe import BERT_EXCLUSIONS

# Spellings of one rule across libraries; a list holding several is
# satisfied when any of them matches.
ALTERNATIVE_SPELLINGS: tuple[frozenset[str], ...] = (frozenset({"LayerNorm", "layer_norm"}),)

_LIST_NAMES = tuple(field.name for field in dataclasses.fields(NameRules))


class UnmatchedPatternWarning(UserWarning):
    """A weight-decay or layer-adaptation pattern matches none of the variables."""


def unmatched_patterns(rules: NameRules, names: Sequence[str]) -> dict[str, list[str]]:
    """For each pattern list of ``rules``, the patterns that match none of ``names``.

    A pattern whose alternative spelling (``ALTERNATIVE_SPELLINGS``) in the
    same list does match is left out.
    """
    unmatched = rules.unmatched(list(names))
    for argument, missing in unmatched.items():
        present = set(getattr(rules, argument))
        for spellings in ALTERNATIVE_SPELLINGS:
            if (spellings & present) - set(missing):
                missing[:] = [pattern for pattern in missing if pattern not in spellings]
    return unmatched


def unmatched_message(argument: str, pattern: str, names: Sequence[str]) -> str:
    """``"<argument> pattern <pattern> matches none of the N variables"``, with a hint.

    The hint names a match ignoring case, else a match of the pattern spelled
    in the other naming convention (``other_spellings``), else an example name.
    """
    message = f"{argument} pattern {pattern!r} matches none of the {len(names)} variables"
    ignoring_case = [n for n in names if name_matching.compiled(pattern, ignore_case=True).search(n)]
    if ignoring_case:
        return message + (
            f"; ignoring case it would match {len(ignoring_case)}, e.g. {ignoring_case[0]!r} "
            "(matching is case-sensitive)"
        )
    for spelling in other_spellings(pattern):
        matching = [n for n in names if re.search(spelling, n)]
        if matching:
            return message + (
                f"; spelled {spelling!r} it would match {len(matching)}, e.g. {matching[0]!r} "
                "(TF1 names are CamelCase, Keras's snake_case)"
            )
    return message + (f" (names look like {names[0]!r})" if names else "")


def other_spellings(pattern: str) -> list[str]:
    """The pattern in the other naming convention: ``LayerNorm`` <-> ``layer_norm``.

    Spellings listed in ``ALTERNATIVE_SPELLINGS`` first, then the plain
    conversion for a pattern that is a CamelCase or snake_case word.
    """
    spellings = [s for group in ALTERNATIVE_SPELLINGS if pattern in group for s in sorted(group) if s != pattern]
    if re.fullmatch(r"(?:[A-Z][a-z0-9]*){2,}", pattern):
        spellings.append(re.sub(r"(?<!^)(?=[A-Z])", "_", pattern).lower())
    elif re.fullmatch(r"[a-z0-9]+(?:_[a-z0-9]+)+", pattern):
        spellings.append("".join(part.capitalize() for part in pattern.split("_")))
    return list(dict.fromkeys(spellings))


def warn_unmatched_patterns(owner: str, rules: NameRules, names: Sequence[str]) -> list[str]:
    """Warns (``UnmatchedPatternWarning``) once for each pattern matching none of ``names``.

    Called by the optimizers' ``build`` with the full names of the variables
    they were built with. Returns the messages. Nothing is reported for an
    empty ``names``.
    """
    if not names:
        return []
    messages = [
        f"{owner}: {unmatched_message(argument, pattern, names)}. "
        "See tf_bertopt.decay_report(optimizer, variables) for what each variable gets."
        for argument, patterns in unmatched_patterns(rules, names).items()
        for pattern in patterns
    ]
    for message in messages:
        warnings.warn(message, UnmatchedPatternWarning, stacklevel=3)
    return messages


@dataclasses.dataclass(frozen=True)
class VariableDecision:
    """What one variable gets, and which patterns matched its name.

    ``layer_adaptation`` is None when the optimizer has no layer adaptation
    (AdamWeightDecay). ``layer_depth`` and ``learning_rate_multiplier`` are
    None when the optimizer has no ``layer_depths`` (or none places it).
    """

    name: str
    shape: tuple[int | None, ...] | None
    weight_decay: bool
    layer_adaptation: bool | None
    matched: dict[str, tuple[str, ...]]
    layer_depth: int | None = None
    learning_rate_multiplier: float | None = None

    @property
    def size(self) -> int | None:
        if self.shape is None or any(d is None for d in self.shape):
            return None
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class DecayReport:
    """The decisions of one optimizer (or one set of patterns) for a list of variables.

    Attributes:
        owner: the optimizer's class name, or ``"patterns"``.
        rules: the three pattern lists.
        weight_decay_rate: the optimizer's rate, None when only patterns were given.
        variables: one ``VariableDecision`` per variable, in the order given.
        unmatched: per pattern list, the patterns matching no variable
            (alternative spellings whose partner matched left out).
        selected_by_patterns: how many variables the patterns alone select
            for decay (differs from ``len(decayed)`` when the rate is 0).
        layer_depths: the optimizer's ``tf_bertopt.layerwise.LayerDepths``, or None.
        layerwise_lr_decay: the optimizer's layer-wise decay factor, or None.
    """

    owner: str
    rules: NameRules
    weight_decay_rate: float | None
    variables: tuple[VariableDecision, ...]
    unmatched: dict[str, list[str]]
    selected_by_patterns: int
    layer_depths: Any = None
    layerwise_lr_decay: float | None = None

    @property
    def decayed(self) -> list[str]:
        """Names of the variables that are decayed."""
        return [v.name for v in self.variables if v.weight_decay]

    @property
    def not_decayed(self) -> list[str]:
        return [v.name for v in self.variables if not v.weight_decay]

    @property
    def adapted(self) -> list[str]:
        return [v.name for v in self.variables if v.layer_adaptation]

    @property
    def not_adapted(self) -> list[str]:
        return [v.name for v in self.variables if v.layer_adaptation is False]

    @property
    def has_layer_adaptation(self) -> bool:
        return any(v.layer_adaptation is not None for v in self.variables)

    @property
    def has_layer_depths(self) -> bool:
        return self.layer_depths is not None

    @property
    def warnings(self) -> list[str]:
        """One line per problem: unmatched patterns, a zero rate, no variables."""
        lines = []
        if not self.variables:
            lines.append("no variables: build the model (call it once) before asking for a report")
        names = [v.name for v in self.variables]
        for argument, patterns in self.unmatched.items():
            lines.extend(unmatched_message(argument, pattern, names) for pattern in patterns)
        if self.weight_decay_rate == 0.0 and self.selected_by_patterns:
            lines.append(
                f"weight_decay_rate is 0.0, so nothing is decayed, although the patterns select "
                f"{self.selected_by_patterns} variables (AdamWeightDecay's default rate is 0.0; "
                "create_optimizer's is 0.01)"
            )
        if self.has_layer_depths:
            unplaced = [v.name for v in self.variables if v.layer_depth is None]
            if unplaced:
                lines.append(
                    f"no layer_depths rule places {len(unplaced)} variable(s), e.g. {unplaced[0]!r}: "
                    "building the optimizer will fail (add a rule or a default_depth)"
                )
        return lines

    def summary(self) -> str:
        """One line: how many variables and parameters are decayed (and adapted)."""
        sizes = [v.size for v in self.variables]
        text = f"weight decay on {len(self.decayed)} of {len(self.variables)} variables"
        if None not in sizes:
            decayed = sum(v.size for v in self.variables if v.weight_decay)
            text += f" ({decayed:,} of {sum(sizes):,} parameters)"
        if self.has_layer_adaptation:
            text += f"; layer adaptation on {len(self.adapted)} of {len(self.variables)}"
        if self.has_layer_depths:
            depths = sorted({v.layer_depth for v in self.variables if v.layer_depth is not None})
            if depths:
                text += f"; layer depths {depths[0]} to {depths[-1]}"
        return text

    def __str__(self) -> str:
        rate = "" if self.weight_decay_rate is None else f" (weight_decay_rate={self.weight_decay_rate:g})"
        lines = [f"{self.owner}{rate}: {len(self.variables)} variables"]
        for argument in _LIST_NAMES:
            if argument == "exclude_from_layer_adaptation" and not self.has_layer_adaptation:
                continue
            lines.append(f"  {argument + ':':31} {list(getattr(self.rules, argument))}")
        name_width = max([len(v.name) for v in self.variables] + [8])
        header = f"  {'decay':5}  {'adapt':5}  " if self.has_layer_adaptation else f"  {'decay':5}  "
        if self.has_layer_depths:
            decay = "" if self.layerwise_lr_decay is None else f", layerwise_lr_decay={self.layerwise_lr_decay:g}"
            lines.append(f"  {'layer depths:':31} max_depth={self.layer_depths.max_depth}{decay}")
            header += f"{'depth':5}  {'lr x':8}  "
        lines.append("")
        lines.append(f"{header}{'variable':{name_width}}  {'shape':14}  matched by")
        for v in self.variables:
            cells = f"  {_yes_no(v.weight_decay):5}  "
            if self.has_layer_adaptation:
                cells += f"{_yes_no(v.layer_adaptation):5}  "
            if self.has_layer_depths:
                depth = "?" if v.layer_depth is None else str(v.layer_depth)
                multiplier = "?" if v.learning_rate_multiplier is None else f"{v.learning_rate_multiplier:.6g}"
                cells += f"{depth:5}  {multiplier:8}  "
            matched = "; ".join(f"{_SHORT[a]} {', '.join(map(repr, p))}" for a, p in v.matched.items() if p)
            shape = "?" if v.shape is None else str(tuple(v.shape))
            lines.append(f"{cells}{v.name:{name_width}}  {shape:14}  {matched}".rstrip())
        lines.append("")
        lines.append(self.summary() + ".")
        lines.extend(f"WARNING: {line}." for line in self.warnings)
        return "\n".join(lines)


_SHORT = {
    "exclude_from_weight_decay": "decay-excluded by",
    "include_in_weight_decay": "decay-included by",
    "exclude_from_layer_adaptation": "adapt-excluded by",
}


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def decay_report(
    optimizer: Any,
    variables: Any,
    *,
    layer_adaptation: bool | None = None,
    layer_depths: Any = None,
    layerwise_lr_decay: float | None = None,
) -> DecayReport:
    """Which of ``variables`` get weight decay and layer adaptation from ``optimizer``.

    Args:
        optimizer: a tf_bertopt optimizer (AdamWeightDecay or LAMB, either
            Keras flavour, built or not, or wrapped in a ``LossScaleOptimizer``)
            or a ``name_matching.NameRules``.
        variables: a Keras model or layer (its trainable variables are
            used), or an iterable of variables or of full variable names
            (e.g. the names in a TF1 checkpoint).
        layer_adaptation: whether to report layer adaptation. Defaults to
            True for LAMB, False for AdamWeightDecay, and for a ``NameRules``
            to whether it excludes anything from adaptation.
        layer_depths: a ``tf_bertopt.layerwise.LayerDepths`` to report each
            variable's depth by; defaults to the optimizer's own.
        layerwise_lr_decay: the decay factor for the learning-rate
            multipliers ``decay ** (max_depth - depth)``; defaults to the
            optimizer's own (multipliers are 1 without one).

    Returns:
        A ``DecayReport``; ``print()`` it for a table (with each variable's
        depth and learning-rate multiplier when there are layer depths).

    Raises:
        TypeError: ``optimizer`` has no patterns, or ``variables`` is not one of the above.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # unwrap a LossScaleOptimizer
    if isinstance(optimizer, NameRules):
        rules, owner, rate = optimizer, "patterns", None
        adapts = bool(rules.exclude_from_layer_adaptation) if layer_adaptation is None else layer_adaptation
    elif isinstance(getattr(optimizer, "name_rules", None), NameRules):
        rules, owner = optimizer.name_rules, type(optimizer).__name__
        rate = getattr(optimizer, "weight_decay_rate", None)
        adapts = _has_layer_adaptation(optimizer) if layer_adaptation is None else layer_adaptation
    else:
        raise TypeError(
            "decay_report: `optimizer` must be a tf_bertopt optimizer (AdamWeightDecay, LAMB) or a "
            f"tf_bertopt.name_matching.NameRules; received {type(optimizer).__name__} {optimizer!r}."
        )
    depths = getattr(optimizer, "layer_depths", None) if layer_depths is None else layer_depths
    layerwise_decay = getattr(optimizer, "layerwise_lr_decay", None) if layerwise_lr_decay is None else layerwise_lr_decay
    entries = _named_variables(variables)
    names = [name for name, _ in entries]
    decisions, selected = [], 0
    for name, variable in entries:
        selected += rules.uses_weight_decay(name)
        built = _built_decisions(optimizer, variable)
        decay = built[0] if built else rules.uses_weight_decay(name) and rate != 0.0
        adapt = (built[1] if built else rules.uses_layer_adaptation(name)) if adapts else None
        matched = {
            argument: tuple(p for p in getattr(rules, argument) if name_matching.matches_any(name, [p]))
            for argument in _LIST_NAMES
            if adapts or argument != "exclude_from_layer_adaptation"
        }
        depth, multiplier = _layer_rate(depths, layerwise_decay, name)
        decisions.append(VariableDecision(name, _shape(variable), decay, adapt, matched, depth, multiplier))
    unmatched = unmatched_patterns(rules, names)
    if not adapts:
        unmatched.pop("exclude_from_layer_adaptation", None)
    return DecayReport(owner, rules, rate, tuple(decisions), unmatched, selected, depths, layerwise_decay)


def _layer_rate(depths, layerwise_decay, name) -> tuple[int | None, float | None]:
    """A variable's depth and learning-rate multiplier under the optimizer's ``layer_depths``."""
    if depths is None:
        return None, None
    depth = depths.depth_of(name)
    if depth is None:
        return None, None
    return depth, 1.0 if layerwise_decay is None else depths.multiplier(layerwise_decay, depth)


def _has_layer_adaptation(optimizer) -> bool:
    # LAMB serializes its adaptation exclusions; AdamWeightDecay has none.
    return "exclude_from_layer_adaptation" in optimizer.get_config()


def _named_variables(variables) -> list[tuple[str, Any]]:
    if hasattr(variables, "trainable_variables") and not isinstance(variables, (str, bytes)):
        variables = variables.trainable_variables
    if isinstance(variables, (str, bytes)) or not isinstance(variables, Iterable):
        raise TypeError(
            "decay_report: `variables` must be a Keras model or layer, or an iterable of variables or "
            f"of variable names; received {type(variables).__name__} {variables!r}."
        )
    entries = []
    for variable in variables:
        if isinstance(variable, str):
            entries.append((variable, None))
        elif hasattr(variable, "name"):
            entries.append((name_matching.variable_name(variable), variable))
        else:
            raise TypeError(
                "decay_report: every entry of `variables` must be a variable or a name (str); "
                f"received {type(variable).__name__} {variable!r}."
            )
    return entries


def _shape(variable) -> tuple[int | None, ...] | None:
    shape = getattr(variable, "shape", None)
    if shape is None:
        return None
    return tuple(None if d is None else int(d) for d in shape)


def _built_decisions(optimizer, variable) -> tuple[bool, bool] | None:
    """The built optimizer's own answer, which also counts ``exclude_from_weight_decay(var_list=...)``."""
    if variable is None or not getattr(optimizer, "built", False):
        return None
    try:
        return bool(optimizer.uses_weight_decay(variable)), bool(optimizer.uses_layer_adaptation(variable))
    except (KeyError, ValueError):  # a variable this optimizer does not train
        return None
