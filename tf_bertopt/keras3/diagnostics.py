"""``OptimizerDiagnostics`` as a Keras 3 callback."""

from __future__ import annotations

import keras

from tf_bertopt.diagnostics_callback import OptimizerDiagnosticsMixin


class OptimizerDiagnostics(OptimizerDiagnosticsMixin, keras.callbacks.Callback):
    __doc__ = OptimizerDiagnosticsMixin.__doc__
