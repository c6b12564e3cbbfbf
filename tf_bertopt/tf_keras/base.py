"""What AdamWeightDecay and LAMB share as tf-keras (Keras 2) optimizers.

The adapter between tf-keras's ``Optimizer`` (the Keras 2.11+ one: ``build``,
``update_step``, ``add_variable_from_reference``) and
``tf_bertopt.update_rules``: slots, the learning rate, sparse gradients.
Arguments, config and per-variable decisions are shared with Keras 3 in
``tf_bertopt.front_end``; the formulas live in ``update_rules`` only.

tf-keras already does what the Keras 3 front end has to add: it sums the
gradients over replicas before clipping them with ``tf.clip_by_global_norm``,
and it feeds schedules the number of updates done.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from tf_bertopt import front_end, gradient_clipping, keras_arguments, nonfinite_steps, update_rules

KERAS_KEYWORDS_DOC = """
    Standard tf-keras keywords (``clipnorm``, ``clipvalue``,
    ``global_clipnorm``, ``use_ema``, ``ema_momentum``,
    ``ema_overwrite_frequency``, ``jit_compile``, ``name``) work as in every
    tf-keras optimizer, with two deliberate differences:

    * ``jit_compile`` defaults to False (tf-keras's optimizers default to
      True, which compiles each variable's update with XLA on GPU). The
      un-compiled update runs the TF1 graph's operations one by one, so it
      gives TF1's numbers on every device; ``jit_compile=True`` lets XLA fuse
      them, which is faster on GPU but may round differently.
    * Keras's ``weight_decay`` is refused: use ``weight_decay_rate``, which
      this optimizer applies itself (two decays would double it).

    Clipping is TF1's, as in tf-keras: ``global_clipnorm`` is
    ``tf.clip_by_global_norm``, ``clipnorm`` ``tf.clip_by_norm`` and
    ``clipvalue`` ``tf.clip_by_value``, of the gradient summed over replicas
    (the replicas' slices of a ``tf.IndexedSlices`` gathered). A
    ``tf.IndexedSlices`` gradient (an embedding lookup) is measured and
    clipped over its values, a row looked up k times counted k times; its
    repeated rows are summed after clipping, into the dense gradient the
    update uses.
"""


def checked_learning_rate(owner: str, learning_rate):
    return front_end.checked_learning_rate(
        owner, learning_rate, tf_keras.optimizers.schedules.LearningRateSchedule, "tf_keras"
    )


class BertOptimizer(
    nonfinite_steps.TfKerasStepSkipping,
    keras_arguments.KerasArgumentChecks,
    front_end.BertOptimizerMixin,
    tf_keras.optimizers.Optimizer,
):
    """Base of the tf-keras optimizers; subclasses mix in an algorithm from ``tf_bertopt.algorithms``."""

    flavour = "tf_keras"

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
        jit_compile=False,
        **kwargs,
    ):
        owner = type(self).__name__
        front_end.refuse_keras_weight_decay(owner, weight_decay)
        front_end.check_clip_arguments(owner, kwargs)
        learning_rate = checked_learning_rate(owner, learning_rate)
        # weight_decay=None: tf-keras's default of 0 would still run its decay step.
        super().__init__(name=name, weight_decay=None, jit_compile=jit_compile, **kwargs)
        is_function = callable(learning_rate) and not isinstance(
            learning_rate, tf_keras.optimizers.schedules.LearningRateSchedule
        )
        # tf-keras keeps a number in a variable; a function of no arguments is
        # read into that variable before each update (see _compute_current_learning_rate).
        self._learning_rate_function = self._no_dependency(learning_rate if is_function else None)
        self._learning_rate = self._build_learning_rate(learning_rate() if is_function else learning_rate)
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
        return getattr(self, "_built", False)

    def build(self, var_list):
        super().build(var_list)
        if self._optimizer_is_built():
            return
        self._built = True
        self._m, self._v = [], []
        for variable in var_list:
            self._m.append(self.add_variable_from_reference(variable, self.slot_names[0]))
            self._v.append(self.add_variable_from_reference(variable, self.slot_names[1]))
        self._decide_per_variable(var_list)
        self._find_shard_groups(var_list)

    def _find_shard_groups(self, var_list) -> None:
        # Under ParameterServerStrategy with a variable_partitioner, a model
        # variable reaches us as the shards of a ShardedVariable. For LAMB they
        # are one variable: the shards are updated together (see update_step).
        groups: dict[int, list[int]] = {}
        for index, variable in enumerate(var_list):
            container = getattr(variable, "_sharded_container", None)
            if self.updates_shards_together and container is not None and container() is not None:
                groups.setdefault(id(container()), []).append(index)
        self._shard_group = self._no_dependency(
            {i: members for members in groups.values() if len(members) > 1 for i in members}
        )
        self._shard_variables = self._no_dependency({i: var_list[i] for i in self._shard_group})
        self._shard_gradients = self._no_dependency({})
        if self.fused and self._shard_group:
            front_end.log_once(
                f"{type(self).__name__}: the shards of a ShardedVariable are updated together by the "
                "reference path (fused=False), since the trust ratio needs the norms of the whole "
                "variable; every other variable takes the fast path."
            )

    def _get_variable_index(self, variable) -> int:
        return self._index_dict[self._var_key(variable)]

    def get_config(self):
        config = super().get_config()
        config["learning_rate"] = self._serialize_hyperparameter(self._learning_rate)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Loading an h5 file, tf-keras deserializes in its legacy mode, which
        # looks a schedule up by its bare class name and ignores the
        # "registered_name" that get_config wrote: tell it where to look.
        config = dict(config)  # tf-keras replaces the schedule's dict in place
        schedule = config.get("learning_rate")
        if isinstance(schedule, dict) and schedule.get("registered_name"):
            registered = tf_keras.saving.get_registered_object(schedule["registered_name"], custom_objects)
            if registered is not None:
                custom_objects = {schedule["class_name"]: registered, **(custom_objects or {})}
        return super().from_config(config, custom_objects=custom_objects)

    def _compute_current_learning_rate(self):
        # Called by apply_gradients before any update; schedules see
        # `self.iterations`, the number of updates done.
        super()._compute_current_learning_rate()
        if self._learning_rate_function is not None:
            self._learning_rate.assign(self._learning_rate_function())

    def _clip_gradients(self, grads):
        # Called on the gradients summed over replicas (a tf.IndexedSlices
        # summed is the replicas' slices gathered), as the Keras 3 front end does.
        return gradient_clipping.clipped_gradients(
            grads, clipnorm=self.clipnorm, global_clipnorm=self.global_clipnorm, clipvalue=self.clipvalue
        )

    def _deduplicate_sparse_grad(self, grads):
        # Called right after _clip_gradients: from here on a tf.IndexedSlices
        # is its dense gradient, repeated rows summed, as TF1's dense update math
        # saw it (tf-keras's own tf.unique would not compile with XLA).
        return [None if g is None else update_rules.dense_gradient(g) for g in grads]

    def _distributed_apply_gradients_fn(self, distribution, grads_and_vars, **kwargs):
        grads_and_vars = list(grads_and_vars)
        if self.fused and not self._shard_group and grads_and_vars:
            # The fast path: every variable planned together (on each replica's
            # device under a mirrored strategy), so that small ones are packed;
            # tf-keras still walks the variables (EMA, step count), with
            # update_step standing by. Variables a strategy does not mirror
            # alike are planned one by one by update_step, where each lives.
            grads, variables = zip(*grads_and_vars)
            if tf.distribute.has_strategy():
                if not self._fused_update_per_replica(distribution, grads, variables, self.learning_rate):
                    return super()._distributed_apply_gradients_fn(distribution, grads_and_vars, **kwargs)
            else:
                self._fused_update_all(grads, variables, self.learning_rate)
            self._updated_already = True
            try:
                return super()._distributed_apply_gradients_fn(distribution, grads_and_vars, **kwargs)
            finally:
                self._updated_already = False
        if self._shard_group:
            # update_step sees one shard; it finds its siblings' gradients here.
            self._shard_gradients = self._no_dependency(
                {self._get_variable_index(v): g for g, v in grads_and_vars if g is not None}
            )
        return super()._distributed_apply_gradients_fn(distribution, grads_and_vars, **kwargs)

    def _update_shards_together(self, index) -> None:
        """The update of the whole variable that shard ``index`` belongs to; the
        first shard with a gradient does it, the others nothing."""
        members = [i for i in self._shard_group[index] if i in self._shard_gradients]
        if index != members[0]:
            return
        shards = [self._shard_variables[i] for i in members]

        def placement(k):
            # Shard k's operations run where shard k lives, not where the first one does.
            return tf.compat.v1.colocate_with(shards[k], ignore_existing=True)

        reads = []
        for k, i in enumerate(members):
            with placement(k):
                reads.append(
                    (
                        tf.convert_to_tensor(shards[k]),
                        tf.cast(update_rules.dense_gradient(self._shard_gradients[i]), shards[k].dtype),
                        tf.convert_to_tensor(self._m[i]),
                        tf.convert_to_tensor(self._v[i]),
                    )
                )
        weights, grads, ms, vs = (list(column) for column in zip(*reads))
        learning_rate = tf.cast(self.learning_rate, shards[0].dtype)
        results = self._updated_shards(members, weights, grads, ms, vs, learning_rate, placement)
        for k, (i, (new_weight, new_m, new_v)) in enumerate(zip(members, results)):
            with placement(k):
                self._m[i].assign(new_m)
                self._v[i].assign(new_v)
                shards[k].assign(new_weight)

    def update_step(self, gradient, variable):
        index = self._get_variable_index(variable)
        if index in self._shard_group:
            return self._update_shards_together(index)
        if self.fused:
            if not getattr(self, "_updated_already", False):
                self._fused_update_all([gradient], [variable], self.learning_rate)
            return None
        m, v = self._m[index], self._v[index]
        new_weight, new_m, new_v = self._updated(
            index,
            tf.convert_to_tensor(variable),
            tf.cast(update_rules.dense_gradient(gradient), variable.dtype),
            tf.convert_to_tensor(m),
            tf.convert_to_tensor(v),
            tf.cast(self.learning_rate, variable.dtype),
        )
        m.assign(new_m)
        v.assign(new_v)
        variable.assign(new_weight)
