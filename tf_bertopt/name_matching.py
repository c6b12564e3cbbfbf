"""Which variables get weight decay and LAMB's layer adaptation, decided by name.

Patterns are regular expressions matched as ``re.search`` does (anywhere in
the name) against a variable's full name: Keras 3 ``variable.path``
(``encoder/layer_0/LayerNorm/gamma``), or for tf-keras and plain
``tf.Variable`` the ``variable.name`` without its ``:0`` suffix. The decision
is made once per variable when the optimizer is built, never inside the
compiled step.

Matching uses RE2 (the ``google-re2`` package), whose time grows linearly
with the name whatever the pattern, so a pattern from a config file cannot
hang the build (Python's ``re`` takes exponential time on ``(a+)+$`` against
a long name). RE2 has Python's syntax but for what needs backtracking:
backreferences (``\1``, ``(?P=name)``) and lookarounds (``(?=...)``,
``(?!...)``, ``(?<=...)``, ``(?<!...)``) are refused with a ``ValueError``
when the optimizer is made, as are ``\Z`` (write ``$``) and patterns that
compile to more than RE2's memory budget. ``\d``, ``\w`` and ``\b`` are
ASCII-only in RE2.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Iterable, Sequence

import re2

_OUTPUT_SUFFIX = re.compile(r":\d+$")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the ValueError says it; RE2 would also print to stderr
_RE2_IGNORING_CASE = re2.Options()
_RE2_IGNORING_CASE.log_errors = False
_RE2_IGNORING_CASE.case_sensitive = False



def variable_name(variable) -> str:
    """The name patterns are matched against (see the module docstring)."""
    path = getattr(variable, "path", None)
    if isinstance(path, str) and path:
        return path
    return _OUTPUT_SUFFIX.sub("", variable.name)


def compile_patterns(owner: str, argument: str, patterns) -> tuple[str, ...]:
    """Validate a pattern list; returns it as a tuple of strings.

    A single string counts as a one-element list (iterating it letter by
    letter would exclude almost every variable).
    """
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        patterns = [patterns]
    try:
        patterns = list(patterns)
    except TypeError:
        raise ValueError(
            f"{owner}: `{argument}` must be a list of regular expressions or None; "
            f"received {argument}={patterns!r}."
        ) from None
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(
                f"{owner}: every entry of `{argument}` must be a string (a regular expression); "
                f"received {pattern!r} in {argument}={patterns!r}."
            )
        try:
            compiled(pattern)
        except re2.error as error:
            reason = error.args[0] if error.args else error
            reason = reason.decode(errors="replace") if isinstance(reason, bytes) else reason
            raise ValueError(
                f"{owner}: `{argument}` holds an invalid regular expression {pattern!r}: {reason}. "
                "Patterns are matched with RE2 (linear time): backreferences, lookarounds and \\Z are not supported."
            ) from None
    return tuple(patterns)


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str, ignore_case: bool = False):
    """``pattern`` compiled by RE2 (raises ``re2.error`` if RE2 refuses it)."""
    return re2.compile(pattern, _RE2_IGNORING_CASE if ignore_case else _RE2_OPTIONS)


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """Whether any of ``patterns`` matches somewhere in ``name`` (as ``re.search``)."""
    return any(compiled(pattern).search(name) is not None for pattern in patterns)


@dataclasses.dataclass(frozen=True)
class NameRules:
    """The three pattern lists of SPEC §2 and the decisions they give."""

    exclude_from_weight_decay: tuple[str, ...] = ()
    include_in_weight_decay: tuple[str, ...] = ()
    exclude_from_layer_adaptation: tuple[str, ...] = ()

    def uses_weight_decay(self, name: str) -> bool:
        """``include_in_weight_decay`` wins over ``exclude_from_weight_decay``."""
        if matches_any(name, self.include_in_weight_decay):
            return True
        return not matches_any(name, self.exclude_from_weight_decay)

    def uses_layer_adaptation(self, name: str) -> bool:
        return not matches_any(name, self.exclude_from_layer_adaptation)

    def unmatched(self, names: Sequence[str]) -> dict[str, list[str]]:
        """For each list, the patterns that match none of ``names``."""
        return {
            field.name: [p for p in getattr(self, field.name) if not any(matches_any(n, [p]) for n in names)]
            for field in dataclasses.fields(self)
        }
