"""Variable updates compiled by XLA into one pass over memory, bit-identical to TF1.

An optimizer step is memory-bound. Run op by op, as TF does in a
``tf.function``, AdamWeightDecay's dozen element-wise operations each read and
write whole variable-sized tensors, and every new tensor is memory the
allocator must find (on Linux, pages the kernel must map and zero). Compiled
by XLA into one loop that updates the variable and its slots in place, the
step reads ``w, g, m, v`` and writes ``w, m, v`` once: 28 bytes per float32
parameter, the floor.

The compiled functions (``tf.function(jit_compile=True)``) are called from the
ordinary (not XLA-compiled) step, or inlined into a ``jit_compile=True`` one:

* a variable of ``PACK_MAX_ELEMENTS`` or more is updated in place by its own
  call;
* smaller ones, where the cost is per operation rather than per byte, are
  packed: those of one dtype and treatment are concatenated, updated by one
  call, split and assigned back.

The math is ``tf_bertopt.update_rules``. What keeps the results bit-identical
to TF's op-by-op kernels, and so to TF1:

* every product that is then added goes through :func:`separately_rounded`,
  which stops XLA from contracting ``a*b + c`` into a fused multiply-add;
* LAMB's norms are summed by TF's own ``Sum`` kernel outside the compiled
  code, since a sum's rounding depends on its order. The compiled first pass
  writes ``w^2`` and ``u^2`` for TF to sum (into a reused buffer, for a large
  variable); the second pass recomputes ``u`` from the new ``m``, ``v`` (same
  operations, same bits) rather than storing it. For a large variable LAMB
  moves ``8`` (``w^2``) ``+ 4`` (sum) ``+ 28`` (moments, ``u^2``) ``+ 4``
  (sum) ``+ 16`` (``w``) = 60 bytes per parameter, against a floor of 40.

The functions take plain ``tf.Variable`` objects (Keras 3 ``variable.value``,
tf-keras variables as they are), so both Keras flavours share them.
"""

from __future__ import annotations

import collections
from typing import Sequence

import tensorflow as tf

from tf_bertopt import update_rules

# Variables with fewer elements are packed together (see the module docstring).
PACK_MAX_ELEMENTS = 2**16

_BITS = {2: tf.int16, 4: tf.int32, 8: tf.int64}


def separately_rounded(step):
    """A ``rounded`` hook for ``update_rules`` that blocks fused multiply-adds.

    The product's bits are OR-ed with zero through an integer view. The zero
    is ``cast(step < 0)`` of the optimizer's (never negative) step counter, a
    run-time value, so neither XLA nor LLVM can fold the OR away, and the
    product must be rounded to its dtype before it is added, as TF rounds it.
    """

    def rounded(product):
        bits = _BITS[product.dtype.size]
        zero = tf.cast(step < 0, bits)
        return tf.bitcast(tf.bitwise.bitwise_or(tf.bitcast(product, bits), zero), product.dtype)

    return rounded


def local_variable(variable, device: str):
    """The component on ``device`` of a ``tf.distribute`` variable; any other variable as it is.

    Inside ``strategy.extended.update`` the model variable handed over is
    already the local one, but an optimizer's slots are still distributed.
    """
    if isinstance(variable, tf.distribute.DistributedValues):
        for component in tf.distribute.get_strategy().experimental_local_results(variable):
            if component.device == device:
                return component
    return variable


def batches(sizes: Sequence[int], keys: Sequence) -> list[list[int]]:
    """Indices of the updates made together: each variable of at least
    ``PACK_MAX_ELEMENTS`` alone, smaller ones packed by equal ``key``."""
    alone, packed = [], collections.defaultdict(list)
    for index, (size, key) in enumerate(zip(sizes, keys)):
        if size < PACK_MAX_ELEMENTS:
            packed[key].append(index)
        else:
            alone.append([index])
    return alone + list(packed.values())


def _pack(tensors):
    return tf.concat([tf.reshape(tensor, [-1]) for tensor in tensors], axis=0)


