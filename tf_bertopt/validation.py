"""Argument checks shared by every front end.

Each failure is a ``ValueError`` that names the owner, the argument, the value
received and what is allowed, so a typo in a config file is found at once.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any


def _fail(owner: str, argument: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{owner}: `{argument}` must be {allowed}; received {argument}={value!r}.")


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def non_negative(owner: str, argument: str, value: Any) -> float:
    """A finite real number >= 0 (learning rates, decay rates)."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        _fail(owner, argument, value, "a finite number >= 0")
    return float(value)


def positive(owner: str, argument: str, value: Any) -> float:
    """A finite real number > 0 (epsilon, powers, clip norms)."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        _fail(owner, argument, value, "a finite number > 0")
    return float(value)


def beta(owner: str, argument: str, value: Any) -> float:
    """An exponential-average decay in [0, 1)."""
    if not _is_real(value) or not 0.0 <= value < 1.0:
        _fail(owner, argument, value, "a number in [0, 1)")
    return float(value)


def boolean(owner: str, argument: str, value: Any) -> bool:
    """``True`` or ``False`` (numpy booleans too), nothing merely truthy."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        _fail(owner, argument, value, "True or False")
    return bool(value)


def positive_int(owner: str, argument: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not _integral_float(value) or value <= 0:
        _fail(owner, argument, value, "an integer > 0")
    return int(value)


def non_negative_int(owner: str, argument: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not _integral_float(value) or value < 0:
        _fail(owner, argument, value, "an integer >= 0")
    return int(value)


def one_of(owner: str, argument: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        _fail(owner, argument, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def bounds(owner: str, argument: str, value: Any) -> tuple[float | None, float | None] | None:
    """``None`` or a ``(lower, upper)`` pair of non-negative numbers or ``None``s, lower <= upper."""
    if value is None:
        return None
    allowed = "None or a (lower, upper) pair of numbers >= 0 (either may be None) with lower <= upper"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        _fail(owner, argument, value, allowed)
    lower, upper = value
    for side in (lower, upper):
        if side is not None and (not _is_real(side) or not math.isfinite(side) or side < 0):
            _fail(owner, argument, value, allowed)
    if lower is not None and upper is not None and lower > upper:
        _fail(owner, argument, value, allowed)
    return (None if lower is None else float(lower), None if upper is None else float(upper))


def _integral_float(value: Any) -> bool:
    return _is_real(value) and math.isfinite(value) and float(value).is_integer()
