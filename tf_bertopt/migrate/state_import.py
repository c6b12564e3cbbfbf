"""Import the optimizer state of a TF1 BERT / ALBERT checkpoint into a tf_bertopt optimizer.

TF1 BERT-family training saves, next to each variable, its two moment slots
(``<var>/adam_m``, ``<var>/adam_v`` or ``<var>/lamb_m``, ``<var>/lamb_v``) and
the step count ``global_step``. Weight converters drop them, so resumed
training restarts the moments from zero and the learning-rate schedule from
step 0. ``load_tf1_optimizer_state`` puts them into an ``AdamWeightDecay`` or
``LAMB`` (Keras 3 or tf-keras): continuing from it gives the numbers TF1 would
have given.

Example, a Keras model whose variable paths lack BERT's ``bert/`` prefix and
``attention/self`` scope::

    optimizer = tf_bertopt.create_optimizer(1e-4, num_train_steps, num_warmup_steps)
    to_tf1 = rename_rules([
        (r"^encoder/", "bert/encoder/"),                # encoder/layer_0/... -> bert/encoder/layer_0/...
        (r"/attention/(query|key|value)/", r"/attention/self/\\1/"),
    ])
    report = load_tf1_optimizer_state(
        optimizer, "gs://bucket/bert/model.ckpt-20000", model.trainable_variables, name_map=to_tf1
    )
    print(report)
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np

from tf_bertopt import name_matching
from tf_bertopt.migrate.tf1_checkpoint import BERT_SLOT_FAMILIES, EMA_SUFFIX, GLOBAL_STEP, OTHER_SLOTS, TF1Checkpoint

NameMap = Union[Mapping[str, "str | None"], Callable[[str], "str | None"], None]

_OWNER = "load_tf1_optimizer_state"
_COUNTER = "the optimizer's iteration count"


class RenameRules:
    """A ``name_map`` built from ``(regex, replacement)`` rules; see ``rename_rules``."""

    def __init__(self, rules: Sequence[tuple[str, str]]):
        if isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
            raise ValueError(f"rename_rules: `rules` must be a list of (regex, replacement) pairs; received {rules!r}.")
        compiled = []
        for rule in rules:
            if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and all(isinstance(p, str) for p in rule)):
                raise ValueError(
                    f"rename_rules: every rule must be a (regex, replacement) pair of strings; received {rule!r}."
                )
            try:
                compiled.append((re.compile(rule[0]), rule[1]))
            except re.error as error:
                raise ValueError(f"rename_rules: invalid regular expression {rule[0]!r}: {error}.") from None
        self.rules = tuple(compiled)

    def __call__(self, name: str) -> str:
        for pattern, replacement in self.rules:
            try:
                name = pattern.sub(replacement, name)
            except re.error as error:
                raise ValueError(
                    f"rename_rules: replacement {replacement!r} of {pattern.pattern!r} is invalid: {error}."
                ) from None
        return name

    def __repr__(self) -> str:
        return f"rename_rules({[(p.pattern, r) for p, r in self.rules]!r})"


def rename_rules(rules: Sequence[tuple[str, str]]) -> RenameRules:
    """A ``name_map`` that rewrites Keras variable names into TF1 names with regular expressions.

    Each rule is applied in order with ``re.sub(regex, replacement, name)`` to
    the result of the previous one; a rule that does not match leaves the name
    as it is. Example, Keras paths ``encoder/layer_0/attention/query/kernel``
    to TF1 BERT's ``bert/encoder/layer_0/attention/self/query/kernel``::

        to_tf1 = rename_rules([
            (r"^", "bert/"),
            (r"/attention/(query|key|value)/", r"/attention/self/\\1/"),
        ])
        to_tf1("encoder/layer_0/attention/query/kernel")
        # 'bert/encoder/layer_0/attention/self/query/kernel'

    Args:
        rules: ``(regex, replacement)`` pairs; ``replacement`` may use
            ``\\1``-style group references.

    Raises:
        ValueError: a rule is not a pair of strings or its regex is invalid.
    """
    return RenameRules(rules)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A variable whose state could not be imported, and why."""

    variable: str
    entry: str
    reason: str
    kind: str = "missing"  # or "mismatch"

    def __str__(self) -> str:
        return f"{self.variable}: `{self.entry}` {self.reason}"


