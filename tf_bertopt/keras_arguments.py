"""Checks of the standard Keras keywords before Keras sees them.

Keras accepts some of them unchecked (``use_ema="yes"``,
``ema_momentum=5.0``, a ``gradient_accumulation_steps`` too large for the
int64 step counter) and words its refusal of an unknown keyword without the
class (Keras 3: ``Argument(s) not recognized``; tf-keras: a ``TypeError``). A
config file from elsewhere is checked here instead, with a ``ValueError``
that names the optimizer, the argument, the value and what is allowed.
"""

from __future__ import annotations

from tf_bertopt import validation

# What each flavour's Optimizer takes besides what the front end consumes itself.
KERAS_KEYWORDS = {
    "keras3": frozenset(
        {
            "learning_rate",
            "clipnorm",
            "clipvalue",
            "global_clipnorm",
            "use_ema",
            "ema_momentum",
            "ema_overwrite_frequency",
            "loss_scale_factor",
            "gradient_accumulation_steps",
            "name",
        }
    ),
    "tf_keras": frozenset(
        {
            "weight_decay",
            "clipnorm",
            "clipvalue",
            "global_clipnorm",
            "use_ema",
            "ema_momentum",
            "ema_overwrite_frequency",
            "jit_compile",
            "name",
            "mesh",
            "is_legacy_optimizer",  # written by tf-keras's get_config
        }
    ),
}


def _optional(check):
    return lambda owner, argument, value: None if value is None else check(owner, argument, value)


def _at_least_two(owner: str, argument: str, value) -> int:
    steps = validation.positive_int(owner, argument, value)
    if steps < 2:
        raise ValueError(f"{owner}: `{argument}` must be None or an integer >= 2; received {argument}={value!r}.")
    return steps


def _name(owner: str, argument: str, value) -> str:
    if not isinstance(value, str) or "/" in value:
        raise ValueError(f"{owner}: `{argument}` must be a string without '/'; received {argument}={value!r}.")
    return value


CHECKS = {
    "use_ema": validation.boolean,
    "jit_compile": validation.boolean,
    "ema_momentum": validation.unit_interval,
    "ema_overwrite_frequency": _optional(validation.positive_int),
    "gradient_accumulation_steps": _optional(_at_least_two),
    "loss_scale_factor": _optional(validation.positive),
    "name": _optional(_name),
}


class KerasArgumentChecks:
    """Refuses unknown keywords and checks the known ones; placed just above the Keras optimizer."""

    flavour: str = ""

    def __init__(self, *args, **kwargs):
        owner = type(self).__name__
        unknown = sorted(set(kwargs) - KERAS_KEYWORDS[self.flavour])
        if unknown:
            allowed = sorted(KERAS_KEYWORDS[self.flavour] - {"is_legacy_optimizer", "mesh", "weight_decay"})
            raise ValueError(
                f"{owner}: unknown argument(s) {', '.join(unknown)} "
                f"(received {', '.join(f'{k}={kwargs[k]!r}' for k in unknown)}). "
                f"Besides its own arguments it takes the Keras keywords {', '.join(allowed)}."
            )
        for argument, check in CHECKS.items():
            if argument in kwargs:
                check(owner, argument, kwargs[argument])
        super().__init__(*args, **kwargs)
