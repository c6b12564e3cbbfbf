"""Which variables get weight decay and LAMB's layer adaptation, decided by name.

Patterns are regular expressions matched with ``re.search`` against a
variable's full name: Keras 3 ``variable.path``
(``encoder/layer_0/LayerNorm/gamma``), or for tf-keras and plain
``tf.Variable`` the ``variable.name`` without its ``:0`` suffix. The decision
is made once per variable when the optimizer is built, never inside the
compiled step.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

_OUTPUT_SUFFIX = re.compile(r":\d+$")



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
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"{owner}: `{argument}` holds an invalid regular expression {pattern!r}: {error}."
            ) from None
    return tuple(patterns)


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(re.search(pattern, name) is not None for pattern in patterns)


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
            field.name: [p for p in getattr(self, field.name) if not any(re.search(p, n) for n in names)]
            for field in dataclasses.fields(self)
        }
