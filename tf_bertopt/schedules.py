"""BERT's warmup + polynomial-decay learning rate, independent of the Keras flavour.

BERT (the default)::

    decay(t) = (init - end) * (1 - min(t, T)/T)^power + end
    lr(t)    = init * t/W  if t < W  else  decay(t)

With ``cycle=True``, ``T`` is replaced by ``T * ceil(t/T)`` (``T`` itself at
``t = 0``). The variants other libraries use are options:

* ``decay_start="warmup_end"`` (Hugging Face ``create_optimizer``): the decay
  begins at the end of warmup and runs over ``T - W`` steps, so
  ``lr(W) = init`` and ``lr(T) = end``.
* ``warmup_power=p``: warmup follows ``init * (t/W)^p``.
* ``warmup_initial_learning_rate=s``: warmup ramps from ``s`` instead of 0:
  ``s + (init - s) * (t/W)^p``.

These warmups ramp to ``init``. TF Model Garden's warmups ramp to the
decayed rate at the end of warmup, ``d = decay(W)`` (``init * (1 - W/T)`` with
BERT's linear decay), and are options of their own, ``warmup_style``:

* ``"model_garden_linear"`` (``LinearWarmup``): ``s + (t/W) * (d - s)``.
* ``"model_garden_polynomial"`` (``PolynomialWarmUp``):
  ``d * (max(t, 1)/W)^p``, so not 0 at step 0.

Model Garden computes ``d`` once, eagerly, by Keras's ``PolynomialDecay``
(``W/T`` divided, not folded), and the rest inside the training step's graph,
folded as below; so do we.

The arithmetic is that of TF1's ``polynomial_decay`` and BERT's warmup, in
float32, *as TF1 actually ran it*: Grappler's constant folding rewrites
``x / T`` into ``x * (1/T)``, ``init * (t/W)`` into ``(init * (1/W)) * t`` and
``pow(x, 0.5)`` into ``sqrt(x)``, which changes the last bit of some values. We compute that folded form explicitly,
so eager execution, ``tf.function`` and XLA all give the TF1 graph's numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from tf_bertopt import validation

DECAY_STARTS = ("step_0", "warmup_end")
WARMUP_STYLES = ("bert", "model_garden_linear", "model_garden_polynomial")


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
    warmup_style: str = "bert"

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
        validation.one_of(owner, "warmup_style", self.warmup_style, WARMUP_STYLES)
        if self.warmup_style == "model_garden_linear" and self.warmup_power != 1.0:
            raise ValueError(
                f"{owner}: warmup_style='model_garden_linear' (Model Garden's LinearWarmup) is linear, so "
                f"`warmup_power` must be 1.0; received warmup_power={self.warmup_power!r}. Use "
                "warmup_style='model_garden_polynomial' for a power."
            )
        if self.warmup_style == "model_garden_polynomial" and self.warmup_initial_learning_rate:
            raise ValueError(
                f"{owner}: warmup_style='model_garden_polynomial' (Model Garden's PolynomialWarmUp) starts "
                "from 0, so `warmup_initial_learning_rate` must be 0.0; received "
                f"warmup_initial_learning_rate={self.warmup_initial_learning_rate!r}. Use "
                "warmup_style='model_garden_linear' for a start rate."
            )
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
            if self.warmup_style == "bert":
                warmup = self._warmup(initial, step)
            else:
                warmup = self._model_garden_warmup(step)
            return tf.where(tf.cast(step, tf.int64) < self.warmup_steps, warmup, decayed)

    def _decay(self, initial, step):
        # TF1's polynomial_decay, operation by operation.
        decay_steps = self.decay_steps
        if self.decay_start == "warmup_end":
            step = tf.maximum(tf.cast(step, tf.int64) - self.warmup_steps, 0)
            decay_steps -= self.warmup_steps
        end = tf.cast(self.end_learning_rate, tf.float32)
        t = tf.cast(step, tf.float32)
        horizon = tf.cast(decay_steps, tf.float32)
        if self.cycle:
            multiplier = tf.where(tf.equal(t, 0), 1.0, tf.math.ceil(t * _reciprocal(decay_steps)))
            p = t / (horizon * multiplier)
        else:
            p = tf.minimum(t, horizon) * _reciprocal(decay_steps)
        # XLA may fuse 1 - t*(1/T) into one FMA, which is slightly negative at
        # t >= T (NaN under a fractional power); the clamp never binds otherwise.
        remaining = tf.maximum(1 - p, 0.0)
        return (initial - end) * _folded_pow(remaining, self.power) + end

    def _warmup(self, initial, step):
        # BERT's warmup init * (t/W), folded by Grappler into (init * (1/W)) * t.
        t = tf.cast(tf.cast(step, tf.int32), tf.float32)
        start = self.warmup_initial_learning_rate
        if self.warmup_power == 1.0 and not start:
            return t * (initial * _reciprocal(self.warmup_steps))
        done = _folded_pow(t * _reciprocal(self.warmup_steps), self.warmup_power)
        return start + (self.initial_learning_rate - start) * done


    def _model_garden_warmup(self, step):
        # Model Garden's t / W, folded by Grappler into t * (1/W), as for BERT's warmup.
        t = tf.cast(step, tf.float32)
        target = self._decayed_at_warmup_end()
        if self.warmup_style == "model_garden_linear":
            start = tf.constant(self.warmup_initial_learning_rate, tf.float32)
            return start + (t * _reciprocal(self.warmup_steps)) * (target - start)
        done = tf.maximum(t, 1.0) * _reciprocal(self.warmup_steps)
        return target * _folded_pow(done, self.warmup_power)

    def _decayed_at_warmup_end(self) -> tf.Tensor:
        """``decay(W)`` as Keras's ``PolynomialDecay`` computes it eagerly:
        Model Garden evaluates it once, when the warmup schedule is made."""
        with tf.init_scope():
            t, horizon = float(self.warmup_steps), float(self.decay_steps)
            if self.decay_start == "warmup_end":
                t, horizon = 0.0, float(self.decay_steps - self.warmup_steps)
            initial = tf.constant(self.initial_learning_rate, tf.float32)
            end = tf.constant(self.end_learning_rate, tf.float32)
            t, horizon = tf.constant(t, tf.float32), tf.constant(horizon, tf.float32)
            if self.cycle:
                horizon = horizon * tf.where(tf.equal(t, 0.0), 1.0, tf.math.ceil(t / horizon))
            else:
                t = tf.minimum(t, horizon)
            return (initial - end) * tf.pow(1 - t / horizon, tf.constant(self.power, tf.float32)) + end



class ScheduleOfSpec:
    """A schedule front end whose arguments, config and values are its ``spec``'s.

    ``spec`` is a frozen dataclass with ``to_config()`` and ``__call__(step)``
    (``WarmupPolynomialDecaySpec``, ``ElectraScheduleSpec``); its fields read
    through as the schedule's attributes (``schedule.decay_steps``).
    """

    spec: Any

    def get_config(self):
        return self.spec.to_config()

    def __call__(self, step):
        return self.spec(step)

    def __getattr__(self, attribute):
        spec = self.__dict__.get("spec")
        if spec is not None and attribute in spec.__dataclass_fields__:
            return getattr(spec, attribute)
        raise AttributeError(attribute)

def _reciprocal(count: int) -> tf.Tensor:
    """``1/count`` rounded to float32, as Grappler folds a division by a constant."""
    return tf.constant(1.0, tf.float32) / tf.cast(count, tf.float32)


def _folded_pow(x: tf.Tensor, power: float) -> tf.Tensor:
    """``x ** power`` with the exact operations Grappler substitutes for constant powers."""
    if power == 1.0:
        return x
    if power == 2.0:
        return tf.square(x)
    if power == 3.0:
        return x * tf.square(x)
    if power == 0.5:
        return tf.sqrt(x)
    return tf.pow(x, tf.constant(power, tf.float32))
