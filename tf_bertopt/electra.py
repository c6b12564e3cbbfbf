"""ELECTRA's recipe: its schedule and ``create_optimizer``, for either Keras flavour.

ELECTRA (``google-research/electra``, ``model/optimization.py``) changed
BERT's recipe in three ways:

* the warmup *multiplies* the decayed rate instead of replacing it::

      lr(t) = polynomial_decay(init, t, T, end=0, power) * min(1, t/W)
      W     = max(num_train_steps * warmup_proportion, warmup_steps)

* ``lr_decay_power`` is the polynomial's power;
* with ``layerwise_lr_decay_power`` > 0, each variable's rate is multiplied
  by ``decay ** (L + 2 - depth)`` (``tf_bertopt.layerwise``, with
  ``electra_layer_depths(L)`` for ``n_transformer_layers = L``).

The rest is BERT's: AdamWeightDecay with betas 0.9/0.999, epsilon 1e-6, no
decay for ``["LayerNorm", "layer_norm", "bias"]``, gradients clipped to
global norm 1.0. The float32 arithmetic is that of the TF1 graph as it ran:
Grappler folds ``t / W`` into ``t * (1/W)``, which this schedule computes
explicitly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import tensorflow as tf

from tf_bertopt import layerwise, validation
from tf_bertopt.recipe import BERT_EXCLUSIONS, OPTIMIZER_TYPES
from tf_bertopt.schedules import ScheduleOfSpec, WarmupPolynomialDecaySpec

_OWNER = "ElectraSchedule"


@dataclasses.dataclass(frozen=True)
class ElectraScheduleSpec:
    """The validated arguments of ``ElectraSchedule``; see the module docstring."""

    initial_learning_rate: float
    decay_steps: int
    warmup_steps: float = 0.0
    power: float = 1.0
    name: str | None = None

    def __post_init__(self) -> None:
        set_ = lambda field, value: object.__setattr__(self, field, value)  # noqa: E731
        initial = validation.non_negative(_OWNER, "initial_learning_rate", self.initial_learning_rate)
        set_("initial_learning_rate", initial)
        set_("decay_steps", validation.positive_int(_OWNER, "decay_steps", self.decay_steps))
        set_("warmup_steps", validation.non_negative(_OWNER, "warmup_steps", self.warmup_steps))
        set_("power", validation.positive(_OWNER, "power", self.power))

    def to_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __call__(self, step) -> tf.Tensor:
        """The float32 learning rate at optimizer step ``step`` (counted from 0)."""
        with tf.name_scope(self.name or _OWNER):
            step = tf.convert_to_tensor(step)
            decayed = WarmupPolynomialDecaySpec(self.initial_learning_rate, self.decay_steps, power=self.power)(step)
            if not self.warmup_steps:
                # TF1 ELECTRA computes 0/0 here (NaN at step 0); no warmup is what W = 0 means.
                return decayed
            reciprocal = tf.constant(1.0, tf.float32) / tf.constant(self.warmup_steps, tf.float32)
            return decayed * tf.minimum(1.0, tf.cast(step, tf.float32) * reciprocal)


class ElectraScheduleMixin(ScheduleOfSpec):
    """ELECTRA's learning rate: polynomial decay from step 0, times a linear warmup factor.

    ::

        lr(t) = ((init - 0) * (1 - min(t, T)/T)^power + 0) * min(1, t/W)

    ``t`` is the number of optimizer updates done so far. Float32 values are
    bit-identical to ELECTRA's TF1 ``create_optimizer`` schedule. Unlike BERT's
    warmup, the factor multiplies the decayed rate, so the peak is below
    ``init`` (``init * (1 - W/T)`` at ``t = W``).

    Args:
        initial_learning_rate: ``init`` >= 0 (ELECTRA's ``learning_rate``).
        decay_steps: ``T`` > 0 (ELECTRA's ``num_train_steps``).
        warmup_steps: ``W`` >= 0, may be fractional: ELECTRA's
            ``max(num_train_steps * warmup_proportion, warmup_steps)``. 0 means
            no warmup (ELECTRA's TF1 code would divide 0 by 0 at step 0).
        power: > 0, ELECTRA's ``lr_decay_power``. Defaults to 1.0.
        name: optional name scope.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        warmup_steps: float = 0.0,
        power: float = 1.0,
        name: str | None = None,
    ):
        super().__init__()
        self.spec = ElectraScheduleSpec(initial_learning_rate, decay_steps, warmup_steps, power, name)


def electra_warmup_steps(num_train_steps: int, warmup_proportion: float = 0.0, warmup_steps: float = 0) -> float:
    """ELECTRA's ``W = max(num_train_steps * warmup_proportion, warmup_steps)``."""
    owner = "create_electra_optimizer"
    validation.non_negative(owner, "warmup_proportion", warmup_proportion)
    validation.non_negative(owner, "warmup_steps", warmup_steps)
    return max(num_train_steps * warmup_proportion, warmup_steps)


_DOC = """Returns the optimizer of ELECTRA's TF1 ``create_optimizer``.

    Same arguments and defaults as ``google-research/electra``
    ``model/optimization.py`` ``create_optimizer`` (less ``loss`` and
    ``use_tpu``): ``ElectraSchedule`` (polynomial decay to 0 with power
    ``lr_decay_power``, times ``min(1, t/W)``, ``W = max(num_train_steps *
    warmup_proportion, warmup_steps)``), AdamWeightDecay with betas 0.9/0.999,
    epsilon 1e-6, exclusions ``["LayerNorm", "layer_norm", "bias"]``, gradients
    clipped to global norm 1.0, and, when ``layerwise_lr_decay_power`` > 0,
    ELECTRA's layer rates ``decay ** (n_transformer_layers + 2 - depth)`` by
    ``electra_layer_depths(n_transformer_layers)``. Float32 results are
    bit-identical to ELECTRA's TF1 graph.

    Args:
        learning_rate: peak rate (>= 0) before warmup and decay.
        num_train_steps: optimizer updates of the whole run (> 0).
        weight_decay_rate: decoupled weight decay (>= 0). Defaults to 0.0, as
            ELECTRA's function (its fine-tuning and pre-training configs pass 0.01).
        warmup_steps, warmup_proportion: the warmup length is the larger of
            ``warmup_steps`` and ``num_train_steps * warmup_proportion``.
        lr_decay_power: the polynomial decay's power (> 0). Defaults to 1.0.
        layerwise_lr_decay_power: layer-wise decay factor; None or <= 0 (as
            ELECTRA's default -1) turns it off. ELECTRA fine-tunes with 0.8.
        n_transformer_layers: the encoder's layer count, needed with
            ``layerwise_lr_decay_power``.
        optimizer_type: ``"adamw"`` (ELECTRA) or ``"lamb"`` (the same recipe
            on LAMB: its trust ratio multiplies each layer's rate).
        layer_depths: other depth rules instead of ELECTRA's keys (for
            names ELECTRA's keys do not know, such as keras-hub's).
        exclude_from_weight_decay: as the optimizer's; ELECTRA's list by default.
        global_clipnorm: clip norm of the gradients (None disables clipping).
        **optimizer_kwargs: any other optimizer keyword (``fused``,
            ``use_ema``, LAMB's ``exclude_from_layer_adaptation``...).
    """


def make_create_electra_optimizer(adam_weight_decay: type, lamb: type, schedule: type) -> Callable[..., Any]:
    """``create_electra_optimizer`` bound to one Keras flavour's classes."""

    def create_electra_optimizer(
        learning_rate: float,
        num_train_steps: int,
        weight_decay_rate: float = 0.0,
        warmup_steps: float = 0,
        warmup_proportion: float = 0.0,
        lr_decay_power: float = 1.0,
        layerwise_lr_decay_power: float | None = None,
        n_transformer_layers: int | None = None,
        *,
        optimizer_type: str = "adamw",
        layer_depths: layerwise.LayerDepths | Sequence | None = None,
        exclude_from_weight_decay: Sequence[str] | None = BERT_EXCLUSIONS,
        global_clipnorm: float | None = 1.0,
        **optimizer_kwargs: Any,
    ):
        owner = "create_electra_optimizer"
        validation.one_of(owner, "optimizer_type", optimizer_type, OPTIMIZER_TYPES)
        num_train_steps = validation.positive_int(owner, "num_train_steps", num_train_steps)
        decay = None
        if layerwise_lr_decay_power is not None and layerwise_lr_decay_power > 0:
            decay = layerwise_lr_decay_power
            if layer_depths is None:
                if n_transformer_layers is None:
                    raise ValueError(
                        f"{owner}: `layerwise_lr_decay_power={layerwise_lr_decay_power!r}` needs "
                        "`n_transformer_layers` (or `layer_depths`); received n_transformer_layers=None."
                    )
                layer_depths = layerwise.electra_layer_depths(n_transformer_layers)
        schedule_instance = schedule(
            initial_learning_rate=learning_rate,
            decay_steps=num_train_steps,
            warmup_steps=electra_warmup_steps(num_train_steps, warmup_proportion, warmup_steps),
            power=lr_decay_power,
        )
        optimizer_class = adam_weight_decay if optimizer_type == "adamw" else lamb
        return optimizer_class(
            learning_rate=schedule_instance,
            weight_decay_rate=weight_decay_rate,
            beta_1=0.9,
            beta_2=0.999,
            epsilon=1e-6,
            exclude_from_weight_decay=None if exclude_from_weight_decay is None else list(exclude_from_weight_decay),
            global_clipnorm=global_clipnorm,
            layerwise_lr_decay=decay,
            layer_depths=layer_depths,
            **optimizer_kwargs,
        )

    create_electra_optimizer.__doc__ = _DOC
    return create_electra_optimizer
