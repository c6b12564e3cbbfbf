"""BERT's AdamWeightDecay optimizer for Keras 3."""

from __future__ import annotations

import keras

from tf_bertopt import front_end
from tf_bertopt.keras3.base import KERAS_KEYWORDS_DOC, BertOptimizer


@keras.saving.register_keras_serializable(package="tf_bertopt")
class AdamWeightDecay(front_end.AdamWeightDecayMixin, BertOptimizer):
    __doc__ = front_end.AdamWeightDecayMixin.__doc__ + KERAS_KEYWORDS_DOC
