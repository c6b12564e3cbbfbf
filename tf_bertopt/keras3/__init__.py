"""The Keras 3 front end: ``keras.optimizers.Optimizer`` subclasses."""

from tf_bertopt.electra import make_create_electra_optimizer as _make_create_electra_optimizer
from tf_bertopt.keras3.adam_weight_decay import AdamWeightDecay
from tf_bertopt.keras3.diagnostics import OptimizerDiagnostics
from tf_bertopt.keras3.lamb import LAMB
from tf_bertopt.keras3.schedules import ElectraSchedule, WarmupPolynomialDecay
from tf_bertopt.recipe import make_create_optimizer as _make_create_optimizer

create_optimizer = _make_create_optimizer(AdamWeightDecay, LAMB, WarmupPolynomialDecay)
create_electra_optimizer = _make_create_electra_optimizer(AdamWeightDecay, LAMB, ElectraSchedule)

__all__ = ["AdamWeightDecay", "LAMB", "WarmupPolynomialDecay", "create_optimizer", "ElectraSchedule", "create_electra_optimizer", "OptimizerDiagnostics"]
