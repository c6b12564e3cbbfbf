"""LAMB (layer-wise adaptive moments) for Keras 3, as in the TF1 BERT-based LAMBOptimizer."""

from __future__ import annotations

import keras

from tf_bertopt import nonfinite_steps
from tf_bertopt.algorithms.lamb import LambMixin
from tf_bertopt.diagnostics_recording import DiagnosticsMixin
from tf_bertopt.keras3.base import KERAS_KEYWORDS_DOC, BertOptimizer
from tf_bertopt.layerwise_updates import LayerwiseDecayMixin


@keras.saving.register_keras_serializable(package="tf_bertopt")
class LAMB(DiagnosticsMixin, LayerwiseDecayMixin, LambMixin, BertOptimizer):
    __doc__ = LambMixin.__doc__ + KERAS_KEYWORDS_DOC + nonfinite_steps.ARGUMENT_DOC
