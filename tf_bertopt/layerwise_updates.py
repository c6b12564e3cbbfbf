"""The optimizers' side of layer-wise learning-rate decay (see ``tf_bertopt.layerwise``).

``LayerwiseDecayMixin`` comes before the algorithm's mixin in each optimizer
class, and scales the learning rate on its way to the update:
``_updated`` and ``_updated_shards`` (one variable, op by op) and
``_fused_update`` (many variables, ``fused=True``), where the variables are
split into groups of one multiplier, each given its own learning-rate tensor.
The update math itself never changes.
"""

from __future__ import annotations

import tensorflow as tf

from tf_bertopt import fused_updates, layerwise, name_matching, validation


class LayerwiseDecayMixin:
    """``layerwise_lr_decay`` and ``layer_depths``: a learning-rate multiplier per variable."""

    def _set_layerwise_decay(self, layerwise_lr_decay, layer_depths) -> None:
        owner = type(self).__name__
        self.layer_depths = layerwise.layer_depths_argument(owner, layer_depths)
        if layerwise_lr_decay is None:
            self.layerwise_lr_decay = None
        else:
            self.layerwise_lr_decay = validation.positive(owner, "layerwise_lr_decay", layerwise_lr_decay)
            if self.layer_depths is None:
                raise ValueError(
                    f"{owner}: `layerwise_lr_decay={layerwise_lr_decay!r}` needs `layer_depths`, the rules that "
                    "give each variable its depth (e.g. tf_bertopt.layerwise.tf1_bert_layer_depths(num_layers))."
                )
        self._layer_depths_of_variables: list[int | None] = []
        self._learning_rate_multipliers: list[float] = []

    def get_config(self):
        config = super().get_config()
        config["layerwise_lr_decay"] = self.layerwise_lr_decay
        config["layer_depths"] = None if self.layer_depths is None else self.layer_depths.to_config()
        return config

    def _decide_per_variable(self, var_list) -> None:
        # Depths are decided whenever rules are given (reports and diagnostics
        # group by them); they change the learning rate only with a decay.
        if self.layer_depths is None:
            depths = [None] * len(var_list)
        else:
            names = [name_matching.variable_name(v) for v in var_list]
            depths = self.layer_depths.depths(type(self).__name__, names)
        self._layer_depths_of_variables = depths
        self._learning_rate_multipliers = [
            1.0 if self.layerwise_lr_decay is None else self.layer_depths.multiplier(self.layerwise_lr_decay, d)
            for d in depths
        ]
        super()._decide_per_variable(var_list)

    def layer_depth(self, variable) -> int | None:
        """The depth the built optimizer gave ``variable`` (None without ``layer_depths``)."""
        return self._layer_depths_of_variables[self._get_variable_index(variable)]

    def learning_rate_multiplier(self, variable) -> float:
        """What the built optimizer multiplies ``variable``'s learning rate by (1.0 without layer-wise decay)."""
        return self._learning_rate_multipliers[self._get_variable_index(variable)]

    def _scaled_learning_rate(self, index: int, learning_rate):
        multiplier = self._learning_rate_multipliers[index] if self._learning_rate_multipliers else 1.0
        if multiplier == 1.0:
            return learning_rate  # x * 1.0 is x: the same bits, one operation fewer
        learning_rate = tf.convert_to_tensor(learning_rate)
        scaled = learning_rate * tf.constant(multiplier, learning_rate.dtype)
        # TF1 rounds lr * multiplier before LAMB multiplies by the trust ratio;
        # without the barrier Grappler may reassociate (lr * c) * r as lr * (c * r).
        return fused_updates.separately_rounded(self.iterations)(scaled)

    def _updated(self, index, weight, grad, m, v, learning_rate):
        return super()._updated(index, weight, grad, m, v, self._scaled_learning_rate(index, learning_rate))

    def _updated_shards(self, indices, weights, grads, ms, vs, learning_rate, placement=None):
        scaled = self._scaled_learning_rate(indices[0], learning_rate)
        return super()._updated_shards(indices, weights, grads, ms, vs, scaled, placement)

    def _fused_update(self, indices, variables, ms, vs, grads, learning_rate, step) -> None:
        groups: dict[float, list[int]] = {}
        for position, index in enumerate(indices):
            groups.setdefault(self._learning_rate_multipliers[index], []).append(position)
        for positions in groups.values():
            pick = lambda items: [items[p] for p in positions]  # noqa: E731
            chosen = pick(indices)
            super()._fused_update(
                chosen,
                pick(variables),
                pick(ms),
                pick(vs),
                pick(grads),
                self._scaled_learning_rate(chosen[0], learning_rate),
                step,
            )
