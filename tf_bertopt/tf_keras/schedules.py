"""``WarmupPolynomialDecay`` as a tf-keras (Keras 2) ``LearningRateSchedule``."""

from __future__ import annotations

import tf_keras

from tf_bertopt.algorithms.warmup_polynomial_decay import WarmupPolynomialDecayMixin


@tf_keras.saving.register_keras_serializable(package="tf_bertopt")
class WarmupPolynomialDecay(
    WarmupPolynomialDecayMixin, tf_keras.optimizers.schedules.LearningRateSchedule
):
    __doc__ = WarmupPolynomialDecayMixin.__doc__
