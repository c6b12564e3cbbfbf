"""The optimizers' ``record_diagnostics``: diagnostics written from inside the step.

``DiagnosticsMixin`` comes first in each optimizer class. Once
``record_diagnostics`` is called, every traced ``apply_gradients`` (Keras 3:
``apply``) also writes ``tf_bertopt.diagnostics`` for its gradients, on the
steps where the update count is a multiple of ``every_n_steps``; before that
(and after ``stop_recording_diagnostics``) it adds nothing to the step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

# The module, not its names: importing TensorFlow from tf_bertopt.diagnostics can
# import the front ends (see tf_bertopt.registration), which import this module.
from tf_bertopt import diagnostics, update_rules, validation


@dataclasses.dataclass(frozen=True)
class RecordingSettings:
    every_n_steps: int
    per: str = "variable"
    histograms: bool = True


class DiagnosticsMixin:
    """``record_diagnostics``: the optimizer writes its diagnostics from inside the step."""

    _diagnostics_settings: RecordingSettings | None = None

    def record_diagnostics(self, every_n_steps: int = 100, per: str = "variable", histograms: bool = True):
        """Writes ``optimizer_diagnostics`` to the default summary writer every ``every_n_steps`` updates.

        Takes effect in steps traced from now on (call it before training;
        the ``OptimizerDiagnostics`` callback does). Not for ``jit_compile=True``
        steps (summaries are host operations) nor Keras 3 gradient accumulation.
        Under ``tf.distribute`` with several replicas each recorded step sums
        the gradients over replicas once more.
        """
        owner = type(self).__name__
        self._diagnostics_settings = RecordingSettings(
            validation.positive_int(owner, "every_n_steps", every_n_steps),
            validation.one_of(owner, "per", per, diagnostics.PER_CHOICES),
            validation.boolean(owner, "histograms", histograms),
        )

    def stop_recording_diagnostics(self) -> None:
        self._diagnostics_settings = None

    def apply(self, grads, trainable_variables=None):
        # Keras 3's entry point: apply_gradients and LossScaleOptimizer call it.
        if self._diagnostics_settings is not None:
            grads = list(grads)
            # Without variables, Keras 3 applies the gradients to those the optimizer was built with.
            recorded = self._trainable_variables if trainable_variables is None else list(trainable_variables)
            if trainable_variables is not None:
                trainable_variables = recorded
            self._record(list(zip(grads, recorded)))
        return super().apply(grads, trainable_variables)

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        if self._diagnostics_settings is not None and self.flavour == "tf_keras":
            grads_and_vars = list(grads_and_vars)
            self._record(grads_and_vars)
        return super().apply_gradients(grads_and_vars, *args, **kwargs)

    def _record(self, grads_and_vars) -> None:
        settings = self._diagnostics_settings
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        if not pairs:
            return
        if not self._optimizer_is_built():
            with tf.init_scope():  # as apply_gradients itself builds: slots are read below
                self.build([v for _, v in pairs])
        context = tf.distribute.get_replica_context()
        first_replica: Any = True
        if context is not None and context.num_replicas_in_sync > 1:
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, [update_rules.dense_gradient(g) for g, _ in pairs])
            pairs = list(zip(grads, [v for _, v in pairs]))
            first_replica = tf.equal(context.replica_id_in_sync_group, 0)
        step = tf.convert_to_tensor(self.iterations)
        due = tf.equal(tf.math.floormod(step, settings.every_n_steps), 0)

        def write():
            with tf.summary.record_if(first_replica):
                diagnostics.write_optimizer_diagnostics(
                    diagnostics.optimizer_diagnostics(self, pairs), step, per=settings.per, histograms=settings.histograms
                )
            return tf.constant(True)

        tf.cond(due, write, lambda: tf.constant(False))
