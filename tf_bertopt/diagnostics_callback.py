"""The ``OptimizerDiagnostics`` Keras callback, flavour-neutral (see ``tf_bertopt.diagnostics``)."""

from __future__ import annotations

import tensorflow as tf

from tf_bertopt import diagnostics, validation


class OptimizerDiagnosticsMixin:
    """Writes the optimizer's per-variable diagnostics to TensorBoard every ``every_n_steps`` updates.

    For each variable (or, with ``per="layer"``, each layer depth): weight
    norm, gradient norm after clipping, update norm, LAMB's trust ratio and
    the effective learning rate (schedule x layer-wise multiplier x trust
    ratio); for the step: the learning rate, the global gradient norm before
    clipping, whether clipping fired and the fraction of variables decayed.
    Scalars, and histograms over the variables, in ``log_dir`` (open it with
    ``tensorboard --logdir``). See ``tf_bertopt.diagnostics``.

    The model must be compiled with a tf_bertopt optimizer (also inside a
    ``LossScaleOptimizer``) and trained with ``jit_compile=False``. Nothing
    is added to the training step before ``fit`` starts or after it ends;
    while it runs, steps that are not recorded cost one conditional.

    Args:
        log_dir: folder of the TensorBoard event files.
        every_n_steps: record every this many optimizer updates (> 0). Defaults to 100.
        per: ``"variable"`` (default) or ``"layer"`` (grouped by the optimizer's
            ``layer_depths``; all in one group without them).
        histograms: also write histograms across variables. Defaults to True.
    """

    def __init__(self, log_dir: str, every_n_steps: int = 100, per: str = "variable", histograms: bool = True):
        super().__init__()
        owner = "OptimizerDiagnostics"
        self.log_dir = str(log_dir)
        self.every_n_steps = validation.positive_int(owner, "every_n_steps", every_n_steps)
        self.per = validation.one_of(owner, "per", per, diagnostics.PER_CHOICES)
        self.histograms = validation.boolean(owner, "histograms", histograms)
        self._writer = None
        self._writer_context = None

    def _optimizer(self):
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        if not hasattr(optimizer, "record_diagnostics"):
            raise TypeError(
                "OptimizerDiagnostics: the model must be compiled with a tf_bertopt optimizer "
                f"(AdamWeightDecay, LAMB); its optimizer is {type(optimizer).__name__}."
            )
        return optimizer

    def on_train_begin(self, logs=None):
        optimizer = self._optimizer()
        self._writer = tf.summary.create_file_writer(self.log_dir)
        self._writer_context = self._writer.as_default()
        self._writer_context.__enter__()
        optimizer.record_diagnostics(self.every_n_steps, self.per, self.histograms)

    def on_train_end(self, logs=None):
        self._optimizer().stop_recording_diagnostics()
        if self._writer_context is not None:
            self._writer_context.__exit__(None, None, None)
            self._writer.flush()
            self._writer_context = None
