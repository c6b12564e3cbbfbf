"""The update math of BERT's optimizers, as small composable TensorFlow functions.

This is the only copy of the formulas; the Keras 3 and tf-keras front ends call
these functions and only adapt variables, slots and learning rates to them.

Every function maps tensors to tensors and touches no variable. The
operations and their order are those of the TF1 BERT code, so a float32 run
reproduces TF1 bit for bit:

* a hyper-parameter is rounded to the tensor's dtype once
  (``tf.constant(0.9, tf.float32)``);
* a constant derived from hyper-parameters, such as ``1 - beta_1``, is
  computed in double precision first, as TF1's Python code did, then rounded
  (``float32(1 - 0.9)`` differs from ``float32(1) - float32(0.9)``);
* ``lr * r`` is formed before it multiplies the update, as in TF1 LAMB.

Each product that is then added, and each quotient that is divided again,
is passed through ``rounded`` (the identity by default). TF runs every
operation as its own kernel, so such an intermediate is rounded to float32
before the next operation; a compiler that fuses the operations (XLA) may
instead emit one fused multiply-add, rounded once, or rewrite ``(a/b)/c`` as
``a/(b*c)``, which differ in the last bit. ``tf_bertopt.fused_updates``
passes a ``rounded`` that forbids both.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from tf_bertopt import xla_context


def _const(value: float, like: tf.Tensor) -> tf.Tensor:
    return tf.constant(value, dtype=like.dtype)


def _identity(tensor):
    return tensor


def dense_gradient(gradient):
    """A ``tf.IndexedSlices`` as a dense tensor, repeated rows summed, as TF1's
    dense update math saw it; any other gradient unchanged."""
    return tf.convert_to_tensor(gradient) if isinstance(gradient, tf.IndexedSlices) else gradient


def moments(grad, m, v, beta_1: float, beta_2: float, rounded=_identity):
    """Exponential averages of the gradient and its square.

    ``m <- b1*m + (1-b1)*g`` and ``v <- b2*v + (1-b2)*g^2``.
    """
    next_m = rounded(_const(beta_1, m) * m) + rounded(_const(1.0 - beta_1, m) * grad)
    next_v = rounded(_const(beta_2, v) * v) + rounded(_const(1.0 - beta_2, v) * tf.square(grad))
    return next_m, next_v


def bias_corrected(m, v, beta_1: float, beta_2: float, step, rounded=_identity):
    """``m/(1-b1^(t+1))`` and ``v/(1-b2^(t+1))`` for update number ``t`` (from 0)."""
    count = tf.cast(step, m.dtype) + _const(1.0, m)
    m_hat = m / (_const(1.0, m) - tf.pow(_const(beta_1, m), count))
    v_hat = v / (_const(1.0, v) - tf.pow(_const(beta_2, v), count))
    return rounded(m_hat), rounded(v_hat)


def adam_direction(m, v, epsilon: float):
    """``m / (sqrt(v) + eps)``: epsilon outside the square root, as in BERT."""
    return m / (tf.sqrt(v) + _const(epsilon, v))


def add_weight_decay(update, weight, rate: float, rounded=_identity):
    """Decoupled weight decay folded into the update: ``u + rate*w``."""
    return update + rounded(_const(rate, weight) * weight)


def sum_of_elements(tensor):
    """``sum(x)`` over the whole tensor: TF's ``Sum``, as TF1 computed it.

    Under XLA on a CPU, a float32/64 sum is a matrix-vector product with ones
    instead (rows of the tensor's last dimension, then the row sums added).
    XLA:CPU emits a full reduction as one single-threaded scalar loop that also
    recomputes its element-wise producer (LAMB's update, divisions and square
    roots included), about 4 times slower than materializing the squares in a
    parallel vectorized loop and summing them in a library matrix-vector
    product. XLA sums in its own order either way, so this changes no
    guarantee. Not on GPU or TPU, where a float32 product may run at reduced
    precision (TF32, bfloat16 passes).
    """
    if not (tensor.dtype in (tf.float32, tf.float64) and tensor.shape.is_fully_defined() and xla_context.inside_xla_on_cpu()):
        return tf.reduce_sum(tensor)
    size = tensor.shape.num_elements()
    width = tensor.shape[-1] if tensor.shape.rank >= 2 else next((w for w in (1024, 256, 64) if size % w == 0 and size > w), size)
    rows = tf.reshape(tensor, [-1, max(width, 1)])
    return tf.reduce_sum(tf.linalg.matvec(rows, tf.ones([rows.shape[-1]], tensor.dtype)))


def squared_norm(tensor):
    """``sum(x^2)`` over the whole tensor."""
    return sum_of_elements(tf.square(tensor))


def l2_norm(tensor):
    """``sqrt(sum(x^2))`` over the whole tensor, with TF1's operations."""
    return tf.sqrt(squared_norm(tensor))


def l2_norm_of_parts(squared_norms):
    """The norm of a tensor held in parts, from each part's ``squared_norm``.

    For one part this is ``l2_norm`` itself, operation for operation.
    """
    if len(squared_norms) == 1:
        return tf.sqrt(squared_norms[0])
    return tf.sqrt(tf.add_n(list(squared_norms)))


def norms_of_squares(squares_list):
    """``l2_norm`` of each of several tensors from their squares, computed
    elsewhere: ``sqrt(sum(x^2))`` per tensor, as one vector (one ``sqrt`` for all)."""
    return tf.sqrt(tf.stack([sum_of_elements(squares) for squares in squares_list]))


def trust_ratio(weight_norm, update_norm, weight_norm_bounds=None, trust_ratio_bounds=None):
    """LAMB's layer-wise trust ratio ``phi(||w||) / ||u||``, 1 where either norm is 0.

    ``weight_norm_bounds=(gamma_l, gamma_u)`` is the paper's scaling function
    ``phi(z) = min(max(z, gamma_l), gamma_u)``; ``trust_ratio_bounds`` clamps the
    final ratio (as NVIDIA's and DeepSpeed's LAMB do). ``None`` leaves a side open.
    """
    numerator = _clip(weight_norm, weight_norm_bounds)
    one = _const(1.0, weight_norm)
    ratio = tf.where(
        weight_norm > 0.0,
        tf.where(update_norm > 0.0, numerator / update_norm, one),
        one,
    )
    return _clip(ratio, trust_ratio_bounds)


def _clip(value, limits):
    if limits is None:
        return value
    lower, upper = limits
    if lower is not None:
        value = tf.maximum(value, _const(lower, value))
    if upper is not None:
        value = tf.minimum(value, _const(upper, value))
    return value


def adam_weight_decay_update(
    weight, grad, m, v, learning_rate, *, beta_1, beta_2, epsilon, weight_decay_rate, rounded=_identity
):
    """One AdamWeightDecay step; returns ``(new_weight, new_m, new_v)``.

    ``weight_decay_rate`` is the rate for this variable: 0 when it is excluded.
    """
    next_m, next_v = moments(grad, m, v, beta_1, beta_2, rounded)
    update = adam_direction(next_m, next_v, epsilon)
    if weight_decay_rate:
        update = add_weight_decay(update, weight, weight_decay_rate, rounded)
    return weight - rounded(learning_rate * update), next_m, next_v


def lamb_direction(
    weight, grad, m, v, step, *, beta_1, beta_2, epsilon, weight_decay_rate, bias_correction, rounded=_identity
):
    """LAMB's moments and un-scaled update ``u``; returns ``(u, new_m, new_v)``."""
    next_m, next_v = moments(grad, m, v, beta_1, beta_2, rounded)
    update = lamb_direction_from_moments(
        weight,
        next_m,
        next_v,
        step,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        weight_decay_rate=weight_decay_rate,
        bias_correction=bias_correction,
        rounded=rounded,
    )
    return update, next_m, next_v


def lamb_direction_from_moments(
    weight, m, v, step, *, beta_1, beta_2, epsilon, weight_decay_rate, bias_correction, rounded=_identity
):
    """LAMB's un-scaled update ``u`` from moments ``m``, ``v`` already updated for this step."""
    if bias_correction:
        m, v = bias_corrected(m, v, beta_1, beta_2, step, rounded)
    update = adam_direction(m, v, epsilon)
    if weight_decay_rate:
        update = add_weight_decay(update, weight, weight_decay_rate, rounded)
    return update


def lamb_apply(weight, update, learning_rate, ratio=None, rounded=_identity):
    """``w - (lr*r)*u``; ``ratio=None`` for a variable excluded from layer adaptation."""
    if ratio is None:
        return weight - rounded(learning_rate * update)
    return weight - rounded((learning_rate * ratio) * update)


def lamb_update(
    weight,
    grad,
    m,
    v,
    learning_rate,
    step,
    *,
    beta_1,
    beta_2,
    epsilon,
    weight_decay_rate,
    layer_adaptation=True,
    bias_correction=False,
    weight_norm_bounds=None,
    trust_ratio_bounds=None,
):
    """One LAMB step on a whole (unsharded) variable; returns ``(new_weight, new_m, new_v)``."""
    return lamb_update_shards(
        [weight],
        [grad],
        [m],
        [v],
        learning_rate,
        step,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        weight_decay_rate=weight_decay_rate,
        layer_adaptation=layer_adaptation,
        bias_correction=bias_correction,
        weight_norm_bounds=weight_norm_bounds,
        trust_ratio_bounds=trust_ratio_bounds,
    )[0]


def lamb_update_shards(
    weights,
    grads,
    ms,
    vs,
    learning_rate,
    step,
    *,
    beta_1,
    beta_2,
    epsilon,
    weight_decay_rate,
    layer_adaptation=True,
    bias_correction=False,
    weight_norm_bounds=None,
    trust_ratio_bounds=None,
    placement=None,
):
    """One LAMB step on a variable held as shards (the parts of a ``ShardedVariable``).

    ``weights``, ``grads``, ``ms``, ``vs`` hold the shards' values in the same
    order. The trust ratio uses the norms of the whole variable, summed from
    each shard's ``squared_norm``; everything else is element-wise. Returns
    ``[(new_weight, new_m, new_v)]`` per shard. ``placement(i)``, if given, is a
    context manager under which the operations of shard ``i`` are built (to
    keep them on that shard's device).
    """
    place = placement or (lambda index: contextlib.nullcontext())
    directions, weight_norms, update_norms = [], [], []
    for i, (weight, grad, m, v) in enumerate(zip(weights, grads, ms, vs)):
        with place(i):
            directions.append(
                lamb_direction(
                    weight,
                    grad,
                    m,
                    v,
                    step,
                    beta_1=beta_1,
                    beta_2=beta_2,
                    epsilon=epsilon,
                    weight_decay_rate=weight_decay_rate,
                    bias_correction=bias_correction,
                )
            )
            if layer_adaptation:
                weight_norms.append(squared_norm(weight))
                update_norms.append(squared_norm(directions[-1][0]))
    ratio = None
    if layer_adaptation:
        ratio = trust_ratio(
            l2_norm_of_parts(weight_norms), l2_norm_of_parts(update_norms), weight_norm_bounds, trust_ratio_bounds
        )
    results = []
    for i, (weight, (update, next_m, next_v)) in enumerate(zip(weights, directions)):
        with place(i):
            results.append((lamb_apply(weight, update, learning_rate, ratio), next_m, next_v))
    return results