@dataclasses.dataclass
class ImportReport:
    """What ``load_tf1_optimizer_state`` found and loaded.

    Attributes:
        checkpoint: the checkpoint prefix read.
        slot_names: the checkpoint's ``(first, second)`` moment suffixes used.
        written_by: which TF1 optimizer writes those slots.
        matched: ``(keras name, tf1 name)`` of each variable whose state was
            found (and, unless ``loaded`` is False, assigned).
        missing: variables lacking a checkpoint entry (a slot or, with
            ``load_variables``, the value), and a missing ``global_step``.
        mismatched: entries whose shape or dtype differs from the slot's.
        skipped: Keras names the ``name_map`` mapped to None.
        unused: checkpoint entries that no variable asked for (other
            variables and their slots, other optimizers' state).
        reshaped: ``(keras name, tf1 name)`` pairs loaded with ``reshape=True``
            from a tensor of another shape.
        global_step: the checkpoint's step count (None if not found or not read).
        iterations: the value given to the optimizer's iteration counter
            (``global_step * gradient_accumulation_steps``), None if untouched.
        ema: how Keras's ``use_ema`` averages were set: ``"checkpoint"``,
            ``"variables"`` or None (no EMA).
        loaded: whether anything was assigned (False when the import failed).
    """

    checkpoint: str
    slot_names: tuple[str, str]
    written_by: str
    matched: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    missing: list[Problem] = dataclasses.field(default_factory=list)
    mismatched: list[Problem] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    reshaped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    global_step: int | None = None
    iterations: int | None = None
    ema: str | None = None
    loaded: bool = False

    @property
    def complete(self) -> bool:
        """True when every variable's state and the global step were found and fit."""
        return not self.missing and not self.mismatched

    def __str__(self) -> str:
        total = len(self.matched) + len({p.variable for p in self.missing + self.mismatched if p.variable != _COUNTER})
        lines = [
            f"TF1 optimizer state from {self.checkpoint}",
            f"  slots {'/'.join(self.slot_names)}: {self.written_by}",
            f"  {'loaded' if self.loaded else 'matched (nothing assigned)'}: "
            f"{len(self.matched)} of {total} variables"
            + (f", {len(self.skipped)} skipped by name_map" if self.skipped else ""),
        ]
        if self.global_step is not None:
            counter = f" -> optimizer iterations {self.iterations}" if self.iterations is not None else ""
            lines.append(f"  global_step {self.global_step}{counter}")
        if self.ema:
            lines.append(f"  EMA averages set from the {self.ema}")
        lines += _section("reshaped", [f"{k} <- {t}" for k, t in self.reshaped])
        lines += _section("missing", [str(p) for p in self.missing])
        lines += _section("shape/dtype mismatches", [str(p) for p in self.mismatched])
        lines += _section("unused checkpoint entries", _with_slots_folded(self.unused))
        return "\n".join(lines)


def _with_slots_folded(entries: list[str]) -> list[str]:
    """``a/kernel``, ``a/kernel/adam_m`` -> ``a/kernel (+ adam_m)``."""
    present = set(entries)
    children: dict[str, list[str]] = {}
    for entry in entries:
        parent, _, suffix = entry.rpartition("/")
        if parent in present:
            children.setdefault(parent, []).append(suffix)
    return [
        entry + (f" (+ {', '.join(children[entry])})" if entry in children else "")
        for entry in entries
        if entry.rpartition("/")[0] not in present
    ]


def _section(title: str, items: list[str], limit: int = 10) -> list[str]:
    if not items:
        return []
    shown = [f"    {item}" for item in items[:limit]]
    if len(items) > limit:
        shown.append(f"    ... and {len(items) - limit} more")
    return [f"  {title} ({len(items)}):"] + shown


