"""BERT's AdamWeightDecay optimizer for tf-keras (Keras 2)."""

from __future__ import annotations

import tf_keras

from tf_bertopt import nonfinite_steps
from tf_bertopt.algorithms.adam_weight_decay import AdamWeightDecayMixin
from tf_bertopt.diagnostics_recording import DiagnosticsMixin
from tf_bertopt.tf_keras.base import KERAS_KEYWORDS_DOC, BertOptimizer
from tf_bertopt.layerwise_updates import LayerwiseDecayMixin


@tf_keras.saving.register_keras_serializable(package="tf_bertopt")
class AdamWeightDecay(DiagnosticsMixin, LayerwiseDecayMixin, AdamWeightDecayMixin, BertOptimizer):
    __doc__ = AdamWeightDecayMixin.__doc__ + KERAS_KEYWORDS_DOC + nonfinite_steps.ARGUMENT_DOC
