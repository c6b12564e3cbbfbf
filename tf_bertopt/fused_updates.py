"""Variable updates compiled by XLA, in place, bit-identical to TF1.

An optimizer step is memory-bound. Run op by op, as TF does in a
``tf.function``, AdamWeightDecay's dozen element-wise operations each read and
write whole variable-sized tensors, and every new tensor is memory the
allocator must find (on Linux, pages the kernel must map and zero).
Compiled by XLA, the step updates the variable and its slots in place with no
temporaries. Ideally that is one loop reading ``w, g, m, v`` and writing
``w, m, v``: 28 bytes per float32 parameter, the floor. XLA:CPU has no
multi-output fusion, so it emits one loop per written array (new ``m``, new
``v``, new ``w``, the last re-reading the first two): 40 bytes per parameter,
which ``tf_bertopt.compiled_traffic`` reads from the compiled program.

The compiled functions (``tf.function(jit_compile=True)``) are called from the
ordinary (not XLA-compiled) step, or inlined into a ``jit_compile=True`` one:

* a variable of ``SMALL_ELEMENTS`` or more is updated in place by its own
  call;
* smaller ones, where the cost is per operation rather than per byte, are
  updated in place ``GROUP_SIZE`` at a time, among variables of the same
  shape, dtype and treatment (a model repeats its layers, so few distinct
  groups are compiled);
* small variables whose shape no other shares are packed: concatenated,
  updated by one call, split and assigned back.

The math is ``tf_bertopt.update_rules``. What keeps the results bit-identical
to TF's op-by-op kernels, and so to TF1:

* every product that is then added (and LAMB's bias-corrected moments, which
  are divided again) goes through :func:`separately_rounded`, which stops XLA
  from contracting ``a*b + c`` into a fused multiply-add or rewriting
  ``(a/b)/c`` as ``a/(b*c)``;
* LAMB's norms are summed by TF's own ``Sum`` kernel outside the compiled
  code, since a sum's rounding depends on its order. The compiled first pass
  writes ``w^2`` and ``u^2`` for TF to sum (into a reused buffer, for a very
  large variable); the second pass recomputes ``u`` from the new ``m``, ``v`` (same
  operations, same bits) rather than storing it. On XLA:CPU the first pass is
  four loops (new ``m``, new ``v``, ``w^2``, ``u^2``: 48 bytes per parameter),
  then the two sums (8) and the second pass (16): 72 bytes per parameter
  against a floor of 40.

The functions take plain ``tf.Variable`` objects (Keras 3 ``variable.value``,
tf-keras variables as they are), so both Keras flavours share them.
"""

from __future__ import annotations

import collections
from typing import Sequence

import tensorflow as tf

from tf_bertopt import update_rules, xla_context

# Variables with fewer elements are updated together (see the module docstring).
SMALL_ELEMENTS = 2**16
# Small variables per compiled call: more means fewer calls but longer compilation.
GROUP_SIZE = 8
# LAMB variables at least this large have their squares written to a reused
# buffer (see FusedUpdates.reserve_norm_scratch): 32 MiB of float32, from where
# glibc maps fresh pages for every allocation.
SCRATCH_MIN_ELEMENTS = 2**23

_BITS = {2: tf.int16, 4: tf.int32, 8: tf.int64}


def separately_rounded(step):
    """A ``rounded`` hook for ``update_rules`` that keeps XLA from fusing across it.

    The value's bits are OR-ed with zero through an integer view. The zero is
    ``cast(step < 0)`` of the optimizer's (never negative) step counter, a
    run-time value, so neither XLA nor LLVM can fold the OR away: the value
    must be rounded to its dtype, as TF rounds it, before the next operation
    (no fused multiply-add, no rewriting ``(a/b)/c`` as ``a/(b*c)``).
    """

    def rounded(value):
        bits = _BITS[value.dtype.size]
        zero = tf.cast(step < 0, bits)
        return tf.bitcast(tf.bitwise.bitwise_or(tf.bitcast(value, bits), zero), value.dtype)

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