def load_tf1_optimizer_state(
    optimizer,
    checkpoint_path,
    variables,
    name_map: NameMap = None,
    *,
    allow_partial: bool = False,
    slot_names: tuple[str, str] | None = None,
    load_variables: bool = False,
    reshape: bool = False,
    global_step_name: str | None = GLOBAL_STEP,
) -> ImportReport:
    """Loads a TF1 checkpoint's moment slots and ``global_step`` into ``optimizer``.

    For each variable ``w`` of ``variables`` with TF1 name ``n``, the
    checkpoint's ``n/<m suffix>`` and ``n/<v suffix>`` go into the optimizer's
    slots (``optimizer.get_slots(w)``), and ``global_step`` into its iteration
    counter, so the learning-rate schedule continues where TF1 stopped. With
    Keras's ``gradient_accumulation_steps=N`` the counter counts micro-batches
    and is set to ``global_step * N``. With Keras's ``use_ema``, the averages
    start from the checkpoint's ``n/ExponentialMovingAverage`` entries if
    present, else from the variables' current values: load the weights first.

    The optimizer is built on ``variables`` if it is not built yet. Nothing is
    assigned unless every check passes (or ``allow_partial`` is set, in which
    case each variable is loaded whole or not at all).

    Args:
        optimizer: a tf_bertopt ``AdamWeightDecay`` or ``LAMB`` of either Keras
            flavour (or a ``LossScaleOptimizer`` wrapping one).
        checkpoint_path: a TF1 checkpoint prefix (``.../model.ckpt-20000``) or
            a directory with a ``checkpoint`` file.
        variables: the model variables whose state to load, usually
            ``model.trainable_variables``.
        name_map: how a variable's name (Keras 3 ``variable.path``, tf-keras
            ``variable.name`` without ``:0``) becomes its TF1 name: a dict
            (names it lacks map to themselves), a callable such as
            ``rename_rules(...)``, or None for the name itself. Mapping to None
            skips the variable.
        allow_partial: load what matches and report the rest instead of
            raising. Defaults to False.
        slot_names: the checkpoint's ``(m, v)`` slot suffixes. None (default)
            detects ``adam_m``/``adam_v`` or ``lamb_m``/``lamb_v``. Pass e.g.
            ``("Adam", "Adam_1")`` to take the moments of ``tf.train.AdamOptimizer``,
            which are the same averages (that optimizer also bias-corrected
            them, which these do not).
        load_variables: also assign each variable its own value from the
            checkpoint. Defaults to False (the weights are loaded by your converter).
        reshape: accept a checkpoint tensor of another shape with the same
            number of elements, reshaped in C order (as converting TF1 BERT's
            ``[hidden, hidden]`` attention kernels to Keras's ``MultiHeadAttention``
            ``[hidden, heads, head_size]`` does). Defaults to False.
        global_step_name: the step counter's entry; None leaves the
            optimizer's iteration count alone.

    Returns:
        An ``ImportReport``; ``print(report)`` summarises it.

    Raises:
        ValueError: the path holds no readable TF1 checkpoint; it has no
            BERT-family optimizer slots (the message says what it has); or,
            unless ``allow_partial``, a slot or ``global_step`` is missing or a
            shape or dtype does not fit.
        TypeError: ``optimizer`` has no ``get_slots`` (not a tf_bertopt optimizer).
    """
    inner = _innermost(optimizer)
    variables = list(variables)
    if not variables:
        raise ValueError(f"{_OWNER}: `variables` is empty; pass the model variables to load state for.")
    checkpoint = TF1Checkpoint(checkpoint_path, owner=_OWNER)
    suffixes = _chosen_slot_names(checkpoint, slot_names)
    written_by = BERT_SLOT_FAMILIES.get(suffixes) or OTHER_SLOTS.get(suffixes[0], "slot names given by slot_names")
    names = [name_matching.variable_name(v) for v in variables]
    tf1_names = _mapped(name_map, names)
    if not _is_built(optimizer):
        with _strategy_scope(inner):
            optimizer.build(variables)

    report = ImportReport(checkpoint.path, suffixes, written_by)
    use_ema = bool(getattr(inner, "use_ema", False))
    assignments = []  # (target variable, checkpoint entry) for every variable that passed
    ema_entries = []  # (variable, average, entry or None)
    asked_for = set()
    for variable, name, tf1_name in zip(variables, names, tf1_names):
        if tf1_name is None:
            report.skipped.append(name)
            continue
        slots = _slots_of(inner, variable, name)
        targets = [(slots[0], f"{tf1_name}/{suffixes[0]}"), (slots[1], f"{tf1_name}/{suffixes[1]}")]
        if load_variables:
            targets.insert(0, (variable, tf1_name))
        asked_for.update(entry for _, entry in targets)
        asked_for.update((tf1_name, f"{tf1_name}/{EMA_SUFFIX}"))
        checks = [_checked(checkpoint, target, entry, name, reshape) for target, entry in targets]
        problems = [c for c in checks if isinstance(c, Problem)]
        if problems:
            _file_problems(report, checkpoint, problems, name, tf1_name, len(targets))
            continue
        report.matched.append((name, tf1_name))
        if "reshaped" in checks:
            report.reshaped.append((name, tf1_name))
        assignments += targets
        if use_ema:
            average, ema_entry = _ema_average(inner, variable), f"{tf1_name}/{EMA_SUFFIX}"
            usable = not isinstance(_checked(checkpoint, average, ema_entry, name, reshape), Problem)
            ema_entries.append((variable, average, ema_entry if usable else None))

    if global_step_name is not None:
        asked_for.add(global_step_name)
        report.global_step = checkpoint.global_step(global_step_name)
        if report.global_step is None:
            report.missing.append(Problem(_COUNTER, global_step_name, "is not in the checkpoint"))
    report.unused = [e for e in checkpoint.entries if e not in asked_for]

    if not report.complete and not allow_partial:
        raise ValueError(
            f"{_OWNER}: the checkpoint does not fit the variables (pass allow_partial=True to load what "
            f"matches):\n{report}"
        )
    with _strategy_scope(inner):
        for target, entry in assignments:
            target.assign(np.reshape(checkpoint.tensor(entry), tuple(target.shape)))
        for variable, average, entry in ema_entries:
            value = checkpoint.tensor(entry) if entry else np.asarray(variable.numpy())
            average.assign(np.reshape(value, tuple(average.shape)))
        if report.global_step is not None:
            steps = int(getattr(inner, "gradient_accumulation_steps", None) or 1)
            report.iterations = report.global_step * steps
            _iteration_counter(inner).assign(report.iterations)
    if ema_entries:
        report.ema = "checkpoint" if all(entry for *_, entry in ema_entries) else "variables"
    report.loaded = True
    return report


