"""``WarmupPolynomialDecay`` and ``ElectraSchedule`` as tf-keras (Keras 2) ``LearningRateSchedule`` classes."""

from __future__ import annotations

import tf_keras

from tf_bertopt.algorithms.warmup_polynomial_decay import WarmupPolynomialDecayMixin
from tf_bertopt.electra import ElectraScheduleMixin


@tf_keras.saving.register_keras_serializable(package="tf_bertopt")
class WarmupPolynomialDecay(
    WarmupPolynomialDecayMixin, tf_keras.optimizers.schedules.LearningRateSchedule
):
    __doc__ = WarmupPolynomialDecayMixin.__doc__


@tf_keras.saving.register_keras_serializable(package="tf_bertopt")
class ElectraSchedule(ElectraScheduleMixin, tf_keras.optimizers.schedules.LearningRateSchedule):
    __doc__ = ElectraScheduleMixin.__doc__
