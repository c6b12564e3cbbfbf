"""What the optimizer does to each variable, written to TensorBoard.

For a step's gradients, ``optimizer_diagnostics`` computes, per variable:

* ``weight_norm`` ``||w||`` (before the step) and ``gradient_norm`` ``||g||``
  (after the optimizer's clipping);
* ``update_norm`` ``||w_new - w||`` = ``||lr_t * multiplier * r * u||``;
* ``trust_ratio`` LAMB's ``r`` (1 for AdamWeightDecay and unadapted variables);
* ``effective_learning_rate`` ``lr_t * multiplier * r`` (schedule times
  layer-wise multiplier times trust ratio);

and for the step: the scheduled ``learning_rate``, the global gradient norm
*before* clipping, whether clipping changed the gradients, and the fraction
of variables that are decayed. The values come from the optimizer's own
update math (``tf_bertopt.update_rules``) on the optimizer's slots, decisions
and multipliers: the step the optimizer is about to take, recomputed, at
the cost of one more pass over the variables on the steps that are recorded.

``write_optimizer_diagnostics`` writes them with ``tf.summary`` (scalars,
and histograms across variables) to the default summary writer, per variable
or per layer depth. The optimizers' ``record_diagnostics(every_n_steps)``
(``tf_bertopt.diagnostics_recording``, used by the ``OptimizerDiagnostics``
Keras callback) does it from inside ``apply_gradients`` every
``every_n_steps`` updates, for the gradients summed over replicas under
``tf.distribute``, written once (by the first replica). When it is not turned
on, nothing is added to the step.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from tf_bertopt import name_matching, update_rules, validation

PER_CHOICES = ("variable", "layer")
METRICS = ("weight_norm", "gradient_norm", "update_norm", "trust_ratio", "effective_learning_rate")
HISTOGRAM_BUCKETS = 30


def _plugin(name: str) -> summary_pb2.SummaryMetadata:
    return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=name))


# TensorBoard's own formats, written with tf.summary.write so that TensorBoard
# need not be installed where training runs.
_SCALAR, _HISTOGRAM = _plugin("scalars"), _plugin("histograms")


def _write_scalar(tag: str, value, step) -> None:
    tf.summary.write(tag, tf.cast(value, tf.float32), step=step, metadata=_SCALAR)


def _write_histogram(tag: str, values, step) -> None:
    """TensorBoard's histogram tensor: ``[buckets, 3]`` rows of (left edge, right edge, count)."""
    values = tf.cast(tf.reshape(values, [-1]), tf.float64)
    low = tf.reduce_min(values) if values.shape[0] else tf.constant(0.0, tf.float64)
    high = tf.reduce_max(values) if values.shape[0] else tf.constant(0.0, tf.float64)
    high = tf.where(high > low, high, low + 1.0)
    counts = tf.histogram_fixed_width(values, tf.stack([low, high]), nbins=HISTOGRAM_BUCKETS)
    edges = tf.linspace(low, high, HISTOGRAM_BUCKETS + 1)
    buckets = tf.stack([edges[:-1], edges[1:], tf.cast(counts, tf.float64)], axis=1)
    tf.summary.write(tag, buckets, step=step, metadata=_HISTOGRAM)


@dataclasses.dataclass
class Diagnostics:
    """One step's diagnostics; per-variable tensors are in the order of ``names``."""

    names: list[str]
    depths: list[int | None]
    weight_norm: tf.Tensor
    gradient_norm: tf.Tensor
    update_norm: tf.Tensor
    trust_ratio: tf.Tensor
    effective_learning_rate: tf.Tensor
    learning_rate: tf.Tensor
    global_gradient_norm: tf.Tensor
    clipped: tf.Tensor
    fraction_decayed: float


