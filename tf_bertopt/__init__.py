"""BERT's optimizers for TensorFlow 2 / Keras: AdamWeightDecay, LAMB and the
warmup + polynomial-decay schedule, bit-exact with the TF1 BERT code; ELECTRA's
recipe (``create_electra_optimizer``, ``ElectraSchedule``, layer-wise
learning-rate decay: ``tf_bertopt.layerwise``) and the optimizer's
per-variable diagnostics for TensorBoard (``OptimizerDiagnostics``,
``tf_bertopt.diagnostics``).

``tf_bertopt.AdamWeightDecay`` etc. follow whatever ``tf.keras`` is: the
Keras 3 classes by default, the tf-keras (Keras 2) ones when TensorFlow uses
tf-keras (``TF_USE_LEGACY_KERAS=1``), decided when tf_bertopt is imported.
``tf_bertopt.keras3`` and ``tf_bertopt.tf_keras`` name each flavour's classes
explicitly; each is imported on first use.
"""

import importlib

from tf_bertopt.decay_reporting import UnmatchedPatternWarning, decay_report
from tf_bertopt.diagnostics import optimizer_diagnostics, write_optimizer_diagnostics
from tf_bertopt.flavours import tf_keras_flavour

__version__ = "0.1.0"

FLAVOUR = tf_keras_flavour()
_front_end = importlib.import_module(f"tf_bertopt.{FLAVOUR}")
AdamWeightDecay = _front_end.AdamWeightDecay
LAMB = _front_end.LAMB
WarmupPolynomialDecay = _front_end.WarmupPolynomialDecay
create_optimizer = _front_end.create_optimizer
ElectraSchedule = _front_end.ElectraSchedule
create_electra_optimizer = _front_end.create_electra_optimizer
OptimizerDiagnostics = _front_end.OptimizerDiagnostics


def __getattr__(name):
    # `tf_bertopt.keras3` / `tf_bertopt.tf_keras` without importing them first.
    if name in ("keras3", "tf_keras"):
        return importlib.import_module(f"tf_bertopt.{name}")
    raise AttributeError(f"module 'tf_bertopt' has no attribute {name!r}")


__all__ = [
    "AdamWeightDecay",
    "LAMB",
    "WarmupPolynomialDecay",
    "create_optimizer",
    "ElectraSchedule",
    "create_electra_optimizer",
    "OptimizerDiagnostics",
    "optimizer_diagnostics",
    "write_optimizer_diagnostics",
    "decay_report",
    "UnmatchedPatternWarning",
    "FLAVOUR",
    "__version__",
]
