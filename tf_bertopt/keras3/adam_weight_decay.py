"""BERT's AdamWeightDecay optimizer for Keras 3."""

from __future__ import annotations

import keras

from tf_bertopt import nonfinite_steps
from tf_bertopt.algorithms.adam_weight_decay import AdamWeightDecayMixin
from tf_bertopt.diagnostics_recording import DiagnosticsMixin
from tf_bertopt.keras3.base import KERAS_KEYWORDS_DOC, BertOptimizer
from tf_bertopt.layerwise_updates import LayerwiseDecayMixin


@keras.saving.register_keras_serializable(package="tf_bertopt")
class AdamWeightDecay(DiagnosticsMixin, LayerwiseDecayMixin, AdamWeightDecayMixin, BertOptimizer):
    __doc__ = AdamWeightDecayMixin.__doc__ + KERAS_KEYWORDS_DOC + nonfinite_steps.ARGUMENT_DOC