def _current_learning_rate(optimizer) -> tf.Tensor:
    raw = optimizer._learning_rate
    function = getattr(optimizer, "_learning_rate_function", None)  # tf-keras: a function of no arguments
    if function is not None:
        rate = function()
    elif callable(raw) and hasattr(raw, "get_config") and not isinstance(raw, tf.Variable):
        rate = raw(optimizer.iterations)  # a schedule, at the number of updates done
    elif callable(raw) and not isinstance(raw, tf.Variable) and not hasattr(raw, "numpy"):
        rate = raw()
    else:
        rate = raw
    return tf.cast(tf.convert_to_tensor(rate), tf.float32)


def _clipped(optimizer, grads):
    """The gradients as the optimizer's clipping leaves them, the norm before, and whether it changed them."""
    norm = tf.linalg.global_norm(grads)
    if getattr(optimizer, "global_clipnorm", None):
        clipped, _ = tf.clip_by_global_norm(grads, optimizer.global_clipnorm, use_norm=norm)
        return clipped, norm, norm > optimizer.global_clipnorm
    if getattr(optimizer, "clipnorm", None):
        clipped = [tf.clip_by_norm(g, optimizer.clipnorm) for g in grads]
        return clipped, norm, tf.reduce_any([tf.norm(g) > optimizer.clipnorm for g in grads])
    if getattr(optimizer, "clipvalue", None):
        limit = optimizer.clipvalue
        clipped = [tf.clip_by_value(g, -limit, limit) for g in grads]
        return clipped, norm, tf.reduce_any([tf.reduce_any(tf.abs(g) > limit) for g in grads])
    return list(grads), norm, tf.constant(False)


