"""The fast path's kernels: variable updates bit-identical to TF1, run by route
(bit-identical outside a ``jit_compile=True`` step; see ``docs/exactness.md``).

``tf_bertopt.update_plan`` decides which variables go together and by which
route; this module runs the plan. An optimizer step is memory-bound. Run op
by op, as TF does in a ``tf.function``, AdamWeightDecay's dozen element-wise
operations each read and write whole variable-sized tensors, and every new
tensor is memory the allocator must find (on Linux, pages the kernel must map
and zero). Compiled by XLA (``tf.function(jit_compile=True)``), the step
updates a large variable and its slots in place with no temporaries. Ideally
that is one loop reading ``w, g, m, v`` and writing ``w, m, v``: 28 bytes per
float32 parameter, the floor. XLA:CPU has no multi-output fusion, so it emits
one loop per written array (new ``m``, new ``v``, new ``w``, the last
re-reading the first two): 40 bytes per parameter, which
``tf_bertopt.compiled_traffic`` reads from the compiled program. Small
variables are not compiled: they are updated with TF's own kernels, several
at a time where they can be packed into one tensor (see ``update_plan``).

The compiled functions are called from the ordinary (not XLA-compiled) step,
or inlined into a ``jit_compile=True`` one. The math is
``tf_bertopt.update_rules``. What keeps the results bit-identical to TF's
op-by-op kernels, and so to TF1, wherever XLA compiles them:

* every product that is then added (and LAMB's bias-corrected moments, which
  are divided again) goes through :func:`separately_rounded`, which stops XLA
  from contracting ``a*b + c`` into a fused multiply-add or rewriting
  ``(a/b)/c`` as ``a/(b*c)``;
* LAMB's norms are summed by TF's own ``Sum`` kernel outside the compiled
  code, since a sum's rounding depends on its order. The compiled first pass
  writes ``w^2`` and ``u^2`` for TF to sum (into a reused buffer, for a very
  large variable); the second pass recomputes ``u`` from the new ``m``, ``v``
  (same operations, same bits) rather than storing it. On XLA:CPU the first
  pass is four loops (new ``m``, new ``v``, ``w^2``, ``u^2``: 48 bytes per
  parameter), then the two sums (8) and the second pass (16): 72 bytes per
  parameter against a floor of 40.

Only variables are kept between steps, never a tensor: a tensor belongs to
one graph (or to eager execution), and the same optimizer may be stepped
eagerly, by several ``tf.function`` objects and by retraced ones.

The functions take plain ``tf.Variable`` objects (Keras 3 ``variable.value``,
tf-keras variables as they are), so both Keras flavours share them.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tf_bertopt import update_plan, update_rules, xla_context

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

    zeros: dict = {}  # one zero per integer width, made where the hook is made (one graph)

    def rounded(value):
        bits = _BITS[value.dtype.size]
        if bits not in zeros:
            zeros[bits] = tf.cast(step < 0, bits)
        zero = zeros[bits]
        return tf.bitcast(tf.bitwise.bitwise_or(tf.bitcast(value, bits), zero), value.dtype)

    return rounded


def _unfused(value):
    return value


def rounding_for_kernels(step):
    """``separately_rounded`` where XLA compiles the graph being built; TF's kernels round every result anyway."""
    return separately_rounded(step) if xla_context.inside_xla() else _unfused


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


def _pack(tensors):
    if len(tensors) == 1:
        return tf.convert_to_tensor(tensors[0])
    return tf.concat([tf.reshape(tensor, [-1]) for tensor in tensors], axis=0)


def _segment_starts(sizes) -> list[int]:
    return [sum(sizes[:index]) for index in range(len(sizes))]


def _assign_unpacked(variables, packed):
    if len(variables) == 1:
        variables[0].assign(packed)
        return
    pieces = tf.split(packed, [variable.shape.num_elements() for variable in variables])
    for variable, piece in zip(variables, pieces):
        variable.assign(tf.reshape(piece, variable.shape))


