"""Which Keras ``tf.keras`` is: Keras 3, or tf-keras (Keras 2).

TensorFlow decides when ``tf.keras`` is first used: tf-keras if the
environment variable ``TF_USE_LEGACY_KERAS`` is ``1``, ``true`` or ``True``,
Keras 3 otherwise. ``tf_keras_flavour()`` gives the same answer, and reads
TensorFlow's own decision once it has been made.
"""

from __future__ import annotations

import os

FLAVOURS = ("keras3", "tf_keras")
_LEGACY_VALUES = ("true", "True", "1")


def tf_keras_flavour() -> str:
    """``"tf_keras"`` if ``tf.keras`` is (or will be) tf-keras, else ``"keras3"``."""
    import tensorflow as tf

    loader_state = getattr(tf.__dict__.get("keras"), "__dict__", {})
    if loader_state.get("_tfll_initialized"):
        return "tf_keras" if loader_state.get("_tfll_keras_version") == "tf_keras" else "keras3"
    return "tf_keras" if os.environ.get("TF_USE_LEGACY_KERAS") in _LEGACY_VALUES else "keras3"