def _assign_unpacked(variables, packed):
    pieces = tf.split(packed, [variable.shape.num_elements() for variable in variables])
    for variable, piece in zip(variables, pieces):
        variable.assign(tf.reshape(piece, variable.shape))


class FusedUpdates:
    """Compiled in-place updates for one optimizer's hyper-parameters.

    Every method takes lists: variables, their slots ``ms``, ``vs`` and
    their gradients (already cast to the variable's dtype), with the
    per-variable options; ``learning_rate`` (cast to each variable's dtype
    here) and ``step`` (the optimizer's update count, an integer tensor) are
    scalars.

    Args:
        beta_1, beta_2, epsilon: the optimizer's hyper-parameters, compiled in.
    """

    def __init__(self, beta_1: float, beta_2: float, epsilon: float):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        compiled = lambda body: tf.function(body, jit_compile=True, autograph=False)  # noqa: E731
        self._adam_in_place = compiled(self._adam_in_place_body)
        self._adam_packed = compiled(self._adam_math)
        self._lamb_unadapted_in_place = compiled(self._lamb_unadapted_in_place_body)
        self._lamb_unadapted_packed = compiled(self._lamb_unadapted_math)
        self._lamb_moments_in_place = compiled(self._lamb_moments_in_place_body)
        self._lamb_moments_packed = compiled(self._lamb_moments_math)
        self._lamb_squares_into = compiled(self._lamb_squares_into_body)
        self._lamb_moments_into = compiled(self._lamb_moments_into_body)
        self._lamb_apply_in_place = compiled(self._lamb_apply_in_place_body)
        self._lamb_apply_packed = compiled(self._lamb_apply_math)
        self._scratch: dict = {}
        self._last_norm: dict = {}

    def reserve_norm_scratch(self, variables) -> None:
        """Creates the buffers LAMB's squares are written to, one per dtype.

        Call it where the optimizer creates its slots (same
        ``tf.distribute`` scope), with the variables LAMB adapts. Each one of
        ``PACK_MAX_ELEMENTS`` or more then has ``w^2`` and ``u^2`` written in
        turn into the same persistent buffer, as large as the largest of
        them, rather than into new tensors: a new variable-sized tensor per
        step can cost more than the pass itself where the allocator maps
        fresh pages for it (glibc does above 32 MiB).
        """
        sizes: dict = {}
        for variable in variables:
            dtype, size = tf.as_dtype(variable.dtype), variable.shape.num_elements()
            if size >= PACK_MAX_ELEMENTS:
                sizes[dtype] = max(size, sizes.get(dtype, 0))
        with tf.init_scope():
            for dtype, size in sizes.items():
                if dtype not in self._scratch or self._scratch[dtype].shape[0] < size:
                    self._scratch[dtype] = tf.Variable(tf.zeros([size], dtype), trainable=False, name="lamb_squares")

    def adam_weight_decay(self, variables, ms, vs, grads, learning_rate, step, weight_decay_rates: Sequence[float]):
        """AdamWeightDecay on each variable and its slots, in place."""
        ms, vs = _local_slots(variables, ms, vs)
        keys = [_key(variable, rate) for variable, rate in zip(variables, weight_decay_rates)]
        for batch in batches([variable.shape.num_elements() for variable in variables], keys):
            variables_, ms_, vs_, grads_ = _select(batch, variables, ms, vs, grads)
            rate = weight_decay_rates[batch[0]]
            if len(batch) == 1 and variables_[0].shape.num_elements() >= PACK_MAX_ELEMENTS:
                self._adam_in_place(*variables_, *ms_, *vs_, *grads_, learning_rate, step, rate)
                continue
            new = self._adam_packed(*map(_pack, (variables_, grads_, ms_, vs_)), learning_rate, step, rate)
            for targets, packed in zip((variables_, ms_, vs_), new):
                _assign_unpacked(targets, packed)

    def lamb(
        self,
        variables,
        ms,
        vs,
        grads,
        learning_rate,
        step,
        weight_decay_rates: Sequence[float],
        layer_adaptations: Sequence[bool],
        weight_norm_bounds=None,
        trust_ratio_bounds=None,
        bias_correction: bool = False,
    ):
        """LAMB on each variable and its slots, in place."""
        ms, vs = _local_slots(variables, ms, vs)
        keys = [_key(*options) for options in zip(variables, weight_decay_rates, layer_adaptations)]
        bounds = (weight_norm_bounds, trust_ratio_bounds)
        for batch in batches([variable.shape.num_elements() for variable in variables], keys):
            selected = _select(batch, variables, ms, vs, grads)
            options = (weight_decay_rates[batch[0]], bias_correction)
            alone = len(batch) == 1 and selected[0][0].shape.num_elements() >= PACK_MAX_ELEMENTS
            if alone:
                self._lamb_alone(*(x[0] for x in selected), learning_rate, step, layer_adaptations[batch[0]], bounds, options)
            else:
                self._lamb_packed(*selected, learning_rate, step, layer_adaptations[batch[0]], bounds, options)

    def _lamb_alone(self, variable, m, v, grad, learning_rate, step, adapted, bounds, options):
        if not adapted:
            self._lamb_unadapted_in_place(variable, m, v, grad, learning_rate, step, *options)
            return
        size = variable.shape.num_elements()
        scratch = self._scratch.get(tf.as_dtype(variable.dtype))
        if scratch is None or scratch.shape[0] < size:
            weight_squares, update_squares = self._lamb_moments_in_place(variable, m, v, grad, step, *options)
            weight_norm = update_rules.norm_of_squares(weight_squares)
            update_norm = update_rules.norm_of_squares(update_squares)
        else:
            # The data dependencies order the buffer's uses: each write waits
            # for the sum of what the previous write put there.
            scratch = local_variable(scratch, variable.device)
            self._lamb_squares_into(variable, scratch, self._previous_norm(variable))
            weight_norm = update_rules.norm_of_squares(scratch[:size])
            self._lamb_moments_into(variable, m, v, grad, step, scratch, weight_norm, *options)
            update_norm = update_rules.norm_of_squares(scratch[:size])
            self._last_norm[variable.device] = update_norm
        ratio = update_rules.trust_ratio(weight_norm, update_norm, *bounds)
        self._lamb_apply_in_place(variable, m, v, learning_rate, ratio, step, *options)

    def _lamb_packed(self, variables, ms, vs, grads, learning_rate, step, adapted, bounds, options):
        weight, grad, m, v = map(_pack, (variables, grads, ms, vs))
        if not adapted:
            new = self._lamb_unadapted_packed(weight, grad, m, v, learning_rate, step, *options)
        else:
            new_m, new_v, weight_squares, update_squares = self._lamb_moments_packed(weight, grad, m, v, step, *options)
            sizes = [variable.shape.num_elements() for variable in variables]
            norms = [
                tf.stack([update_rules.norm_of_squares(piece) for piece in tf.split(squares, sizes)])
                for squares in (weight_squares, update_squares)
            ]
            ratios = tf.repeat(update_rules.trust_ratio(*norms, *bounds), sizes)
            new_weight = self._lamb_apply_packed(weight, new_m, new_v, learning_rate, ratios, step, *options)
            new = (new_weight, new_m, new_v)
        for targets, packed in zip((variables, ms, vs), new):
            _assign_unpacked(targets, packed)

    def _previous_norm(self, variable):
        # The last norm summed from this device's buffer, if it belongs to the graph being built.
        previous = self._last_norm.get(variable.device)
        if previous is None or tf.executing_eagerly() or previous.graph is not tf.compat.v1.get_default_graph():
            return tf.zeros([], variable.dtype)
        return previous

    # The math, on tensors.

    def _lamb_arguments(self, step, weight_decay_rate, bias_correction):
        return dict(
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay_rate=weight_decay_rate,
            bias_correction=bias_correction,
            rounded=separately_rounded(step),
        )

    def _adam_math(self, weight, grad, m, v, learning_rate, step, weight_decay_rate):
        return update_rules.adam_weight_decay_update(
            weight,
            grad,
            m,
            v,
            tf.cast(learning_rate, weight.dtype),
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay_rate=weight_decay_rate,
            rounded=separately_rounded(step),
        )

    def _lamb_unadapted_math(self, weight, grad, m, v, learning_rate, step, weight_decay_rate, bias_correction):
        # r = 1: one pass, as AdamWeightDecay.
        arguments = self._lamb_arguments(step, weight_decay_rate, bias_correction)
        update, new_m, new_v = update_rules.lamb_direction(weight, grad, m, v, step, **arguments)
        step_size = tf.cast(learning_rate, weight.dtype)
        return update_rules.lamb_apply(weight, update, step_size, None, arguments["rounded"]), new_m, new_v

    def _lamb_moments_math(self, weight, grad, m, v, step, weight_decay_rate, bias_correction):
        # First pass: the new moments, and w^2 and u^2 for TF to sum.
        arguments = self._lamb_arguments(step, weight_decay_rate, bias_correction)
        update, new_m, new_v = update_rules.lamb_direction(weight, grad, m, v, step, **arguments)
        return new_m, new_v, tf.square(weight), tf.square(update)

    def _lamb_apply_math(self, weight, m, v, learning_rate, ratio, step, weight_decay_rate, bias_correction):
        # Second pass: u again from the new moments (the same operations give
        # the same bits), then w - (lr*r)*u.
        arguments = self._lamb_arguments(step, weight_decay_rate, bias_correction)
        update = update_rules.lamb_direction_from_moments(weight, m, v, step, **arguments)
        step_size = tf.cast(learning_rate, weight.dtype)
        return update_rules.lamb_apply(weight, update, step_size, ratio, arguments["rounded"])

    # The in-place bodies. Each returns nothing it assigns: a returned variable
    # value would keep XLA from updating that variable in place.

    def _adam_in_place_body(self, variable, m, v, grad, learning_rate, step, weight_decay_rate):
        new = self._adam_math(variable.read_value(), grad, m.read_value(), v.read_value(), learning_rate, step, weight_decay_rate)
        for target, value in zip((variable, m, v), new):
            target.assign(value)

    def _lamb_unadapted_in_place_body(self, variable, m, v, grad, learning_rate, step, *options):
        new = self._lamb_unadapted_math(variable.read_value(), grad, m.read_value(), v.read_value(), learning_rate, step, *options)
        for target, value in zip((variable, m, v), new):
            target.assign(value)

    def _lamb_moments_in_place_body(self, variable, m, v, grad, step, *options):
        new_m, new_v, weight_squares, update_squares = self._lamb_moments_math(
            variable.read_value(), grad, m.read_value(), v.read_value(), step, *options
        )
        m.assign(new_m)
        v.assign(new_v)
        return weight_squares, update_squares

    def _lamb_squares_into_body(self, variable, scratch, after):
        del after  # only orders this write after the previous sum from the buffer
        scratch[: variable.shape.num_elements()].assign(tf.reshape(tf.square(variable.read_value()), [-1]))

    def _lamb_moments_into_body(self, variable, m, v, grad, step, scratch, after, *options):
        del after  # only orders this write after the sum of w^2 from the buffer
        new_m, new_v, _, update_squares = self._lamb_moments_math(
            variable.read_value(), grad, m.read_value(), v.read_value(), step, *options
        )
        m.assign(new_m)
        v.assign(new_v)
        scratch[: variable.shape.num_elements()].assign(tf.reshape(update_squares, [-1]))

    def _lamb_apply_in_place_body(self, variable, m, v, learning_rate, ratio, step, *options):
        variable.assign(
            self._lamb_apply_math(variable.read_value(), m.read_value(), v.read_value(), learning_rate, ratio, step, *options)
        )


def _key(variable, *options):
    return (tf.as_dtype(variable.dtype), variable.device, *options)


def _local_slots(variables, ms, vs):
    return (
        [local_variable(m, variable.device) for m, variable in zip(ms, variables)],
        [local_variable(v, variable.device) for v, variable in zip(vs, variables)],
    )


def _select(batch, *lists):
    return tuple([items[i] for i in batch] for items in lists)