def _file_problems(report, checkpoint, problems, name, tf1_name, needed) -> None:
    missing = [p for p in problems if p.kind == "missing"]
    if len(missing) == needed and tf1_name not in checkpoint.entries:
        missing = [Problem(name, tf1_name, _absent_hint(checkpoint, tf1_name))]  # likely a name_map mistake
    report.missing += missing
    report.mismatched += [p for p in problems if p.kind == "mismatch"]


def _innermost(optimizer):
    inner = optimizer
    while not hasattr(inner, "get_slots") and hasattr(inner, "inner_optimizer"):
        inner = inner.inner_optimizer  # LossScaleOptimizer
    if not hasattr(inner, "get_slots"):
        raise TypeError(
            f"{_OWNER}: `optimizer` must be a tf_bertopt AdamWeightDecay or LAMB (either Keras flavour, "
            "optionally inside a LossScaleOptimizer); received "
            f"{type(optimizer).__module__}.{type(optimizer).__name__}."
        )
    return inner


def _strategy_scope(optimizer):
    """The scope of the tf.distribute strategy the optimizer was made under, if not entered already."""
    import tensorflow as tf

    strategy = getattr(optimizer, "_distribution_strategy", None)
    if strategy is None or tf.distribute.has_strategy():
        return contextlib.nullcontext()
    return strategy.scope()


def _is_built(optimizer) -> bool:
    # Keras 3 sets `built`; tf-keras sets `_built`.
    return bool(getattr(optimizer, "built", False) or getattr(optimizer, "_built", False))


def _iteration_counter(optimizer):
    # Keras 3's `iterations` is a read-only property (divided by the
    # accumulation steps); both flavours keep the variable in `_iterations`.
    counter = getattr(optimizer, "_iterations", None)
    return counter if counter is not None else optimizer.iterations


def _variable_index(optimizer, variable) -> int:
    if hasattr(optimizer, "_get_variable_index"):  # Keras 3
        return optimizer._get_variable_index(variable)
    return optimizer._index_dict[optimizer._var_key(variable)]  # tf-keras


def _slots_of(optimizer, variable, name):
    try:
        return optimizer.get_slots(variable)
    except (KeyError, IndexError, ValueError):
        raise ValueError(
            f"{_OWNER}: variable {name!r} is not one the optimizer was built for; pass the variables the "
            "optimizer trains (or an optimizer that is not built yet)."
        ) from None