def batches(variables, options: Sequence) -> list[tuple[str, list[int]]]:
    """How to update ``variables`` (with per-variable hashable ``options``):
    ``("in_place", indices)`` for a large variable alone or up to
    ``GROUP_SIZE`` small ones of one shape, ``("packed", indices)`` for small
    ones whose shape no other shares (and that share dtype and options)."""
    large, same_shape = [], collections.defaultdict(list)
    for index, (variable, option) in enumerate(zip(variables, options)):
        key = (tf.as_dtype(variable.dtype), variable.device, option)
        if variable.shape.num_elements() >= SMALL_ELEMENTS:
            large.append(("in_place", [index]))
        else:
            same_shape[(tuple(variable.shape), *key)].append(index)
    grouped, lone = [], collections.defaultdict(list)
    for (shape, *key), indices in same_shape.items():
        if len(indices) == 1:
            lone[tuple(key)].append(indices[0])
        else:
            grouped += [("in_place", indices[i : i + GROUP_SIZE]) for i in range(0, len(indices), GROUP_SIZE)]
    packed = [("packed" if len(indices) > 1 else "in_place", indices) for indices in lone.values()]
    return large + grouped + packed


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
        # Only variables are kept between calls: a tensor kept here would
        # belong to one graph (or to eager execution) and be wrong in any other.
        self._scratch: dict = {}

    def reserve_norm_scratch(self, variables) -> None:
        """Creates the buffers LAMB's squares are written to, one per dtype.

        Call it where the optimizer creates its slots (same
        ``tf.distribute`` scope), with the variables LAMB adapts. Each one of
        ``SCRATCH_MIN_ELEMENTS`` or more then has ``w^2`` and ``u^2`` written
        in turn into the same persistent buffer, as large as the largest of
        them, rather than into new tensors: a new tensor that size costs
        more than the pass itself where the allocator maps fresh pages for
        it (glibc does above 32 MiB). The buffer's uses are ordered, so those
        variables are updated one after the other.
        """
        sizes: dict = {}
        for variable in variables:
            dtype, size = tf.as_dtype(variable.dtype), variable.shape.num_elements()
            if size >= SCRATCH_MIN_ELEMENTS:
                sizes[dtype] = max(size, sizes.get(dtype, 0))
        with tf.init_scope():
            for dtype, size in sizes.items():
                if dtype not in self._scratch or self._scratch[dtype].shape[0] < size:
                    self._scratch[dtype] = tf.Variable(tf.zeros([size], dtype), trainable=False, name="lamb_squares")

    def adam_weight_decay(self, variables, ms, vs, grads, learning_rate, step, weight_decay_rates: Sequence[float]):
        """AdamWeightDecay on each variable and its slots, in place."""
        ms, vs = _local_slots(variables, ms, vs)
        for kind, batch in batches(variables, weight_decay_rates):
            selected = _select(batch, variables, ms, vs, grads)
            rate = weight_decay_rates[batch[0]]
            if kind == "in_place":
                self._adam_in_place(*selected, learning_rate, step, rate)
            else:
                new = self._adam_packed(*map(_pack, _weight_grad_m_v(*selected)), learning_rate, step, rate)
                for targets, packed in zip(selected, new):
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
        bounds = (weight_norm_bounds, trust_ratio_bounds)
        last_sums: dict = {}  # per device, the last sum taken from its reused buffer in this call
        for kind, batch in batches(variables, list(zip(weight_decay_rates, layer_adaptations))):
            selected = _select(batch, variables, ms, vs, grads)
            options = (weight_decay_rates[batch[0]], bias_correction)
            if not layer_adaptations[batch[0]]:
                if kind == "in_place":
                    self._lamb_unadapted_in_place(*selected, learning_rate, step, *options)
                else:
                    new = self._lamb_unadapted_packed(*map(_pack, _weight_grad_m_v(*selected)), learning_rate, step, *options)
                    for targets, packed in zip(selected, new):
                        _assign_unpacked(targets, packed)
            elif kind == "in_place":
                self._lamb_in_place(*selected, learning_rate, step, bounds, options, last_sums)
            else:
                self._lamb_packed(*selected, learning_rate, step, bounds, options)

    def _lamb_in_place(self, variables, ms, vs, grads, learning_rate, step, bounds, options, last_sums):
        variable, size = variables[0], variables[0].shape.num_elements()
        scratch = self._scratch.get(tf.as_dtype(variable.dtype))
        if (
            len(variables) == 1
            and size >= SCRATCH_MIN_ELEMENTS
            and scratch is not None
            and scratch.shape[0] >= size
            and not xla_context.inside_xla()  # where XLA sums the squares it makes without storing them
        ):
            # The data dependencies order the buffer's uses: each write waits
            # for the sum of what the previous write put there.
            scratch = local_variable(scratch, variable.device)
            previous = last_sums.get(variable.device)
            after = tf.zeros([], variable.dtype) if previous is None else previous
            self._lamb_squares_into(variable, scratch, after)
            weight_norms = update_rules.norms_of_squares([scratch[:size]])
            self._lamb_moments_into(variable, ms[0], vs[0], grads[0], step, scratch, weight_norms, *options)
            update_norms = update_rules.norms_of_squares([scratch[:size]])
            last_sums[variable.device] = update_norms
        else:
            squares = self._lamb_moments_in_place(variables, ms, vs, grads, step, *options)
            weight_norms, update_norms = (update_rules.norms_of_squares(of_kind) for of_kind in zip(*squares))
        ratios = update_rules.trust_ratio(weight_norms, update_norms, *bounds)
        self._lamb_apply_in_place(variables, ms, vs, learning_rate, ratios, step, *options)

    def _lamb_packed(self, variables, ms, vs, grads, learning_rate, step, bounds, options):
        weight, grad, m, v = map(_pack, _weight_grad_m_v(variables, ms, vs, grads))
        new_m, new_v, weight_squares, update_squares = self._lamb_moments_packed(weight, grad, m, v, step, *options)
        sizes = [variable.shape.num_elements() for variable in variables]
        norms = [update_rules.norms_of_squares(tf.split(squares, sizes)) for squares in (weight_squares, update_squares)]
        ratios = tf.repeat(update_rules.trust_ratio(*norms, *bounds), sizes)
        new_weight = self._lamb_apply_packed(weight, new_m, new_v, learning_rate, ratios, step, *options)
        for targets, packed in zip((variables, ms, vs), (new_weight, new_m, new_v)):
            _assign_unpacked(targets, packed)

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

    # The in-place bodies, on lists of variables. Each returns nothing it
    # assigns: a returned variable value would keep XLA from updating that
    # variable in place.

    def _adam_in_place_body(self, variables, ms, vs, grads, learning_rate, step, weight_decay_rate):
        for variable, m, v, grad in zip(variables, ms, vs, grads):
            new = self._adam_math(*_read(variable, grad, m, v), learning_rate, step, weight_decay_rate)
            for target, value in zip((variable, m, v), new):
                target.assign(value)

    def _lamb_unadapted_in_place_body(self, variables, ms, vs, grads, learning_rate, step, *options):
        for variable, m, v, grad in zip(variables, ms, vs, grads):
            new = self._lamb_unadapted_math(*_read(variable, grad, m, v), learning_rate, step, *options)
            for target, value in zip((variable, m, v), new):
                target.assign(value)

    def _lamb_moments_in_place_body(self, variables, ms, vs, grads, step, *options):
        squares = []
        for variable, m, v, grad in zip(variables, ms, vs, grads):
            new_m, new_v, weight_squares, update_squares = self._lamb_moments_math(*_read(variable, grad, m, v), step, *options)
            m.assign(new_m)
            v.assign(new_v)
            squares.append((weight_squares, update_squares))
        return squares

    def _lamb_squares_into_body(self, variable, scratch, after):
        del after  # only orders this write after the previous sum from the buffer
        scratch[: variable.shape.num_elements()].assign(tf.reshape(tf.square(variable.read_value()), [-1]))

    def _lamb_moments_into_body(self, variable, m, v, grad, step, scratch, after, *options):
        del after  # only orders this write after the sum of w^2 from the buffer
        new_m, new_v, _, update_squares = self._lamb_moments_math(*_read(variable, grad, m, v), step, *options)
        m.assign(new_m)
        v.assign(new_v)
        scratch[: variable.shape.num_elements()].assign(tf.reshape(update_squares, [-1]))

    def _lamb_apply_in_place_body(self, variables, ms, vs, learning_rate, ratios, step, *options):
        for index, (variable, m, v) in enumerate(zip(variables, ms, vs)):
            weight = variable.read_value()
            arguments = (learning_rate, ratios[index], step, *options)
            variable.assign(self._lamb_apply_math(weight, m.read_value(), v.read_value(), *arguments))


def _read(variable, grad, m, v):
    return variable.read_value(), grad, m.read_value(), v.read_value()


def _weight_grad_m_v(variables, ms, vs, grads):
    return variables, grads, ms, vs


def _local_slots(variables, ms, vs):
    return (
        [local_variable(m, variable.device) for m, variable in zip(ms, variables)],
        [local_variable(v, variable.device) for v, variable in zip(vs, variables)],
    )


def _select(batch, *lists):
    return tuple([items[i] for i in batch] for items in lists)
