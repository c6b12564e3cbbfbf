"""``skip_nonfinite_steps``: an update whose gradient holds ``inf`` or ``NaN`` is not made.

By default the optimizers apply whatever gradient they are given, as TF1
BERT did: one ``inf`` or ``NaN`` reaches the weights and the ``m``/``v``
slots, and stays there. With ``skip_nonfinite_steps=True`` an update whose
gradient has a non-finite element anywhere (a dense tensor, or the values of
a ``tf.IndexedSlices``) is skipped whole: weights, slots, EMA averages,
gradient accumulators, the step counter ``iterations`` and so the
learning-rate schedule stay as they were, and the optimizer variable
``nonfinite_step_count`` (int64, checkpointed with the others) counts the
skip. A step that is not skipped gives the same numbers, bit for bit, as
without the option.

The decision is a ``tf.cond`` in the compiled step (no trip to the host;
XLA compiles it). Under ``tf.distribute`` every replica takes the same
decision: tf-keras decides on the gradient summed over replicas; Keras 3,
which sums later, inside the update, skips when any replica's gradient is
non-finite, which is when the sum is (``inf`` and ``NaN`` survive a sum).
Under a ``LossScaleOptimizer`` (both flavours) the wrapper already skips
non-finite steps and lowers the loss scale, so the optimizer inside it never
sees one and its ``nonfinite_step_count`` stays 0.
"""

from __future__ import annotations

import tensorflow as tf

from tf_bertopt import validation

COUNTER_NAME = "nonfinite_step_count"

ARGUMENT_DOC = """
    Fault handling:

    * ``skip_nonfinite_steps``: if True, an update whose gradient holds
      ``inf`` or ``NaN`` anywhere is skipped whole (weights, slots, EMA,
      accumulators, ``iterations`` and so the schedule) and counted in the
      int64 optimizer variable ``nonfinite_step_count``. Defaults to False,
      which applies every gradient as TF1 BERT did. See
      ``tf_bertopt.nonfinite_steps``.
"""


def nonfinite_gradients(grads) -> tf.Tensor:
    """An int32 scalar: 1 if any element of any gradient in ``grads`` is inf or NaN, else 0."""
    checks = []
    for grad in grads:
        if grad is None:
            continue
        values = grad.values if isinstance(grad, tf.IndexedSlices) else grad
        checks.append(tf.reduce_all(tf.math.is_finite(values)))
    if not checks:
        return tf.constant(0, tf.int32)
    return 1 - tf.cast(tf.reduce_all(tf.stack(checks)), tf.int32)


def _inside_branch(grads):
    return [None if g is None else tf.identity(g) for g in grads]


def _merge_call_needed() -> bool:
    return tf.distribute.has_strategy() and not tf.__internal__.distribute.strategy_supports_no_merge_call()


class _StepSkipping:
    """The option's argument, config key and counter, shared by both flavours."""

    def __init__(self, *args, skip_nonfinite_steps: bool = False, **kwargs):
        skip_nonfinite_steps = validation.boolean(type(self).__name__, "skip_nonfinite_steps", skip_nonfinite_steps)
        super().__init__(*args, **kwargs)
        self.skip_nonfinite_steps = skip_nonfinite_steps

    def get_config(self):
        config = super().get_config()
        config["skip_nonfinite_steps"] = self.skip_nonfinite_steps
        return config

    @property
    def nonfinite_step_count(self):
        """The number of updates skipped for a non-finite gradient (an int64
        variable), or None unless ``skip_nonfinite_steps=True`` and built."""
        return getattr(self, "_nonfinite_step_count", None)

    def _count_skipped_step(self) -> None:
        self._nonfinite_step_count.assign_add(1)

    def _apply_unless_nonfinite(self, nonfinite, apply) -> None:
        tf.cond(nonfinite > 0, self._count_skipped_step, apply)


class Keras3StepSkipping(_StepSkipping):
    """``skip_nonfinite_steps`` for Keras 3: ``apply`` runs only on a finite gradient."""

    def build(self, var_list):
        super().build(var_list)
        if self.skip_nonfinite_steps and self.nonfinite_step_count is None:
            self._nonfinite_step_count = self.add_variable(
                shape=(), initializer="zeros", dtype="int64", aggregation="only_first_replica", name=COUNTER_NAME
            )

    def apply(self, grads, trainable_variables=None):
        apply = super().apply
        if not self.skip_nonfinite_steps:
            return apply(grads, trainable_variables)
        grads = list(grads)
        if not self.built and trainable_variables is not None:  # variables are made here, not inside the tf.cond below
            with tf.name_scope(self.name):
                self.build(list(trainable_variables))
            self.built = True
        if _merge_call_needed():
            return tf.distribute.get_replica_context().merge_call(
                self._apply_unless_any_replica_nonfinite, args=(grads, trainable_variables)
            )
        nonfinite = nonfinite_gradients(grads)
        if tf.distribute.has_strategy():
            nonfinite = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, nonfinite)
        # tf.identity: every gradient made inside the branch, as the replica
        # all-reduce in the update wants its inputs from one graph.
        self._apply_unless_nonfinite(nonfinite, lambda: apply(_inside_branch(grads), trainable_variables))

    def _apply_unless_any_replica_nonfinite(self, distribution, grads, trainable_variables):
        # Cross-replica context: the tf.cond must be here, since the update it
        # guards synchronizes the replicas (merge_call) and a tf.cond in a
        # replica context may not.
        per_replica = distribution.extended.call_for_each_replica(nonfinite_gradients, args=(grads,))
        nonfinite = distribution.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        apply = super().apply
        self._apply_unless_nonfinite(
            nonfinite,
            lambda: distribution.extended.call_for_each_replica(apply, args=(grads, trainable_variables)),
        )


class TfKerasStepSkipping(_StepSkipping):
    """``skip_nonfinite_steps`` for tf-keras: the update (after the gradient is summed over
    replicas and clipped) runs only on a finite gradient."""

    def build(self, var_list):
        super().build(var_list)
        if self.skip_nonfinite_steps and self.nonfinite_step_count is None:
            with tf.init_scope():
                self._nonfinite_step_count = tf.Variable(
                    0,
                    name=COUNTER_NAME,
                    dtype=tf.int64,
                    trainable=False,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                )
            self._variables.append(self._nonfinite_step_count)

    def _internal_apply_gradients(self, grads_and_vars):
        if not self.skip_nonfinite_steps:
            return super()._internal_apply_gradients(grads_and_vars)
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._apply_gradients_unless_nonfinite, self._distribution_strategy, list(grads_and_vars)
        )
        return self.iterations

    def _apply_gradients_unless_nonfinite(self, distribution, grads_and_vars):
        grads = [g for g, _ in grads_and_vars]
        if tf.distribute.in_cross_replica_context() and tf.distribute.has_strategy():
            per_replica = distribution.extended.call_for_each_replica(nonfinite_gradients, args=(grads,))
            nonfinite = distribution.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        else:
            nonfinite = nonfinite_gradients(grads)  # summed over replicas already: the same on each

        def apply():
            self._distributed_apply_gradients_fn(distribution, grads_and_vars)

        self._apply_unless_nonfinite(nonfinite, apply)
