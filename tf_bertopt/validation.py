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


# Hyperparameters become float32 tensors and step counts int64 ones: a value
# past these bounds would silently turn into inf or 0, or fail mid-training.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.401298464324817e-45  # the smallest positive float32 (subnormal)
INT64_MAX = 2**63 - 1


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_float32_range(owner: str, argument: str, value: float) -> None:
    if abs(value) > FLOAT32_MAX or 0 < abs(value) < FLOAT32_TINY:
        allowed = f"representable in float32 (0 or between {FLOAT32_TINY:.3g} and {FLOAT32_MAX:.4g})"
        _fail(owner, argument, value, allowed)


def non_negative(owner: str, argument: str, value: Any) -> float:
    """A finite real number >= 0 (learning rates, decay rates), within float32's range."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        _fail(owner, argument, value, "a finite number >= 0")
    _check_float32_range(owner, argument, value)
    return float(value)


def positive(owner: str, argument: str, value: Any) -> float:
    """A finite real number > 0 (epsilon, powers, clip norms), within float32's range."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        _fail(owner, argument, value, "a finite number > 0")
    _check_float32_range(owner, argument, value)
    return float(value)


def unit_interval(owner: str, argument: str, value: Any) -> float:
    """A number in [0, 1] (moving-average momenta)."""
    if not _is_real(value) or not 0.0 <= value <= 1.0:
        _fail(owner, argument, value, "a number in [0, 1]")
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
    return _within_int64(owner, argument, value)


def non_negative_int(owner: str, argument: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not _integral_float(value) or value < 0:
        _fail(owner, argument, value, "an integer >= 0")
    return _within_int64(owner, argument, value)


def _within_int64(owner: str, argument: str, value: Any) -> int:
    if value > INT64_MAX:
        _fail(owner, argument, value, f"at most {INT64_MAX} (2**63 - 1, steps are counted in int64)")
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
        if side is not None and (not _is_real(side) or not math.isfinite(side) or side < 0 or side > FLOAT32_MAX):
            _fail(owner, argument, value, allowed)
    if lower is not None and upper is not None and lower > upper:
        _fail(owner, argument, value, allowed)
    return (None if lower is None else float(lower), None if upper is None else float(upper))


def _integral_float(value: Any) -> bool:
    return _is_real(value) and math.isfinite(value) and float(value).is_integer()
