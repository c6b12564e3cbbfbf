"""``WarmupPolynomialDecay`` and ``ElectraSchedule`` as Keras 3 ``LearningRateSchedule`` classes."""

from __future__ import annotations

import keras

from tf_bertopt.algorithms.warmup_polynomial_decay import WarmupPolynomialDecayMixin
from tf_bertopt.electra import ElectraScheduleMixin


@keras.saving.register_keras_serializable(package="tf_bertopt")
class WarmupPolynomialDecay(WarmupPolynomialDecayMixin, keras.optimizers.schedules.LearningRateSchedule):
    __doc__ = WarmupPolynomialDecayMixin.__doc__


@keras.saving.register_keras_serializable(package="tf_bertopt")
class ElectraSchedule(ElectraScheduleMixin, keras.optimizers.schedules.LearningRateSchedule):
    __doc__ = ElectraScheduleMixin.__doc__
