"""What AdamWeightDecay and LAMB share as Keras 3 optimizers.

The adapter between Keras 3's ``Optimizer`` and ``tf_bertopt.update_rules``:
slots, the learning rate per optimizer update, sparse gradients and
global-norm clipping. Arguments, config and per-variable decisions are shared
with tf-keras in ``tf_bertopt.front_end``; the formulas live in
``update_rules`` only.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_bertopt import front_end, gradient_clipping, keras_arguments, nonfinite_steps, update_rules

if keras.backend.backend() != "tensorflow":  # pragma: no cover - depends on the environment
    raise ImportError(
        "tf_bertopt's Keras 3 optimizers need the TensorFlow backend; "
        f"KERAS_BACKEND is {keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

KERAS_KEYWORDS_DOC = """
    Standard Keras keywords (``clipnorm``, ``clipvalue``, ``global_clipnorm``,
    ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``,
    ``loss_scale_factor``, ``gradient_accumulation_steps``, ``name``) work as
    in every Keras optimizer, with three deliberate differences:

    * Clipping is TF1's: ``global_clipnorm`` is ``tf.clip_by_global_norm``,
      ``clipnorm`` ``tf.clip_by_norm`` and ``clipvalue`` ``tf.clip_by_value``,
      bit for bit, and a ``tf.IndexedSlices`` gradient (an embedding lookup)
      is measured and clipped over its values, a row looked up k times
      counted k times, before repeated rows are summed. Under
      ``tf.distribute`` they clip the gradient summed over replicas (the
      replicas' slices gathered; Keras clips each replica's own), so N
      replicas give the numbers of one device.
    * With ``gradient_accumulation_steps``, the learning-rate schedule (and
      LAMB's bias correction) advance once per optimizer update, not per
      micro-batch: BERT's ``num_train_steps`` counts updates.
    * Keras's ``weight_decay`` is refused: use ``weight_decay_rate``, which
      this optimizer applies itself (two decays would double it).
"""


def checked_learning_rate(owner: str, learning_rate):
    return front_end.checked_learning_rate(
        owner, learning_rate, keras.optimizers.schedules.LearningRateSchedule, "keras3"
    )


class BertOptimizer(
    nonfinite_steps.Keras3StepSkipping,
    keras_arguments.KerasArgumentChecks,
    front_end.BertOptimizerMixin,
    keras.optimizers.Optimizer,
):
    """Base of the Keras 3 optimizers; subclasses mix in an algorithm from ``tf_bertopt.algorithms``."""

    flavour = "keras3"

    def __init__(
        self,
        learning_rate,
        weight_decay_rate,
        beta_1,
        beta_2,
        epsilon,
        exclude_from_weight_decay,
        include_in_weight_decay,
        exclude_from_layer_adaptation=None,
        *,
        name,
        weight_decay=None,
        **kwargs,
    ):
        owner = type(self).__name__
        front_end.refuse_keras_weight_decay(owner, weight_decay)
        front_end.check_clip_arguments(owner, kwargs)
        super().__init__(learning_rate=checked_learning_rate(owner, learning_rate), name=name, **kwargs)
        self._set_hyperparameters(
            weight_decay_rate,
            beta_1,
            beta_2,
            epsilon,
            exclude_from_weight_decay,
            include_in_weight_decay,
            exclude_from_layer_adaptation,
        )

    def _optimizer_is_built(self) -> bool:
        return self.built

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, list(self.slot_names))
        self._decide_per_variable(var_list)

    def _get_current_learning_rate(self):
        # `self.iterations` counts optimizer updates (Keras divides by the
        # accumulation steps); Keras itself feeds schedules the micro-batch count.
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    def _clip_gradients(self, grads):
        # Every kind of clipping waits for the cross-replica sum in
        # _backend_update_step, so that N replicas clip what one device would.
        return grads

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        grads = [g for g, _ in self._all_reduce_sum_gradients(list(zip(grads, variables)))]
        grads = gradient_clipping.clipped_gradients(
            grads, clipnorm=self.clipnorm, global_clipnorm=self.global_clipnorm, clipvalue=self.clipvalue
        )
        grads = [update_rules.dense_gradient(g) for g in grads]
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_tf_update_step, self._distribution_strategy, list(zip(grads, variables)), learning_rate
        )

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        if not self.fused or not grads_and_vars:
            return super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)
        grads, variables = zip(*grads_and_vars)
        if not tf.distribute.has_strategy():
            # The fast path: every variable planned together, so that small ones are packed.
            return self._fused_update_all(grads, variables, learning_rate)
        if not self._fused_update_per_replica(distribution, grads, variables, learning_rate):
            # Variables not mirrored alike: each updated where it lives, one
            # `extended.update` each; update_step plans them one by one.
            return super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)

    def update_step(self, gradient, variable, learning_rate):
        if self.fused:
            return self._fused_update_all([gradient], [variable], learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._m[index], self._v[index]
        weight, grad = tf.convert_to_tensor(variable), tf.cast(gradient, variable.dtype)
        new_weight, new_m, new_v = self._updated(
            index, weight, grad, tf.convert_to_tensor(m), tf.convert_to_tensor(v), tf.cast(learning_rate, variable.dtype)
        )
        self.assign(m, new_m)
        self.assign(v, new_v)
        self.assign(variable, new_weight)
