"""The tf-keras (Keras 2) front end: ``tf_keras.optimizers.Optimizer`` subclasses.

For ``import tf_keras`` code, and for ``tf.keras`` when TensorFlow is imported
with ``TF_USE_LEGACY_KERAS=1``. Same names, arguments and numbers as
``tf_bertopt.keras3``.
"""

from tf_bertopt.electra import make_create_electra_optimizer as _make_create_electra_optimizer
from tf_bertopt.recipe import make_create_optimizer as _make_create_optimizer
from tf_bertopt.tf_keras.adam_weight_decay import AdamWeightDecay
from tf_bertopt.tf_keras.diagnostics import OptimizerDiagnostics
from tf_bertopt.tf_keras.lamb import LAMB
from tf_bertopt.tf_keras.schedules import ElectraSchedule, WarmupPolynomialDecay

create_optimizer = _make_create_optimizer(AdamWeightDecay, LAMB, WarmupPolynomialDecay)
create_electra_optimizer = _make_create_electra_optimizer(AdamWeightDecay, LAMB, ElectraSchedule)

__all__ = ["AdamWeightDecay", "LAMB", "WarmupPolynomialDecay", "create_optimizer", "ElectraSchedule", "create_electra_optimizer", "OptimizerDiagnostics"]
