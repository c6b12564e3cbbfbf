"""BERT's optimizers for TensorFlow 2 / Keras: AdamWeightDecay, LAMB and the
warmup + polynomial-decay schedule, bit-exact with the TF1 BERT code.

``tf_bertopt.AdamWeightDecay`` etc. follow whatever ``tf.keras`` is (Keras 3
by default); ``tf_bertopt.keras3`` names the Keras 3 classes explicitly.
"""

from tf_bertopt.decay_reporting import UnmatchedPatternWarning, decay_report
from tf_bertopt.keras3 import LAMB, AdamWeightDecay, WarmupPolynomialDecay, create_optimizer

__version__ = "0.1.0"

__all__ = [
    "AdamWeightDecay",
    "LAMB",
    "WarmupPolynomialDecay",
    "create_optimizer",
    "decay_report",
    "UnmatchedPatternWarning",
    "__version__",
]
