"""What the Keras 3 and tf-keras front ends share.

Flavour-neutral mixins, combined by each front end with its own Keras base
class (``tf_bertopt/keras3/``, ``tf_bertopt/tf_keras/``):

* ``BertOptimizerMixin``: the common arguments, their checks and
  ``get_config`` keys, Keras's ``exclude_from_weight_decay`` method, the
  per-variable decisions made at build time and ``get_slots``.
* ``AdamWeightDecayMixin`` and ``LambMixin``: each algorithm's signature,
  documentation, options and its call into ``tf_bertopt.update_rules`` (and,
  with ``fused=True``, into ``tf_bertopt.fused_updates``).
* ``WarmupPolynomialDecayMixin``: the schedule's Keras face over
  ``tf_bertopt.schedules.WarmupPolynomialDecaySpec``.

A front end's optimizer base supplies the Keras mechanics: slots ``_m`` and
``_v``, ``_get_variable_index``, ``_var_key``, ``_optimizer_is_built`` and
``iterations``, and its ``__init__`` accepts the arguments the algorithm
mixins pass on (see ``BertOptimizerMixin``).
"""

from __future__ import annotations

import sys
from typing import Sequence

import tensorflow as tf

from tf_bertopt import decay_reporting, fused_updates, name_matching, update_rules, validation
from tf_bertopt.schedules import WarmupPolynomialDecaySpec

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

    The other flavour's schedules are callables too, of one argument: they
    are refused here rather than failing at the first update.
    """
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
        """Updates ``variables`` (``tf.Variable`` objects) with ``fused=True``, all in one call."""
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


def _tf_variable(variable):
    # A Keras 3 variable holds its tf.Variable in `.value`; tf-keras slots are tf.Variables.
    return variable if isinstance(variable, tf.Variable) else variable.value


class AdamWeightDecayMixin:
    """Adam with decoupled weight decay, exactly as in Google's TF1 BERT.

    For each variable ``w`` with gradient ``g`` (slots ``m``, ``v`` start at 0)::

        m <- b1*m + (1-b1)*g
        v <- b2*v + (1-b2)*g^2
        u <- m / (sqrt(v) + eps)        # no bias correction; eps outside the sqrt
        u <- u + wd*w                   # only for decayed variables
        w <- w - lr*u

    Unlike Keras's ``AdamW`` there is no bias correction, epsilon is added
    outside the square root, and the decay is folded into the update. Float32
    results are bit-identical to TF1's ``AdamWeightDecayOptimizer``.

    References: Devlin et al., 2019, "BERT" (https://arxiv.org/abs/1810.04805);
    Loshchilov & Hutter, 2019, "Decoupled Weight Decay Regularization"
    (https://arxiv.org/abs/1711.05101).

    Args:
        learning_rate: float >= 0, a ``LearningRateSchedule`` (such as
            ``tf_bertopt.WarmupPolynomialDecay``, evaluated at the number of
            updates done so far) or a callable with no arguments.
        weight_decay_rate: decay rate ``wd`` >= 0. Defaults to 0.0.
        beta_1: decay of the first-moment average, in [0, 1). Defaults to 0.9.
        beta_2: decay of the second-moment average, in [0, 1). Defaults to 0.999.
        epsilon: > 0, added to ``sqrt(v)``. Defaults to 1e-6.
        exclude_from_weight_decay: regular expressions; a variable whose full
            name (Keras 3 ``variable.path``, tf-keras ``variable.name`` without
            ``:0``) matches one with ``re.search`` is not decayed. BERT uses
            ``["LayerNorm", "layer_norm", "bias"]``.
        include_in_weight_decay: regular expressions that force decay on,
            winning over ``exclude_from_weight_decay``.
        fused: update each variable and its slots in place with one
            XLA-compiled pass (small variables several per call) instead
            of TensorFlow's operations one by one: several times faster in
            a ``tf.function`` (see the README's performance section). The
            numbers stay bit-identical to TF1: the compiled code keeps TF's
            rounding (see ``tf_bertopt.fused_updates``). Needs XLA, as
            every TensorFlow build for CPU or GPU has. Defaults to False.
    """

    slot_names = ("adam_m", "adam_v")

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay_rate: float = 0.0,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-6,
        exclude_from_weight_decay: Sequence[str] | None = None,
        include_in_weight_decay: Sequence[str] | None = None,
        fused: bool = False,
        name: str = "AdamWeightDecay",
        **kwargs,
    ):
        super().__init__(
            learning_rate,
            weight_decay_rate,
            beta_1,
            beta_2,
            epsilon,
            exclude_from_weight_decay,
            include_in_weight_decay,
            name=name,
            **kwargs,
        )
        self._set_fused(fused)

    def _updated(self, index, weight, grad, m, v, learning_rate):
        return update_rules.adam_weight_decay_update(
            weight,
            grad,
            m,
            v,
            learning_rate,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay_rate=self._decay_rates[index],
        )

    def _fused_update(self, indices, variables, ms, vs, grads, learning_rate, step):
        rates = [self._decay_rates[i] for i in indices]
        self._fused_updates.adam_weight_decay(variables, ms, vs, grads, learning_rate, step, rates)


class LambMixin:
    """LAMB built on BERT's AdamWeightDecay, as the TF1 ``LAMBOptimizer`` (paper v3).

    For each variable ``w`` with gradient ``g``::

        m, v, u  as in AdamWeightDecay (decay term inside u)
        r1 = ||w||_2 ; r2 = ||u||_2                 # over the whole variable
        r  = r1/r2 if r1 > 0 and r2 > 0 else 1.0    # r = 1 if w is not adapted
        w <- w - (lr*r)*u

    Float32 results are bit-identical to the TF1 ``LAMBOptimizer``. A variable
    split into shards (a ``ShardedVariable`` of ``ParameterServerStrategy``
    with a ``variable_partitioner``, tf-keras) is one variable: its norms are
    taken over all its shards.

    Reference: You et al., "Large Batch Optimization for Deep Learning:
    Training BERT in 76 minutes" (https://arxiv.org/abs/1904.00962).

    Args:
        learning_rate: float >= 0, a ``LearningRateSchedule`` (evaluated at the
            number of updates done so far) or a callable with no arguments.
        weight_decay_rate: decay rate >= 0. Defaults to 0.01 (not 0.0 as in
            AdamWeightDecay), as the TF1 LAMBOptimizer.
        beta_1: decay of the first-moment average, in [0, 1). Defaults to 0.9.
        beta_2: decay of the second-moment average, in [0, 1). Defaults to 0.999.
        epsilon: > 0, added to ``sqrt(v)``. Defaults to 1e-6.
        exclude_from_weight_decay: regular expressions matched with
            ``re.search`` against the full variable name (Keras 3
            ``variable.path``, tf-keras ``variable.name`` without ``:0``);
            matching variables are not decayed.
        include_in_weight_decay: regular expressions that force decay on,
            winning over ``exclude_from_weight_decay``.
        exclude_from_layer_adaptation: regular expressions; matching variables
            get ``r = 1``. ``None`` (default) adapts every variable. ALBERT's
            LAMB passes the weight-decay exclusions here too.
        bias_correction: use ``m/(1-b1^(t+1))`` and ``v/(1-b2^(t+1))`` in ``u``
            (LAMB paper v5, NVIDIA). Defaults to False (the TF1 behaviour).
        weight_norm_bounds: ``(gamma_l, gamma_u)``, the paper's scaling function
            ``phi(z) = min(max(z, gamma_l), gamma_u)`` applied to ``||w||``.
            Either side may be None. Defaults to None (``phi(z) = z``).
        trust_ratio_bounds: ``(lower, upper)`` clamp of the final ratio ``r``,
            as NVIDIA's and DeepSpeed's LAMB offer. Defaults to None.
        fused: update each variable and its slots in place with one
            XLA-compiled pass (small variables several per call) instead
            of TensorFlow's operations one by one: several times faster in
            a ``tf.function`` (see the README's performance section). The
            numbers stay bit-identical to TF1: the compiled code keeps TF's
            rounding (see ``tf_bertopt.fused_updates``). Needs XLA, as
            every TensorFlow build for CPU or GPU has. Defaults to False.
    """

    slot_names = ("lamb_m", "lamb_v")

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay_rate: float = 0.01,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-6,
        exclude_from_weight_decay: Sequence[str] | None = None,
        include_in_weight_decay: Sequence[str] | None = None,
        exclude_from_layer_adaptation: Sequence[str] | None = None,
        bias_correction: bool = False,
        weight_norm_bounds: tuple[float | None, float | None] | None = None,
        trust_ratio_bounds: tuple[float | None, float | None] | None = None,
        fused: bool = False,
        name: str = "LAMB",
        **kwargs,
    ):
        super().__init__(
            learning_rate,
            weight_decay_rate,
            beta_1,
            beta_2,
            epsilon,
            exclude_from_weight_decay,
            include_in_weight_decay,
            exclude_from_layer_adaptation,
            name=name,
            **kwargs,
        )
        if not isinstance(bias_correction, bool):
            raise ValueError(f"LAMB: `bias_correction` must be True or False; received {bias_correction!r}.")
        self.bias_correction = bias_correction
        self.weight_norm_bounds = validation.bounds("LAMB", "weight_norm_bounds", weight_norm_bounds)
        self.trust_ratio_bounds = validation.bounds("LAMB", "trust_ratio_bounds", trust_ratio_bounds)
        self._set_fused(fused)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "exclude_from_layer_adaptation": list(self.name_rules.exclude_from_layer_adaptation),
                "bias_correction": self.bias_correction,
                "weight_norm_bounds": self.weight_norm_bounds,
                "trust_ratio_bounds": self.trust_ratio_bounds,
            }
        )
        return config

    updates_shards_together = True

    def _lamb_options(self, index):
        return dict(
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay_rate=self._decay_rates[index],
            layer_adaptation=self._layer_adaptation[index],
            bias_correction=self.bias_correction,
            weight_norm_bounds=self.weight_norm_bounds,
            trust_ratio_bounds=self.trust_ratio_bounds,
        )

    def _updated(self, index, weight, grad, m, v, learning_rate):
        return update_rules.lamb_update(weight, grad, m, v, learning_rate, self.iterations, **self._lamb_options(index))

    def _prepare_fused_updates(self, var_list) -> None:
        adapted = [v for v, adapt in zip(var_list, self._layer_adaptation) if adapt]
        self._fused_updates.reserve_norm_scratch(adapted)

    def _fused_update(self, indices, variables, ms, vs, grads, learning_rate, step):
        self._fused_updates.lamb(
            variables,
            ms,
            vs,
            grads,
            learning_rate,
            step,
            [self._decay_rates[i] for i in indices],
            [self._layer_adaptation[i] for i in indices],
            self.weight_norm_bounds,
            self.trust_ratio_bounds,
            self.bias_correction,
        )

    def _updated_shards(self, indices, weights, grads, ms, vs, learning_rate, placement=None):
        # One variable, one decision: the first shard's name decides for all.
        return update_rules.lamb_update_shards(
            weights,
            grads,
            ms,
            vs,
            learning_rate,
            self.iterations,
            placement=placement,
            **self._lamb_options(indices[0]),
        )


class WarmupPolynomialDecayMixin:
    """BERT's learning rate: linear warmup, then polynomial decay counted from step 0.

    ::

        decay(t) = (init - end) * (1 - min(t, T)/T)^power + end
        lr(t)    = init * t/W  if t < W  else  decay(t)

    ``t`` is the number of optimizer updates done so far. Float32 values are
    bit-identical to TF1's ``polynomial_decay`` plus BERT's warmup.

    Args:
        initial_learning_rate: peak rate ``init`` >= 0.
        decay_steps: ``T`` > 0, the step at which the rate reaches
            ``end_learning_rate`` (BERT's ``num_train_steps``).
        warmup_steps: ``W`` >= 0; 0 disables warmup.
        end_learning_rate: ``end`` >= 0. Defaults to 0.0.
        power: > 0, the polynomial's power. Defaults to 1.0 (linear).
        cycle: restart the decay every ``T`` steps (``T`` becomes
            ``T*ceil(t/T)``). Defaults to False.
        decay_start: ``"step_0"`` (BERT, TF Model Garden) or ``"warmup_end"``
            (Hugging Face: decay from ``W`` to ``T`` over ``T - W`` steps).
        warmup_power: warmup follows ``(t/W)^warmup_power`` (Model Garden's
            ``WarmUp`` power). Defaults to 1.0.
        warmup_initial_learning_rate: warmup starts here instead of 0 (Model
            Garden's ``LinearWarmup``). Defaults to 0.0.
        name: optional name scope.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        warmup_steps: int = 0,
        end_learning_rate: float = 0.0,
        power: float = 1.0,
        cycle: bool = False,
        decay_start: str = "step_0",
        warmup_power: float = 1.0,
        warmup_initial_learning_rate: float = 0.0,
        name: str | None = None,
    ):
        super().__init__()
        self.spec = WarmupPolynomialDecaySpec(
            initial_learning_rate,
            decay_steps,
            warmup_steps,
            end_learning_rate,
            power,
            cycle,
            decay_start,
            warmup_power,
            warmup_initial_learning_rate,
            name,
        )

    def get_config(self):
        return self.spec.to_config()

    def __call__(self, step):
        return self.spec(step)

    def __getattr__(self, attribute):
        # initial_learning_rate, decay_steps, ... read through to the spec.
        spec = self.__dict__.get("spec")
        if spec is not None and attribute in spec.__dataclass_fields__:
            return getattr(spec, attribute)
        raise AttributeError(attribute)
