"""What the Keras 3 and tf-keras front ends share.

``BertOptimizerMixin`` is combined by each front end with its own Keras base
class (``tf_bertopt/keras3/``, ``tf_bertopt/tf_keras/``): the common
arguments, their checks and ``get_config`` keys, Keras's
``exclude_from_weight_decay`` method, the per-variable decisions made at build
time and ``get_slots``. Each algorithm's signature, documentation and call
into ``tf_bertopt.update_rules`` is a mixin of its own in
``tf_bertopt.algorithms``, flavour-neutral too.

A front end's optimizer base supplies the Keras mechanics: slots ``_m`` and
``_v``, ``_get_variable_index``, ``_var_key``, ``_optimizer_is_built`` and
``iterations``, and its ``__init__`` accepts the arguments the algorithm
mixins pass on (see ``BertOptimizerMixin``).
"""

from __future__ import annotations

import logging
import sys

import tensorflow as tf

from tf_bertopt import decay_reporting, fused_updates, name_matching, update_rules, validation

logger = logging.getLogger("tf_bertopt")
_logged: set = set()


def log_once(message: str) -> None:
    """Logs ``message`` (at INFO, logger ``tf_bertopt``) the first time it comes in this process."""
    if message not in _logged:
        _logged.add(message)
        logger.info(message)


FLAVOUR_NAMES = {"keras3": "Keras 3", "tf_keras": "tf-keras (Keras 2)"}
# Where each flavour rejects an optimizer it does not know, with an error
# message that formats the object: (module, function).
_REJECTING_FUNCTIONS = {
    "keras3": {("keras.src.optimizers", "get")},  # what compile(optimizer=...) calls
    "tf_keras": {
        ("tf_keras.src.optimizers", "get"),
        ("tf_keras.src.mixed_precision.loss_scale_optimizer", "__call__"),  # LossScaleOptimizer(...)
    },
}


def refuse_keras_weight_decay(owner: str, weight_decay) -> None:
    """Keras's own ``weight_decay`` would decay a second time, by Keras's rule."""
    if weight_decay is not None:
        raise ValueError(
            f"{owner}: Keras's `weight_decay` is not used by this optimizer (it would decay a "
            f"second time, by Keras's own rule); pass weight_decay_rate={weight_decay!r} instead. "
            f"Received weight_decay={weight_decay!r}."
        )


def check_clip_arguments(owner: str, keras_kwargs: dict) -> None:
    for clip in ("clipnorm", "clipvalue", "global_clipnorm"):
        if keras_kwargs.get(clip) is not None:
            validation.positive(owner, clip, keras_kwargs[clip])


def checked_learning_rate(owner: str, learning_rate, schedule_class: type, flavour: str):
    """A number >= 0, a ``schedule_class`` or a callable with no arguments.

    A scalar tensor or variable stands for the number it holds now, read once
    (as ``tf_keras.optimizers.Adam`` copies it into its own variable); pass
    ``lambda: variable`` for a rate read at every update. The other flavour's
    schedules are callables too, of one argument: they are refused here
    rather than failing at the first update.
    """
    if _is_tensor_like(learning_rate):
        return validation.non_negative(owner, "learning_rate", _number_held(owner, learning_rate))
    if isinstance(learning_rate, schedule_class):
        return learning_rate
    foreign = [c for c in type(learning_rate).__mro__ if c.__name__ == "LearningRateSchedule"]
    if foreign:
        other = _other(flavour)
        raise TypeError(
            f"{owner}: `learning_rate` is a {foreign[0].__module__.split('.')[0]} "
            f"LearningRateSchedule ({type(learning_rate).__name__}), but this is the "
            f"{FLAVOUR_NAMES[flavour]} optimizer, which needs a {FLAVOUR_NAMES[flavour]} schedule. "
            f"Use tf_bertopt.{flavour}.WarmupPolynomialDecay, or the optimizer from "
            f"tf_bertopt.{other} for {FLAVOUR_NAMES[other]} models."
        )
    if callable(learning_rate):
        return learning_rate
    return validation.non_negative(owner, "learning_rate", learning_rate)


def _is_tensor_like(value) -> bool:
    # A Keras 3 variable is neither a tf.Tensor nor a tf.Variable; it converts through __tf_tensor__.
    return tf.is_tensor(value) or isinstance(value, tf.Variable) or hasattr(value, "__tf_tensor__")


def _number_held(owner: str, value) -> float:
    """The number in a scalar tensor or variable, as a Python float."""
    tensor = tf.convert_to_tensor(value)
    known = tf.get_static_value(tensor)
    if known is None or tensor.shape.rank != 0 or not (tensor.dtype.is_floating or tensor.dtype.is_integer):
        raise ValueError(
            f"{owner}: `learning_rate` must be a finite number >= 0 (a scalar tensor or variable holding one, "
            f"read once, is accepted); received learning_rate={value!r}."
        )
    return float(known)


def _other(flavour: str) -> str:
    return next(f for f in FLAVOUR_NAMES if f != flavour)


def wrong_flavour_message(optimizer) -> str:
    name, flavour = type(optimizer).__name__, optimizer.flavour
    other = _other(flavour)
    return (
        f"tf_bertopt.{flavour}.{name} is a {FLAVOUR_NAMES[flavour]} optimizer; it cannot be used by "
        f"{FLAVOUR_NAMES[other]}. Use tf_bertopt.{other}.{name} with {FLAVOUR_NAMES[other]} models "
        f"and wrappers. (tf_bertopt.{name} follows `tf.keras`: the tf-keras class when "
        "TF_USE_LEGACY_KERAS=1 is set before TensorFlow is imported, the Keras 3 class otherwise.)"
    )


