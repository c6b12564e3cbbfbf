"""BERT's warmup + polynomial-decay schedule as a Keras ``LearningRateSchedule`` mixin, flavour-neutral."""

from __future__ import annotations

from tf_bertopt.schedules import ScheduleOfSpec, WarmupPolynomialDecaySpec


class WarmupPolynomialDecayMixin(ScheduleOfSpec):
    """BERT's learning rate: linear warmup, then polynomial decay counted from step 0.

    ::

        decay(t) = (init - end) * (1 - min(t, T)/T)^power + end
        lr(t)    = init * t/W  if t < W  else  decay(t)

    ``t`` is the number of optimizer updates done so far. Float32 values are
    bit-identical to TF1's ``polynomial_decay`` plus BERT's warmup.

    Args:
        initial_learning_rate: peak rate ``init`` >= 0.
        decay_steps: ``T`` > 0, the step at which the rate reaches
            ``end_learning_rate`` (BERT's ``num_train_steps``).
        warmup_steps: ``W`` >= 0; 0 disables warmup.
        end_learning_rate: ``end`` >= 0. Defaults to 0.0.
        power: > 0, the polynomial's power. Defaults to 1.0 (linear).
        cycle: restart the decay every ``T`` steps (``T`` becomes
            ``T*ceil(t/T)``). Defaults to False.
        decay_start: ``"step_0"`` (BERT) or ``"warmup_end"`` (Hugging Face:
            decay from ``W`` to ``T`` over ``T - W`` steps).
        warmup_power: warmup follows ``init * (t/W)^warmup_power``.
            Defaults to 1.0.
        warmup_initial_learning_rate: ``s``, where warmup starts instead of
            0: ``s + (init - s) * (t/W)^warmup_power``. Defaults to 0.0.
        name: optional name scope.
        warmup_style: ``"bert"`` (warmup ramps to ``init``, as above), or TF
            Model Garden's warmups, which ramp to the decayed rate at the
            end of warmup, ``d = decay(W)``: ``"model_garden_linear"``
            (``LinearWarmup``: ``s + (t/W) * (d - s)``, with ``s`` the
            ``warmup_initial_learning_rate``) or ``"model_garden_polynomial"``
            (``PolynomialWarmUp``: ``d * (max(t, 1)/W)^warmup_power``).
            Their float32 values equal Model Garden's in a ``tf.function``
            (how a training step runs it). Defaults to ``"bert"``.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        warmup_steps: int = 0,
        end_learning_rate: float = 0.0,
        power: float = 1.0,
        cycle: bool = False,
        decay_start: str = "step_0",
        warmup_power: float = 1.0,
        warmup_initial_learning_rate: float = 0.0,
        name: str | None = None,
        warmup_style: str = "bert",
    ):
        super().__init__()
        self.spec = WarmupPolynomialDecaySpec(
            initial_learning_rate,
            decay_steps,
            warmup_steps,
            end_learning_rate,
            power,
            cycle,
            decay_start,
            warmup_power,
            warmup_initial_learning_rate,
            name,
            warmup_style,
        )

    @classmethod
    def from_config(cls, config):
        """The schedule of ``get_config``'s dict; unknown keys are refused, not ignored."""
        if not isinstance(config, dict):
            raise ValueError(f"{cls.__name__}: a config must be a dict; received {config!r}.")
        unknown = sorted(set(config) - set(WarmupPolynomialDecaySpec.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown config key(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(WarmupPolynomialDecaySpec.__dataclass_fields__)}."
            )
        return cls(**config)
