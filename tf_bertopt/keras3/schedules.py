"""``WarmupPolynomialDecay`` as a Keras 3 ``LearningRateSchedule``."""

from __future__ import annotations

import keras

from tf_bertopt import front_end


@keras.saving.register_keras_serializable(package="tf_bertopt")
class WarmupPolynomialDecay(front_end.WarmupPolynomialDecayMixin, keras.optimizers.schedules.LearningRateSchedule):
    __doc__ = front_end.WarmupPolynomialDecayMixin.__doc__