def optimizer_diagnostics(optimizer, grads_and_vars) -> Diagnostics:
    """The diagnostics of the step ``optimizer`` is about to take with ``grads_and_vars``.

    Args:
        optimizer: a built tf_bertopt AdamWeightDecay or LAMB (either flavour).
        grads_and_vars: ``(gradient, variable)`` pairs as given to
            ``apply_gradients``, summed over replicas under ``tf.distribute``
            (what the update sees before clipping). Pairs with a None gradient
            are left out.

    Returns:
        A ``Diagnostics``.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    pairs = [(g, v) for g, v in grads_and_vars if g is not None]
    variables = [v for _, v in pairs]
    grads = [tf.cast(update_rules.dense_gradient(g), v.dtype) for g, v in pairs]
    grads, global_norm, clipped = _clipped(optimizer, grads)
    learning_rate = _current_learning_rate(optimizer)
    rows = [_variable_row(optimizer, variable, grad, learning_rate) for grad, variable in zip(grads, variables)]
    stacked = [tf.stack(column) for column in zip(*rows)] if rows else [tf.zeros([0])] * len(METRICS)
    indices = [optimizer._get_variable_index(v) for v in variables]
    decayed = sum(1 for i in indices if optimizer._decay_rates[i])
    depths = getattr(optimizer, "_layer_depths_of_variables", None) or [None] * (max(indices, default=-1) + 1)
    return Diagnostics(
        [name_matching.variable_name(v) for v in variables],
        [depths[i] for i in indices],
        *stacked,
        learning_rate=learning_rate,
        global_gradient_norm=global_norm,
        clipped=clipped,
        fraction_decayed=decayed / len(indices) if indices else 0.0,
    )


def _variable_row(optimizer, variable, grad, learning_rate):
    index = optimizer._get_variable_index(variable)
    weight = tf.convert_to_tensor(variable)
    m, v = (tf.convert_to_tensor(slot) for slot in optimizer.get_slots(variable))
    multipliers = getattr(optimizer, "_learning_rate_multipliers", None)
    rate = tf.cast(learning_rate, weight.dtype)
    if multipliers and multipliers[index] != 1.0:
        rate = rate * tf.constant(multipliers[index], weight.dtype)
    options = dict(beta_1=optimizer.beta_1, beta_2=optimizer.beta_2, epsilon=optimizer.epsilon)
    decay = optimizer._decay_rates[index]
    weight_norm = update_rules.l2_norm(weight)
    if hasattr(optimizer, "bias_correction"):  # LAMB
        update, _, _ = update_rules.lamb_direction(
            weight, grad, m, v, optimizer.iterations, weight_decay_rate=decay,
            bias_correction=optimizer.bias_correction, **options,
        )
        ratio = tf.constant(1.0, weight.dtype)
        if optimizer._layer_adaptation[index]:
            ratio = update_rules.trust_ratio(
                weight_norm, update_rules.l2_norm(update), optimizer.weight_norm_bounds, optimizer.trust_ratio_bounds
            )
    else:
        next_m, next_v = update_rules.moments(grad, m, v, optimizer.beta_1, optimizer.beta_2)
        update = update_rules.adam_direction(next_m, next_v, optimizer.epsilon)
        if decay:
            update = update_rules.add_weight_decay(update, weight, decay)
        ratio = tf.constant(1.0, weight.dtype)
    effective = rate * ratio
    row = (weight_norm, update_rules.l2_norm(grad), update_rules.l2_norm(effective * update), ratio, effective)
    return [tf.cast(x, tf.float32) for x in row]


def _grouped(diagnostics: Diagnostics, per: str) -> dict[str, dict[str, tf.Tensor]]:
    """``{metric: {tag: value}}``: per variable, or per layer depth (norms combined, ratios and rates averaged)."""
    if per == "variable":
        return {m: {n: getattr(diagnostics, m)[i] for i, n in enumerate(diagnostics.names)} for m in METRICS}
    groups: dict[str, list[int]] = {}
    for i, depth in enumerate(diagnostics.depths):
        groups.setdefault("all" if depth is None else f"depth_{depth}", []).append(i)
    out: dict[str, dict[str, tf.Tensor]] = {m: {} for m in METRICS}
    for tag, members in groups.items():
        for metric in METRICS:
            values = tf.gather(getattr(diagnostics, metric), members)
            combined = tf.sqrt(tf.reduce_sum(tf.square(values))) if metric.endswith("_norm") else tf.reduce_mean(values)
            out[metric][tag] = combined
    return out


def write_optimizer_diagnostics(
    diagnostics: Diagnostics, step, *, per: str = "variable", histograms: bool = True, prefix: str = "optimizer"
) -> None:
    """Writes ``diagnostics`` with ``tf.summary`` to the default writer, at ``step``.

    Scalars ``<prefix>/<metric>/<variable name or depth_<d>>`` for each of
    ``METRICS``; ``<prefix>/learning_rate``, ``<prefix>/global_gradient_norm``
    (before clipping), ``<prefix>/clipped`` (1 or 0) and
    ``<prefix>/fraction_decayed``; with ``histograms``,
    ``<prefix>/histogram/<metric>``, each metric's distribution over the
    variables. The records are in TensorBoard's formats, written with
    ``tf.summary.write`` (TensorBoard need not be installed to write them).

    Args:
        diagnostics: from ``optimizer_diagnostics``.
        step: the step to write at (e.g. the optimizer's ``iterations``).
        per: ``"variable"`` or ``"layer"`` (grouped by the optimizer's layer depths).
        histograms: also write histograms.
        prefix: the tags' first part.
    """
    validation.one_of("write_optimizer_diagnostics", "per", per, PER_CHOICES)
    step = tf.cast(step, tf.int64)
    for metric, values in _grouped(diagnostics, per).items():
        for tag, value in values.items():
            _write_scalar(f"{prefix}/{metric}/{tag}", value, step)
    _write_scalar(f"{prefix}/learning_rate", diagnostics.learning_rate, step)
    _write_scalar(f"{prefix}/global_gradient_norm", diagnostics.global_gradient_norm, step)
    _write_scalar(f"{prefix}/clipped", tf.cast(diagnostics.clipped, tf.float32), step)
    _write_scalar(f"{prefix}/fraction_decayed", diagnostics.fraction_decayed, step)
    if histograms:
        for metric in METRICS:
            _write_histogram(f"{prefix}/histogram/{metric}", getattr(diagnostics, metric), step)
