"""``OptimizerDiagnostics`` as a tf-keras (Keras 2) callback."""

from __future__ import annotations

import tf_keras

from tf_bertopt.diagnostics_callback import OptimizerDiagnosticsMixin


class OptimizerDiagnostics(OptimizerDiagnosticsMixin, tf_keras.callbacks.Callback):
    __doc__ = OptimizerDiagnosticsMixin.__doc__