class BertOptimizerMixin:
    """Arguments, config and per-variable decisions shared by both algorithms.

    The front end's ``__init__`` takes ``(learning_rate, weight_decay_rate,
    beta_1, beta_2, epsilon, exclude_from_weight_decay,
    include_in_weight_decay, exclude_from_layer_adaptation=None, *, name,
    weight_decay=None, **keras_kwargs)`` and calls ``_set_hyperparameters``;
    its ``build`` creates the slots and calls ``_decide_per_variable``.
    """

    flavour: str = ""
    slot_names: tuple[str, str] = ("m", "v")

    def _set_hyperparameters(
        self,
        weight_decay_rate,
        beta_1,
        beta_2,
        epsilon,
        exclude_from_weight_decay,
        include_in_weight_decay,
        exclude_from_layer_adaptation,
    ) -> None:
        owner = type(self).__name__
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
                "fused": self.fused,
            }
        )
        return config

    def _set_fused(self, fused) -> None:
        self.fused = validation.boolean(type(self).__name__, "fused", fused)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Keras's API, mapped onto this optimizer's own exclusions.

        ``var_names`` are added to ``exclude_from_weight_decay`` (and so to
        ``get_config``); they are matched against the full variable name, not
        only the leaf name as Keras 3 does. ``var_list`` excludes those exact
        variables (not serializable). Must be called before the optimizer is built.
        """
        if self._optimizer_is_built():
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

    def _decide_per_variable(self, var_list) -> None:
        """Weight decay and layer adaptation, decided once per variable by name."""
        names = [name_matching.variable_name(v) for v in var_list]
        decay_reporting.warn_unmatched_patterns(type(self).__name__, self.name_rules, names)
        self._decay_rates = [
            self.weight_decay_rate
            if self.name_rules.uses_weight_decay(n) and self._var_key(v) not in self._variables_excluded_from_decay
            else 0.0
            for n, v in zip(names, var_list)
        ]
        self._layer_adaptation = [self.name_rules.uses_layer_adaptation(n) for n in names]
        self._fused_updates = None
        if self.fused:
            self._fused_updates = fused_updates.FusedUpdates(self.beta_1, self.beta_2, self.epsilon)
            self._prepare_fused_updates(var_list)

    def _prepare_fused_updates(self, var_list) -> None:
        """Whatever the algorithm's fused update needs made at build time."""

    def _fused_update_all(self, grads, variables, learning_rate) -> None:
        """Updates ``variables`` (``tf.Variable`` objects) by the fast path, planned together."""
        indices = [self._get_variable_index(variable) for variable in variables]
        self._fused_update(
            indices,
            list(variables),
            [_tf_variable(self._m[i]) for i in indices],
            [_tf_variable(self._v[i]) for i in indices],
            [tf.cast(update_rules.dense_gradient(g), v.dtype) for g, v in zip(grads, variables)],
            tf.convert_to_tensor(learning_rate),
            tf.convert_to_tensor(self.iterations),
        )

    def _fused_update_per_replica(self, distribution, grads, variables, learning_rate) -> bool:
        """Under a mirrored strategy, each replica's variables planned together, as without one.

        ``extended.update`` updates one variable where each of its copies
        lives; driven by the first variable, it hands over each replica's
        gradients in turn, and the other variables' copies on that device
        join it, so that small variables are packed and grouped there too.
        Returns False, having updated nothing, unless the strategy mirrors
        every variable on the same devices.
        """
        if not isinstance(distribution, _MIRRORING_STRATEGIES) or not variables:
            return False
        devices = {tuple(component.device for component in distribution.experimental_local_results(v)) for v in variables}
        if len(devices) != 1 or not all(isinstance(v, tf.distribute.DistributedValues) for v in variables):
            return False

        def update_replica(first, replica_learning_rate, *replica_grads):
            local = [first] + [fused_updates.local_variable(v, first.device) for v in variables[1:]]
            self._fused_update_all(replica_grads, local, replica_learning_rate)

        # A learning rate, like a gradient, may be a per-replica value: `update` hands each replica its own.
        distribution.extended.update(variables[0], update_replica, args=(learning_rate, *grads), group=False)
        return True

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

    def __format__(self, format_spec):
        # The other flavour's `optimizers.get` (what `compile` calls) ends, for
        # an object it does not know, in ValueError(f"Could not interpret
        # optimizer identifier: {identifier}"). Being formatted there is the
        # one moment we can tell the user which class they need instead.
        caller = sys._getframe(1)
        if (caller.f_globals.get("__name__"), caller.f_code.co_name) in _REJECTING_FUNCTIONS[_other(self.flavour)]:
            raise TypeError(wrong_flavour_message(self))
        return super().__format__(format_spec)

    # Whether the update of one shard of a sharded variable needs the other
    # shards (LAMB's norms are over the whole variable).
    updates_shards_together: bool = False

    def _updated(self, index, weight, grad, m, v, learning_rate):
        """``(new_weight, new_m, new_v)`` of the variable at ``index``."""
        raise NotImplementedError

    def _updated_shards(self, indices, weights, grads, ms, vs, learning_rate, placement=None):
        """``[(new_weight, new_m, new_v)]`` of the shards at ``indices``, which together are one variable."""
        raise NotImplementedError

    def _fused_update(self, indices, variables, ms, vs, grads, learning_rate, step) -> None:
        """The in-place update of the variables at ``indices`` through ``tf_bertopt.fused_updates``."""
        raise NotImplementedError


# Strategies whose variables are mirrored, one copy per replica device (see _fused_update_per_replica).
_MIRRORING_STRATEGIES = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)


def _tf_variable(variable):
    # A Keras 3 variable holds its tf.Variable in `.value`; tf-keras slots are tf.Variables.
    return variable if isinstance(variable, tf.Variable) else variable.value
