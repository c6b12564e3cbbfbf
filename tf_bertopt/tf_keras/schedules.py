"""``WarmupPolynomialDecay`` as a tf-keras (Keras 2) ``LearningRateSchedule``."""

from __future__ import annotations

import tf_keras

from tf_bertopt import front_end


@tf_keras.saving.register_keras_serializable(package="tf_bertopt")
class WarmupPolynomialDecay(
    front_end.WarmupPolynomialDecayMixin, tf_keras.optimizers.schedules.LearningRateSchedule
):
    __doc__ = front_end.WarmupPolynomialDecayMixin.__doc__