def _ema_average(optimizer, variable):
    return optimizer._model_variables_moving_average[_variable_index(optimizer, variable)]


def _chosen_slot_names(checkpoint: TF1Checkpoint, slot_names) -> tuple[str, str]:
    if slot_names is not None:
        is_pair = isinstance(slot_names, (tuple, list)) and len(slot_names) == 2
        if not (is_pair and all(isinstance(s, str) for s in slot_names)):
            raise ValueError(
                f"{_OWNER}: `slot_names` must be None or a (first moment, second moment) pair of slot "
                f"suffixes such as ('adam_m', 'adam_v'); received slot_names={slot_names!r}."
            )
        counts = checkpoint.slot_counts()
        absent = [s for s in slot_names if not counts[s]]
        if absent:
            raise ValueError(
                f"{_OWNER}: checkpoint_path={checkpoint.requested_path!r} has no {', '.join(absent)} slots "
                f"(slot_names={tuple(slot_names)!r}); it has {checkpoint.describe_slots()}."
            )
        return tuple(slot_names)
    families = checkpoint.bert_families()
    if len(families) == 1:
        return families[0]
    if len(families) > 1:
        raise ValueError(
            f"{_OWNER}: checkpoint_path={checkpoint.requested_path!r} holds both "
            f"{' and '.join('/'.join(f) for f in families)} slots; pass slot_names=(m, v) to choose."
        )
    found = checkpoint.describe_slots()
    hint = ""
    if checkpoint.slot_counts()["Adam"] and checkpoint.slot_counts()["Adam_1"]:
        hint = (
            " tf.train.AdamOptimizer's Adam/Adam_1 slots are the same moment averages: pass "
            "slot_names=('Adam', 'Adam_1') to import them anyway (TF1 Adam bias-corrected them; "
            "AdamWeightDecay does not)."
        )
    raise ValueError(
        f"{_OWNER}: checkpoint_path={checkpoint.requested_path!r} holds no BERT-family optimizer slots "
        f"(adam_m/adam_v or lamb_m/lamb_v); it has {found}.{hint}"
    )


def _mapped(name_map: NameMap, names: list[str]) -> list[str | None]:
    if name_map is None:
        return list(names)
    if isinstance(name_map, Mapping):
        unknown = sorted(set(name_map) - set(names))
        if unknown:
            raise ValueError(
                f"{_OWNER}: `name_map` has keys that name none of the variables: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''}; keys are variable names such as {names[0]!r}."
            )
        return [name_map.get(n, n) for n in names]
    if callable(name_map):
        mapped = [name_map(n) for n in names]
        for name, tf1_name in zip(names, mapped):
            if tf1_name is not None and not isinstance(tf1_name, str):
                raise ValueError(
                    f"{_OWNER}: `name_map` must return a TF1 name (str) or None; it returned {tf1_name!r} for {name!r}."
                )
        return mapped
    raise ValueError(
        f"{_OWNER}: `name_map` must be None, a dict or a callable from variable name to TF1 name; "
        f"received name_map={name_map!r}."
    )


def _checked(checkpoint: TF1Checkpoint, target, entry: str, name: str, reshape: bool):
    """None if ``entry`` fits ``target``, "reshaped" if it fits after a reshape, else a Problem."""
    found = checkpoint.entries.get(entry)
    if found is None:
        return Problem(name, entry, "is not in the checkpoint")
    shape = tuple(int(d) for d in target.shape)
    dtype = _dtype_name(target.dtype)
    if found.dtype != dtype:
        return Problem(name, entry, f"has dtype {found.dtype}; the variable's is {dtype}", "mismatch")
    if found.shape != shape:
        if reshape and int(np.prod(found.shape)) == int(np.prod(shape)):
            return "reshaped"
        return Problem(name, entry, f"has shape {found.shape}; the variable's is {shape}", "mismatch")
    return None


def _dtype_name(dtype) -> str:
    import tensorflow as tf

    return tf.as_dtype(dtype).name


def _absent_hint(checkpoint: TF1Checkpoint, tf1_name: str) -> str:
    close = difflib.get_close_matches(tf1_name, checkpoint.variables, n=1, cutoff=0.6)
    hint = f"; closest checkpoint variable: `{close[0]}`" if close else ""
    return f"is not in the checkpoint, nor its slots (check name_map){hint}"
