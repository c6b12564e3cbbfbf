"""The BERT recipe: TF1 ``create_optimizer`` in one call, for either Keras flavour."""

from __future__ import annotations

from typing import Any, Callable, Sequence

BERT_EXCLUSIONS = ("LayerNorm", "layer_norm", "bias")
OPTIMIZER_TYPES = ("adamw", "lamb")
_LAMB_ONLY = ("exclude_from_layer_adaptation", "bias_correction", "weight_norm_bounds", "trust_ratio_bounds")

_DOC = """Returns the optimizer of TF1 BERT's ``create_optimizer``.

    Defaults reproduce BERT: ``WarmupPolynomialDecay(init_lr, num_train_steps,
    num_warmup_steps, end_learning_rate=0.0, power=1.0)``, weight_decay_rate
    0.01, betas 0.9/0.999, epsilon 1e-6, exclusions ``["LayerNorm",
    "layer_norm", "bias"]``, gradients clipped to global norm 1.0. Every value
    can be overridden.

    Args:
        init_lr: peak learning rate (>= 0).
        num_train_steps: optimizer updates of the whole run (the decay horizon, > 0).
        num_warmup_steps: linear-warmup updates (>= 0).
        optimizer_type: ``"adamw"`` (BERT's AdamWeightDecay) or ``"lamb"``.
        end_lr, power, cycle, decay_start, warmup_power,
            warmup_initial_learning_rate, warmup_style: passed to
            ``WarmupPolynomialDecay``.
        weight_decay_rate, beta_1, beta_2, epsilon, exclude_from_weight_decay,
            include_in_weight_decay: passed to the optimizer.
        global_clipnorm: clip norm of the gradients (None disables clipping).
        **optimizer_kwargs: any other optimizer keyword (e.g. LAMB's
            ``exclude_from_layer_adaptation`` or ``bias_correction``, Keras's
            ``use_ema`` or ``gradient_accumulation_steps``).
    """


def make_create_optimizer(adam_weight_decay: type, lamb: type, schedule: type) -> Callable[..., Any]:
    """``create_optimizer`` bound to one Keras flavour's classes."""

    def create_optimizer(
        init_lr: float,
        num_train_steps: int,
        num_warmup_steps: int,
        optimizer_type: str = "adamw",
        *,
        end_lr: float = 0.0,
        power: float = 1.0,
        cycle: bool = False,
        decay_start: str = "step_0",
        warmup_power: float = 1.0,
        warmup_initial_learning_rate: float = 0.0,
        warmup_style: str = "bert",
        weight_decay_rate: float = 0.01,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-6,
        exclude_from_weight_decay: Sequence[str] | None = BERT_EXCLUSIONS,
        include_in_weight_decay: Sequence[str] | None = None,
        global_clipnorm: float | None = 1.0,
        **optimizer_kwargs: Any,
    ):
        if optimizer_type not in OPTIMIZER_TYPES:
            raise ValueError(
                "create_optimizer: `optimizer_type` must be one of 'adamw', 'lamb'; "
                f"received optimizer_type={optimizer_type!r}."
            )
        if optimizer_type == "adamw":
            lamb_only = sorted(set(optimizer_kwargs) & set(_LAMB_ONLY))
            if lamb_only:
                raise ValueError(
                    f"create_optimizer: {', '.join(lamb_only)} only applies to optimizer_type='lamb'; "
                    "received it with optimizer_type='adamw'."
                )
        learning_rate = schedule(
            initial_learning_rate=init_lr,
            decay_steps=num_train_steps,
            warmup_steps=num_warmup_steps,
            end_learning_rate=end_lr,
            power=power,
            cycle=cycle,
            decay_start=decay_start,
            warmup_power=warmup_power,
            warmup_initial_learning_rate=warmup_initial_learning_rate,
            warmup_style=warmup_style,
        )
        optimizer_class = adam_weight_decay if optimizer_type == "adamw" else lamb
        return optimizer_class(
            learning_rate=learning_rate,
            weight_decay_rate=weight_decay_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            exclude_from_weight_decay=None if exclude_from_weight_decay is None else list(exclude_from_weight_decay),
            include_in_weight_decay=include_in_weight_decay,
            global_clipnorm=global_clipnorm,
            **optimizer_kwargs,
        )

    create_optimizer.__doc__ = _DOC
    return create_optimizer
