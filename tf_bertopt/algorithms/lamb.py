"""LAMB on BERT's AdamWeightDecay, flavour-neutral: see ``LambMixin``."""

from __future__ import annotations

from typing import Sequence

from tf_bertopt import layerwise, update_plan, update_rules, validation


class LambMixin:
    """LAMB built on BERT's AdamWeightDecay, as the TF1 ``LAMBOptimizer`` (paper v3).

    For each variable ``w`` with gradient ``g``::

        m, v, u  as in AdamWeightDecay (decay term inside u)
        r1 = ||w||_2 ; r2 = ||u||_2                 # over the whole variable
        r  = r1/r2 if r1 > 0 and r2 > 0 else 1.0    # r = 1 if w is not adapted
        w <- w - (lr*r)*u

    Float32 results are bit-identical to the TF1 ``LAMBOptimizer`` (outside a
    ``jit_compile=True`` step, see ``fused``). A variable
    split into shards (a ``ShardedVariable`` of ``ParameterServerStrategy``
    with a ``variable_partitioner``, tf-keras) is one variable: its norms are
    taken over all its shards.

    Reference: You et al., "Large Batch Optimization for Deep Learning:
    Training BERT in 76 minutes" (https://arxiv.org/abs/1904.00962).

    Args:
        learning_rate: float >= 0, a ``LearningRateSchedule`` (evaluated at the
            number of updates done so far) or a callable with no arguments. A
            scalar tensor or variable is read once, as the number it holds.
        weight_decay_rate: decay rate >= 0. Defaults to 0.01 (not 0.0 as in
            AdamWeightDecay), as the TF1 LAMBOptimizer.
        beta_1: decay of the first-moment average, in [0, 1). Defaults to 0.9.
        beta_2: decay of the second-moment average, in [0, 1). Defaults to 0.999.
        epsilon: > 0, added to ``sqrt(v)``. Defaults to 1e-6.
        exclude_from_weight_decay: regular expressions matched with
            ``re.search`` against the full variable name (Keras 3
            ``variable.path``, tf-keras ``variable.name`` without ``:0``);
            matching variables are not decayed.
        include_in_weight_decay: regular expressions that force decay on,
            winning over ``exclude_from_weight_decay``.
        exclude_from_layer_adaptation: regular expressions; matching variables
            get ``r = 1``. ``None`` (default) adapts every variable. ALBERT's
            LAMB passes the weight-decay exclusions here too.
        bias_correction: use ``m/(1-b1^(t+1))`` and ``v/(1-b2^(t+1))`` in ``u``
            (LAMB paper v5, NVIDIA). Defaults to False (the TF1 behaviour).
        weight_norm_bounds: ``(gamma_l, gamma_u)``, the paper's scaling function
            ``phi(z) = min(max(z, gamma_l), gamma_u)`` applied to ``||w||``.
            Either side may be None. Defaults to None (``phi(z) = z``).
        trust_ratio_bounds: ``(lower, upper)`` clamp of the final ratio ``r``,
            as NVIDIA's and DeepSpeed's LAMB offer. Defaults to None.
    """

    slot_names = ("lamb_m", "lamb_v")

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay_rate: float = 0.01,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-6,
        exclude_from_weight_decay: Sequence[str] | None = None,
        include_in_weight_decay: Sequence[str] | None = None,
        exclude_from_layer_adaptation: Sequence[str] | None = None,
        bias_correction: bool = False,
        weight_norm_bounds: tuple[float | None, float | None] | None = None,
        trust_ratio_bounds: tuple[float | None, float | None] | None = None,
        fused: bool = True,
        layerwise_lr_decay: float | None = None,
        layer_depths=None,
        name: str = "LAMB",
        **kwargs,
    ):
        super().__init__(
            learning_rate,
            weight_decay_rate,
            beta_1,
            beta_2,
            epsilon,
            exclude_from_weight_decay,
            include_in_weight_decay,
            exclude_from_layer_adaptation,
            name=name,
            **kwargs,
        )
        if not isinstance(bias_correction, bool):
            raise ValueError(f"LAMB: `bias_correction` must be True or False; received {bias_correction!r}.")
        self.bias_correction = bias_correction
        self.weight_norm_bounds = validation.bounds("LAMB", "weight_norm_bounds", weight_norm_bounds)
        self.trust_ratio_bounds = validation.bounds("LAMB", "trust_ratio_bounds", trust_ratio_bounds)
        self._set_fused(fused)
        self._set_layerwise_decay(layerwise_lr_decay, layer_depths)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "exclude_from_layer_adaptation": list(self.name_rules.exclude_from_layer_adaptation),
                "bias_correction": self.bias_correction,
                "weight_norm_bounds": self.weight_norm_bounds,
                "trust_ratio_bounds": self.trust_ratio_bounds,
            }
        )
        return config

    updates_shards_together = True

    def _lamb_options(self, index):
        return dict(
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay_rate=self._decay_rates[index],
            layer_adaptation=self._layer_adaptation[index],
            bias_correction=self.bias_correction,
            weight_norm_bounds=self.weight_norm_bounds,
            trust_ratio_bounds=self.trust_ratio_bounds,
        )

    def _updated(self, index, weight, grad, m, v, learning_rate):
        return update_rules.lamb_update(weight, grad, m, v, learning_rate, self.iterations, **self._lamb_options(index))

    def _prepare_fused_updates(self, var_list) -> None:
        adapted = [v for v, adapt in zip(var_list, self._layer_adaptation) if adapt]
        self._fused_updates.reserve_norm_scratch(adapted)

    def _fused_update(self, indices, variables, ms, vs, grads, learning_rate, step):
        self._fused_updates.lamb(
            variables,
            ms,
            vs,
            grads,
            learning_rate,
            step,
            [self._decay_rates[i] for i in indices],
            [self._layer_adaptation[i] for i in indices],
            self.weight_norm_bounds,
            self.trust_ratio_bounds,
            self.bias_correction,
        )

    def _updated_shards(self, indices, weights, grads, ms, vs, learning_rate, placement=None):
        # One variable, one decision: the first shard's name decides for all.
        return update_rules.lamb_update_shards(
            weights,
            grads,
            ms,
            vs,
            learning_rate,
            self.iterations,
            placement=placement,
            **self._lamb_options(indices[0]),
        )


LambMixin.__doc__ += update_plan.FUSED_ARGUMENT_DOC + layerwise.ARGUMENT_DOC
