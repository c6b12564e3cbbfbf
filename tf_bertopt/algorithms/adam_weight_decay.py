"""BERT's AdamWeightDecay, flavour-neutral: see ``AdamWeightDecayMixin``."""

from __future__ import annotations

from typing import Sequence

from tf_bertopt import layerwise, update_plan, update_rules


class AdamWeightDecayMixin:
    """Adam with decoupled weight decay, exactly as in Google's TF1 BERT.

    For each variable ``w`` with gradient ``g`` (slots ``m``, ``v`` start at 0)::

        m <- b1*m + (1-b1)*g
        v <- b2*v + (1-b2)*g^2
        u <- m / (sqrt(v) + eps)        # no bias correction; eps outside the sqrt
        u <- u + wd*w                   # only for decayed variables
        w <- w - lr*u

    Unlike Keras's ``AdamW`` there is no bias correction, epsilon is added
    outside the square root, and the decay is folded into the update. Float32
    results are bit-identical to TF1's ``AdamWeightDecayOptimizer`` (outside
    a ``jit_compile=True`` step, see ``fused``).

    References: Devlin et al., 2019, "BERT" (https://arxiv.org/abs/1810.04805);
    Loshchilov & Hutter, 2019, "Decoupled Weight Decay Regularization"
    (https://arxiv.org/abs/1711.05101).

    Args:
        learning_rate: float >= 0, a ``LearningRateSchedule`` (such as
            ``tf_bertopt.WarmupPolynomialDecay``, evaluated at the number of
            updates done so far) or a callable with no arguments. A
            scalar tensor or variable is read once, as the number it holds.
        weight_decay_rate: decay rate ``wd`` >= 0. Defaults to 0.0.
        beta_1: decay of the first-moment average, in [0, 1). Defaults to 0.9.
        beta_2: decay of the second-moment average, in [0, 1). Defaults to 0.999.
        epsilon: > 0, added to ``sqrt(v)``. Defaults to 1e-6.
        exclude_from_weight_decay: regular expressions; a variable whose full
            name (Keras 3 ``variable.path``, tf-keras ``variable.name`` without
            ``:0``) matches one with ``re.search`` is not decayed. BERT uses
            ``["LayerNorm", "layer_norm", "bias"]``.
        include_in_weight_decay: regular expressions that force decay on,
            winning over ``exclude_from_weight_decay``.
    """

    slot_names = ("adam_m", "adam_v")

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay_rate: float = 0.0,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-6,
        exclude_from_weight_decay: Sequence[str] | None = None,
        include_in_weight_decay: Sequence[str] | None = None,
        fused: bool = True,
        layerwise_lr_decay: float | None = None,
        layer_depths=None,
        name: str = "AdamWeightDecay",
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
            name=name,
            **kwargs,
        )
        self._set_fused(fused)
        self._set_layerwise_decay(layerwise_lr_decay, layer_depths)

    def _updated(self, index, weight, grad, m, v, learning_rate):
        return update_rules.adam_weight_decay_update(
            weight,
            grad,
            m,
            v,
            learning_rate,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay_rate=self._decay_rates[index],
        )

    def _fused_update(self, indices, variables, ms, vs, grads, learning_rate, step):
        rates = [self._decay_rates[i] for i in indices]
        self._fused_updates.adam_weight_decay(variables, ms, vs, grads, learning_rate, step, rates)


AdamWeightDecayMixin.__doc__ += update_plan.FUSED_ARGUMENT_DOC + layerwise.ARGUMENT_DOC