class FusedUpdates:
    """The fast path's updates for one optimizer's hyper-parameters.

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
        self._lamb_unadapted_in_place = compiled(self._lamb_unadapted_in_place_body)
        self._lamb_moments_in_place = compiled(self._lamb_moments_in_place_body)
        self._lamb_squares_into = compiled(self._lamb_squares_into_body)
        self._lamb_moments_into = compiled(self._lamb_moments_into_body)
        self._lamb_apply_in_place = compiled(self._lamb_apply_in_place_body)
        # Variables only (see the module docstring).
        self._scratch: dict = {}

    def compiled_functions(self) -> list:
        """The ``tf.function`` objects XLA compiles (their tracing counts tell which routes ran)."""
        return [
            self._adam_in_place,
            self._lamb_unadapted_in_place,
            self._lamb_moments_in_place,
            self._lamb_squares_into,
            self._lamb_moments_into,
            self._lamb_apply_in_place,
        ]

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
            if size >= SCRATCH_MIN_ELEMENTS and size >= update_plan.SMALL_ELEMENTS:
                sizes[dtype] = max(size, sizes.get(dtype, 0))
        with tf.init_scope():
            for dtype, size in sizes.items():
                if dtype not in self._scratch or self._scratch[dtype].shape[0] < size:
                    self._scratch[dtype] = tf.Variable(tf.zeros([size], dtype), trainable=False, name="lamb_squares")

    def adam_weight_decay(self, variables, ms, vs, grads, learning_rate, step, weight_decay_rates: Sequence[float]):
        """AdamWeightDecay on each variable and its slots, in place."""
        ms, vs = _local_slots(variables, ms, vs)
        for batch in update_plan.plan(variables, weight_decay_rates, pack=not xla_context.inside_xla()):
            selected = _select(batch.indices, variables, ms, vs, grads)
            rate = weight_decay_rates[batch.indices[0]]
            if batch.route == "compiled":
                self._adam_in_place(*selected, learning_rate, step, rate)
            else:
                weights, targets_m, targets_v, gradients = selected
                new = self._adam_math(
                    *map(_pack, (weights, gradients, targets_m, targets_v)),
                    learning_rate,
                    rate,
                    rounding_for_kernels(step),
                )
                for targets, packed in zip((weights, targets_m, targets_v), new):
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
        options_per_variable = list(zip(weight_decay_rates, layer_adaptations))
        for batch in update_plan.plan(variables, options_per_variable, pack=not xla_context.inside_xla()):
            selected = _select(batch.indices, variables, ms, vs, grads)
            first = batch.indices[0]
            options = (weight_decay_rates[first], bias_correction)
            if batch.route != "compiled":
                self._lamb_by_kernels(*selected, learning_rate, step, bounds, options, layer_adaptations[first])
            elif not layer_adaptations[first]:
                self._lamb_unadapted_in_place(*selected, learning_rate, step, *options)
            else:
                self._lamb_in_place(*selected, learning_rate, step, bounds, options, last_sums)

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
            # for the sum of what the previous write put there (a write while
            # a read is pending would copy the buffer).
            scratch = local_variable(scratch, variable.device)
            previous = last_sums.get(variable.device)
            self._lamb_squares_into(variable, scratch, tf.zeros([], variable.dtype) if previous is None else previous)
            weight_norms = update_rules.norms_of_squares([scratch[:size]])
            self._lamb_moments_into(variable, ms[0], vs[0], grads[0], step, scratch, weight_norms, *options)
            update_norms = update_rules.norms_of_squares([scratch[:size]])
            last_sums[variable.device] = update_norms
        else:
            squares = self._lamb_moments_in_place(variables, ms, vs, grads, step, *options)
            weight_norms, update_norms = (update_rules.norms_of_squares(of_kind) for of_kind in zip(*squares))
        ratios = update_rules.trust_ratio(weight_norms, update_norms, *bounds)
        self._lamb_apply_in_place(variables, ms, vs, learning_rate, ratios, step, *options)

    def _lamb_by_kernels(self, variables, ms, vs, grads, learning_rate, step, bounds, options, adapted):
        # Small variables, packed into one tensor (or one alone): TF's kernels, no compilation.
        weight, grad, m, v = map(_pack, (variables, grads, ms, vs))
        rounded = rounding_for_kernels(step)
        arguments = self._lamb_arguments(*options, rounded)
        update, new_m, new_v = update_rules.lamb_direction(weight, grad, m, v, step, **arguments)
        step_size = tf.cast(learning_rate, weight.dtype)
        if not adapted:
            new_weight = update_rules.lamb_apply(weight, update, step_size, None, rounded)
        elif len(variables) == 1:  # as the reference path: the norms of the variable, in its own shape
            ratio = update_rules.trust_ratio(update_rules.l2_norm(weight), update_rules.l2_norm(update), *bounds)
            new_weight = update_rules.lamb_apply(weight, update, step_size, ratio, rounded)
        else:
            # Each variable's norms are TF's sums over its own segment of the
            # packed squares; each segment then moves by its own lr*r, formed
            # per variable as TF1 forms it, then spread over the segment.
            sizes = [variable.shape.num_elements() for variable in variables]
            weight_norms, update_norms = (
                update_rules.norms_of_squares([squares[s : s + n] for s, n in zip(_segment_starts(sizes), sizes)])
                for squares in (tf.square(weight), tf.square(update))
            )
            ratios = update_rules.trust_ratio(weight_norms, update_norms, *bounds)
            new_weight = weight - rounded(tf.repeat(step_size * ratios, sizes) * update)
        for targets, packed in zip((variables, ms, vs), (new_weight, new_m, new_v)):
            _assign_unpacked(targets, packed)

    # The math, on tensors.

    def _lamb_arguments(self, weight_decay_rate, bias_correction, rounded):
        return dict(
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay_rate=weight_decay_rate,
            bias_correction=bias_correction,
            rounded=rounded,
        )

    def _adam_math(self, weight, grad, m, v, learning_rate, weight_decay_rate, rounded):
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
            rounded=rounded,
        )

    def _lamb_unadapted_math(self, weight, grad, m, v, learning_rate, step, weight_decay_rate, bias_correction):
        # r = 1: one pass, as AdamWeightDecay.
        rounded = separately_rounded(step)
        arguments = self._lamb_arguments(weight_decay_rate, bias_correction, rounded)
        update, new_m, new_v = update_rules.lamb_direction(weight, grad, m, v, step, **arguments)
        step_size = tf.cast(learning_rate, weight.dtype)
        return update_rules.lamb_apply(weight, update, step_size, None, rounded), new_m, new_v

    def _lamb_moments_math(self, weight, grad, m, v, step, weight_decay_rate, bias_correction):
        # First pass: the new moments, and w^2 and u^2 for TF to sum.
        arguments = self._lamb_arguments(weight_decay_rate, bias_correction, separately_rounded(step))
        update, new_m, new_v = update_rules.lamb_direction(weight, grad, m, v, step, **arguments)
        return new_m, new_v, tf.square(weight), tf.square(update)

    def _lamb_apply_math(self, weight, m, v, learning_rate, ratio, step, weight_decay_rate, bias_correction):
        # Second pass: u again from the new moments (the same operations give
        # the same bits), then w - (lr*r)*u.
        rounded = separately_rounded(step)
        arguments = self._lamb_arguments(weight_decay_rate, bias_correction, rounded)
        update = update_rules.lamb_direction_from_moments(weight, m, v, step, **arguments)
        step_size = tf.cast(learning_rate, weight.dtype)
        return update_rules.lamb_apply(weight, update, step_size, ratio, rounded)

    # The compiled bodies, on lists of variables. Each returns nothing it
    # assigns: a returned variable value would keep XLA from updating that
    # variable in place.

    def _adam_in_place_body(self, variables, ms, vs, grads, learning_rate, step, weight_decay_rate):
        for variable, m, v, grad in zip(variables, ms, vs, grads):
            weight, _, m_value, v_value = _read(variable, grad, m, v)
            new = self._adam_math(weight, grad, m_value, v_value, learning_rate, weight_decay_rate, separately_rounded(step))
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


def _local_slots(variables, ms, vs):
    return (
        [local_variable(m, variable.device) for m, variable in zip(ms, variables)],
        [local_variable(v, variable.device) for v, variable in zip(vs, variables)],
    )


def _select(indices, *lists):
    return tuple([items[i] for i in indices] for items in lists)
