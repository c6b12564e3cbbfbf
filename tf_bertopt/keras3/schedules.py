"""``WarmupPolynomialDecay`` as a Keras 3 ``LearningRateSchedule``."""

from __future__ import annotations

import keras

from tf_bertopt.algorithms.warmup_polynomial_decay import WarmupPolynomialDecayMixin


@keras.saving.register_keras_serializable(package="tf_bertopt")
class WarmupPolynomialDecay(WarmupPolynomialDecayMixin, keras.optimizers.schedules.LearningRateSchedule):
    __doc__ = WarmupPolynomialDecayMixin.__doc__
