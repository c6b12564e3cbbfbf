"""What AdamWeightDecay and LAMB share as Keras 3 optimizers.

The adapter between Keras 3's ``Optimizer`` and ``tf_bertopt.update_rules``:
slots, per-variable decisions made at build time, the learning rate per
optimizer update, sparse gradients and global-norm clipping. The formulas
live in ``update_rules`` only.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_bertopt import decay_reporting, name_matching, validation

if keras.backend.backend() != "tensorflow":  # pragma: no cover - depends on the environment
    raise ImportError(
        "tf_bertopt's Keras 3 optimizers need the TensorFlow backend; "
        f"KERAS_BACKEND is {keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

KERAS_KEYWORDS_DOC = """
    Standard Keras keywords (``clipnorm``, ``clipvalue``, ``global_clipnorm``,
    ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``,
    ``loss_scale_factor``, ``gradient_accumulation_steps``, ``name``) work as
    in every Keras optimizer, with three deliberate differences:

    * ``global_clipnorm`` clips with ``tf.clip_by_global_norm`` (as TF1 BERT
      did, bit for bit) and, under ``tf.distribute``, clips the gradient
      summed over replicas, so N replicas give the numbers of one device.
    * With ``gradient_accumulation_steps``, the learning-rate schedule (and
      LAMB's bias correction) advance once per optimizer update, not per
      micro-batch: BERT's ``num_train_steps`` counts updates.
    * Keras's ``weight_decay`` is refused: use ``weight_decay_rate``, which
      this optimizer applies itself (two decays would double it).
"""


def checked_learning_rate(owner: str, learning_rate):
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule) or callable(learning_rate):
        return learning_rate
    return validation.non_negative(owner, "learning_rate", learning_rate)


def _dense(gradient):
    # Repeated rows of an IndexedSlices are summed, exactly as TF1 did when it
    # fed one to dense math.
    return tf.convert_to_tensor(gradient) if isinstance(gradient, tf.IndexedSlices) else gradient


class BertOptimizer(keras.optimizers.Optimizer):
    """Base of the Keras 3 optimizers; subclasses set ``slot_names`` and ``_updated``."""

    slot_names: tuple[str, str] = ("m", "v")

    def __init__(
        self,
        learning_rate,
        weight_decay_rate,
        beta_1,
        beta_2,
        epsilon,
        exclude_from_weight_decay,
        include_in_weight_decay,
        exclude_from_layer_adaptation=None,
        *,
        name,
        weight_decay=None,
        **kwargs,
    ):
        owner = type(self).__name__
        if weight_decay is not None:
            raise ValueError(
                f"{owner}: Keras's `weight_decay` is not used by this optimizer (it would decay a "
                f"second time, by Keras's own rule); pass weight_decay_rate={weight_decay!r} instead. "
                f"Received weight_decay={weight_decay!r}."
            )
        for clip in ("clipnorm", "clipvalue", "global_clipnorm"):
            if kwargs.get(clip) is not None:
                validation.positive(owner, clip, kwargs[clip])
        super().__init__(learning_rate=checked_learning_rate(owner, learning_rate), name=name, **kwargs)
        self.weight_decay_rate = validation.non_negative(owner, "weight_decay_rate", weight_decay_rate)
        self.beta_1 = validation.beta(owner, "beta_1", beta_1)
        self.beta_2 = validation.beta(owner, "beta_2", beta_2)
        self.epsilon = validation.positive(owner, "epsilon", epsilon)
        self.name_rules = name_matching.NameRules(
            name_matching.compile_patterns(owner, "exclude_from_weight_decay", exclude_from_weight_decay),
            name_matching.compile_patterns(owner, "include_in_weight_decay", include_in_weight_decay),
            name_matching.compile_patterns(owner, "exclude_from_layer_adaptation", exclude_from_layer_adaptation),
        )
        self._variables_excluded_from_decay: set = set()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "weight_decay_rate": self.weight_decay_rate,
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "exclude_from_weight_decay": list(self.name_rules.exclude_from_weight_decay),
                "include_in_weight_decay": list(self.name_rules.include_in_weight_decay),
            }
        )
        return config

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Keras's API, mapped onto this optimizer's own exclusions.

        ``var_names`` are added to ``exclude_from_weight_decay`` (and so to
        ``get_config``); they are matched against the full variable path, not
        only the leaf name as Keras does. ``var_list`` excludes those exact
        variables (not serializable). Must be called before the optimizer is built.
        """
        if self.built:
            raise ValueError(
                f"{type(self).__name__}.exclude_from_weight_decay() must be called before the "
                "optimizer is built (before its first apply_gradients or build)."
            )
        owner = type(self).__name__
        added = name_matching.compile_patterns(owner, "var_names", var_names)
        self.name_rules = name_matching.NameRules(
            self.name_rules.exclude_from_weight_decay + added,
            self.name_rules.include_in_weight_decay,
            self.name_rules.exclude_from_layer_adaptation,
        )
        self._variables_excluded_from_decay |= {self._var_key(v) for v in var_list or ()}

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, list(self.slot_names))
        names = [name_matching.variable_name(v) for v in var_list]
        decay_reporting.warn_unmatched_patterns(type(self).__name__, self.name_rules, names)
        self._decay_rates = [
            self.weight_decay_rate
            if self.name_rules.uses_weight_decay(n) and self._var_key(v) not in self._variables_excluded_from_decay
            else 0.0
            for n, v in zip(names, var_list)
        ]
        self._layer_adaptation = [self.name_rules.uses_layer_adaptation(n) for n in names]

    def get_slots(self, variable):
        """The ``(m, v)`` slot variables of a model variable of the built optimizer."""
        index = self._get_variable_index(variable)
        return self._m[index], self._v[index]

    def uses_weight_decay(self, variable) -> bool:
        """Whether the built optimizer decays ``variable``."""
        return bool(self._decay_rates[self._get_variable_index(variable)])

    def uses_layer_adaptation(self, variable) -> bool:
        """Whether the built optimizer applies LAMB's trust ratio to ``variable``."""
        return self._layer_adaptation[self._get_variable_index(variable)]

    def _get_current_learning_rate(self):
        # `self.iterations` counts optimizer updates (Keras divides by the
        # accumulation steps); Keras itself feeds schedules the micro-batch count.
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    def _clip_gradients(self, grads):
        grads = [_dense(g) for g in grads]
        if self.global_clipnorm:
            return grads  # clipped in _backend_update_step, after the cross-replica sum
        return super()._clip_gradients(grads)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        grads = [g for g, _ in self._all_reduce_sum_gradients(list(zip(grads, variables)))]
        if self.global_clipnorm:
            grads, _ = tf.clip_by_global_norm(grads, self.global_clipnorm)
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_tf_update_step, self._distribution_strategy, list(zip(grads, variables)), learning_rate
        )

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        m, v = self._m[index], self._v[index]
        weight, grad = tf.convert_to_tensor(variable), tf.cast(gradient, variable.dtype)
        new_weight, new_m, new_v = self._updated(
            index, weight, grad, tf.convert_to_tensor(m), tf.convert_to_tensor(v), tf.cast(learning_rate, variable.dtype)
        )
        self.assign(m, new_m)
        self.assign(v, new_v)
        self.assign(variable, new_weight)

    def _updated(self, index, weight, grad, m, v, learning_rate):
        raise NotImplementedError
