"""BERT's AdamWeightDecay optimizer for tf-keras (Keras 2)."""

from __future__ import annotations

import tf_keras

from tf_bertopt import front_end
from tf_bertopt.tf_keras.base import KERAS_KEYWORDS_DOC, BertOptimizer


@tf_keras.saving.register_keras_serializable(package="tf_bertopt")
class AdamWeightDecay(front_end.AdamWeightDecayMixin, BertOptimizer):
    __doc__ = front_end.AdamWeightDecayMixin.__doc__ + KERAS_KEYWORDS_DOC
