"""BERT's warmup + polynomial-decay learning rate, independent of the Keras flavour.

BERT (the default)::

    decay(t) = (init - end) * (1 - min(t, T)/T)^power + end
    lr(t)    = init * t/W  if t < W  else  decay(t)

With ``cycle=True``, ``T`` is replaced by ``T * ceil(t/T)`` (``T`` itself at
``t = 0``). The variants other libraries use are options:

* ``decay_start="warmup_end"`` (Hugging Face ``create_optimizer``): the decay
  begins at the end of warmup and runs over ``T - W`` steps, so
  ``lr(W) = init`` and ``lr(T) = end``.
* ``warmup_power=p`` (TF Model Garden ``WarmUp``): ``init * (t/W)^p``.
* ``warmup_initial_learning_rate=s`` (Model Garden ``LinearWarmup``): warmup
  ramps from ``s`` instead of 0: ``s + (init - s) * (t/W)^p``.

The arithmetic is that of TF1's ``polynomial_decay`` and BERT's warmup, in
float32, so the values are bit-identical to the TF1 graph.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from tf_bertopt import validation

DECAY_STARTS = ("step_0", "warmup_end")


@dataclasses.dataclass(frozen=True)
class WarmupPolynomialDecaySpec:
    """The validated arguments of ``WarmupPolynomialDecay``; see the module docstring."""

    initial_learning_rate: float
    decay_steps: int
    warmup_steps: int = 0
    end_learning_rate: float = 0.0
    power: float = 1.0
    cycle: bool = False
    decay_start: str = "step_0"
    warmup_power: float = 1.0
    warmup_initial_learning_rate: float = 0.0
    name: str | None = None

    def __post_init__(self) -> None:
        owner = "WarmupPolynomialDecay"
        set_ = lambda field, value: object.__setattr__(self, field, value)  # noqa: E731
        set_("initial_learning_rate", validation.non_negative(owner, "initial_learning_rate", self.initial_learning_rate))
        set_("decay_steps", validation.positive_int(owner, "decay_steps", self.decay_steps))
        set_("warmup_steps", validation.non_negative_int(owner, "warmup_steps", self.warmup_steps))
        set_("end_learning_rate", validation.non_negative(owner, "end_learning_rate", self.end_learning_rate))
        set_("power", validation.positive(owner, "power", self.power))
        set_("warmup_power", validation.positive(owner, "warmup_power", self.warmup_power))
        set_(
            "warmup_initial_learning_rate",
            validation.non_negative(owner, "warmup_initial_learning_rate", self.warmup_initial_learning_rate),
        )
        validation.one_of(owner, "decay_start", self.decay_start, DECAY_STARTS)
        if not isinstance(self.cycle, bool):
            raise ValueError(f"{owner}: `cycle` must be True or False; received cycle={self.cycle!r}.")
        if self.decay_start == "warmup_end" and self.decay_steps <= self.warmup_steps:
            raise ValueError(
                f"{owner}: with decay_start='warmup_end' the decay runs from warmup_steps to "
                f"decay_steps, so `decay_steps` must be > warmup_steps; received "
                f"decay_steps={self.decay_steps}, warmup_steps={self.warmup_steps}."
            )

    def to_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __call__(self, step) -> tf.Tensor:
        """The float32 learning rate at optimizer step ``step`` (counted from 0)."""
        with tf.name_scope(self.name or "WarmupPolynomialDecay"):
            step = tf.convert_to_tensor(step)
            initial = tf.constant(self.initial_learning_rate, tf.float32)
            decayed = self._decay(initial, step)
            if not self.warmup_steps:
                return decayed
            return tf.where(tf.cast(step, tf.int64) < self.warmup_steps, self._warmup(step), decayed)

    def _decay(self, initial, step):
        # TF1's polynomial_decay, operation by operation.
        decay_steps = self.decay_steps
        if self.decay_start == "warmup_end":
            step = tf.maximum(tf.cast(step, tf.int64) - self.warmup_steps, 0)
            decay_steps -= self.warmup_steps
        end = tf.cast(self.end_learning_rate, tf.float32)
        power = tf.cast(self.power, tf.float32)
        t = tf.cast(step, tf.float32)
        horizon = tf.cast(decay_steps, tf.float32)
        if self.cycle:
            multiplier = tf.where(tf.equal(t, 0), 1.0, tf.math.ceil(t / decay_steps))
            horizon = horizon * multiplier
        else:
            t = tf.minimum(t, horizon)
        p = t / horizon
        return (initial - end) * tf.pow(1 - p, power) + end

    def _warmup(self, step):
        # BERT's warmup: init * (float(int32(t)) / float(W)).
        done = tf.cast(tf.cast(step, tf.int32), tf.float32) / tf.cast(self.warmup_steps, tf.float32)
        if self.warmup_power != 1.0:
            done = tf.pow(done, tf.cast(self.warmup_power, tf.float32))
        start = self.warmup_initial_learning_rate
        if not start:
            return self.initial_learning_rate * done
        return start + (self.initial_learning_rate - start) * done
