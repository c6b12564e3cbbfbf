"""BERT's optimizers for TensorFlow 2 / Keras: AdamWeightDecay, LAMB and the
warmup + polynomial-decay schedule, bit-exact with the TF1 BERT code; ELECTRA's
recipe (``create_electra_optimizer``, ``ElectraSchedule``, layer-wise
learning-rate decay: ``tf_bertopt.layerwise``) and the optimizer's
per-variable diagnostics for TensorBoard (``OptimizerDiagnostics``,
``tf_bertopt.diagnostics``).

``tf_bertopt.AdamWeightDecay`` etc. follow whatever ``tf.keras`` is: the
Keras 3 classes by default, the tf-keras (Keras 2) ones when TensorFlow uses
tf-keras (``TF_USE_LEGACY_KERAS=1``). ``tf_bertopt.keras3`` and
``tf_bertopt.tf_keras`` name each flavour's classes explicitly.

``import tf_bertopt`` imports neither TensorFlow nor Keras: the optimizer
classes, ``FLAVOUR`` and the explicit namespaces are looked up on first use,
and ``FLAVOUR`` is then decided the way TensorFlow decides what ``tf.keras``
is (``tf_bertopt.flavours``). The classes are registered with Keras as soon
as Keras is imported (``tf_bertopt.registration``), so saved models load
without ``custom_objects``.
"""

import importlib

from tf_bertopt import registration
from tf_bertopt.decay_reporting import UnmatchedPatternWarning, decay_report

__version__ = "0.1.0"

registration.register_front_ends()

# Names taken from the front end of the flavour tf.keras is.
_FRONT_END_NAMES = (
    "AdamWeightDecay",
    "LAMB",
    "WarmupPolynomialDecay",
    "create_optimizer",
    "ElectraSchedule",
    "create_electra_optimizer",
    "OptimizerDiagnostics",
)
# Names defined in a module imported on first use.
_LAZY_MODULE_NAMES = {
    "load_model": "tf_bertopt.saved_models",
    "restore_optimizer": "tf_bertopt.saved_models",
    "optimizer_diagnostics": "tf_bertopt.diagnostics",
    "write_optimizer_diagnostics": "tf_bertopt.diagnostics",
}


def __getattr__(name):
    # Called only for names not yet in the module's globals; each answer is
    # stored there, so the lookup happens once.
    if name == "FLAVOUR":
        from tf_bertopt.flavours import tf_keras_flavour

        value = tf_keras_flavour()
    elif name in _FRONT_END_NAMES:
        value = getattr(importlib.import_module(f"tf_bertopt.{__getattr__('FLAVOUR')}"), name)
    elif name in _LAZY_MODULE_NAMES:
        value = getattr(importlib.import_module(_LAZY_MODULE_NAMES[name]), name)
    elif name in ("keras3", "tf_keras"):
        return importlib.import_module(f"tf_bertopt.{name}")
    else:
        raise AttributeError(f"module 'tf_bertopt' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | {"keras3", "tf_keras"})


__all__ = [
    *_FRONT_END_NAMES,
    *_LAZY_MODULE_NAMES,
    "decay_report",
    "UnmatchedPatternWarning",
    "FLAVOUR",
    "__version__",
]
