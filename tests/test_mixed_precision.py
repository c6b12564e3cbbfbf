"""Mixed precision with both optimizers, in both Keras flavours.

* ``mixed_float16``: ``compile`` wraps our optimizer in the flavour's
  ``LossScaleOptimizer``; variables (the master weights) and our slots stay
  float32; a step with a non-finite gradient is skipped and leaves weights,
  slots and the update count alone.
* ``mixed_bfloat16``: no loss scaling; float32 variables, slots and update math.
* A variable that is itself float16 (no master weights) gets float16 slots and
  is updated in float16.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import distributed_cases as cases
import harness
import reference_numpy
import tf_keras
from tf_bertopt import keras3, name_matching

KINDS = ["adamw", "lamb"]
CLASSES = {"adamw": keras3.AdamWeightDecay, "lamb": keras3.LAMB}
CLASS_NAMES = {"adamw": "AdamWeightDecay", "lamb": "LAMB"}
LOSS_SCALE_OPTIMIZERS = {
    "keras3": keras.optimizers.LossScaleOptimizer,
    "tf_keras": tf_keras.mixed_precision.LossScaleOptimizer,
}


@pytest.fixture
def set_policy(flavour):
    """Sets the flavour's global dtype policy for one test."""
    if flavour == "keras3":
        previous = keras.config.dtype_policy()
        yield keras.config.set_dtype_policy
        keras.config.set_dtype_policy(previous)
    else:
        previous = tf_keras.mixed_precision.global_policy()
        yield tf_keras.mixed_precision.set_global_policy
        tf_keras.mixed_precision.set_global_policy(previous)


def dtype_names(values):
    return {tf.as_dtype(x.dtype).name for x in values}


def slot_dtypes(optimizer, model):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return dtype_names(s for v in model.trainable_variables for s in inner.get_slots(v))


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_float16_fit_wraps_ours_in_loss_scaling_with_float32_variables_and_slots(flavour, set_policy, kind):
    set_policy("mixed_float16")
    keras_module, api = cases.flavour_modules(flavour)
    model = cases.build_model(keras_module)
    model.compile(optimizer=cases.make_optimizer(api, kind), loss="mse")
    x, y = cases.dataset()
    model.fit(x, y * 0.01, batch_size=cases.GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    assert isinstance(model.optimizer, LOSS_SCALE_OPTIMIZERS[flavour])
    assert isinstance(model.optimizer.inner_optimizer, getattr(api, CLASS_NAMES[kind]))
    assert model.layers[0].compute_dtype == "float16"
    assert dtype_names(model.trainable_variables) == {"float32"}
    assert slot_dtypes(model.optimizer, model) == {"float32"}
    assert int(model.optimizer.iterations) == cases.STEPS  # no step was skipped
    moved = [not np.array_equal(v.numpy(), w) for v, w in zip(model.trainable_variables, cases.initial_weights())]
    assert all(moved)


@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_gradient_skips_the_step_and_leaves_slots_untouched(flavour, set_policy, kind):
    set_policy("mixed_float16")
    states, scales, updates = cases.loss_scaled_skip(tf.distribute.get_strategy(), kind, flavour)
    assert scales == [1024.0, 512.0, 512.0]  # the skipped step halves the loss scale
    # Keras 3 does not count a skipped step; tf-keras does (its schedules move on).
    assert updates == ([1, 1, 2] if flavour == "keras3" else [1, 2, 3])
    for before, after in zip(states[0], states[1]):
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
    assert all(np.all(np.isfinite(column)) for row in states[2] for column in row)
    assert all(not np.array_equal(a[0], b[0]) for a, b in zip(states[1], states[2]))


def name_of(variable):
    return name_matching.variable_name(variable)


def _train_pairs(optimizer, weights, stream, scale=1.0):
    variables = harness.keras3_variables(weights)
    names = list(weights)
    optimizer.build([variables[n] for n in names])
    inner = getattr(optimizer, "inner_optimizer", optimizer)

    @tf.function
    def apply(grads):
        optimizer.apply_gradients([(None if g is None else g * scale, variables[n]) for n, g in zip(names, grads)])

    history = []
    for step in stream:
        apply([step[n] for n in names])
        history.append({n: (variables[n].numpy(), *(s.numpy() for s in inner.get_slots(variables[n]))) for n in names})
    return history


@pytest.mark.parametrize("kind", KINDS)
def test_loss_scaled_gradients_give_the_unscaled_update_bit_for_bit(kind):
    weights = harness.initial_weights()
    stream = harness.gradient_steps(weights, steps=3)
    make = lambda: CLASSES[kind](learning_rate=0.01, weight_decay_rate=0.01, global_clipnorm=1.0)  # noqa: E731
    scale = 2.0**12
    scaled = _train_pairs(keras.optimizers.LossScaleOptimizer(make(), initial_scale=scale), weights, stream, scale)
    plain = _train_pairs(make(), weights, stream)
    for step, (a, b) in enumerate(zip(scaled, plain)):
        for name in a:
            for x, y in zip(a[name], b[name]):
                assert np.array_equal(x, y), f"step {step}, {name}"


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_bfloat16_keeps_float32_variables_slots_and_update_math(flavour, set_policy, kind):
    set_policy("mixed_bfloat16")
    keras_module, api = cases.flavour_modules(flavour)
    model = cases.build_model(keras_module)
    optimizer = cases.make_optimizer(api, kind)
    model.compile(optimizer=optimizer, loss="mse")
    assert model.optimizer is optimizer  # no loss scaling for bfloat16
    optimizer.build(model.trainable_variables)
    x, y = cases.dataset()
    gradients = []
    for t in range(3):
        batch = slice(t * cases.GLOBAL_BATCH, (t + 1) * cases.GLOBAL_BATCH)
        with tf.GradientTape() as tape:
            loss = cases.replica_loss(model, x[batch], y[batch])
        grads = tape.gradient(loss, model.trainable_variables)
        assert {g.dtype for g in grads} == {tf.float32}
        gradients.append({name_of(v): g.numpy().astype(np.float64) for v, g in zip(model.trainable_variables, grads)})
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    assert model.layers[0].compute_dtype == "bfloat16"
    assert dtype_names(model.trainable_variables) == {"float32"}
    assert slot_dtypes(optimizer, model) == {"float32"}
    start = {name_of(v): w for v, w in zip(model.trainable_variables, cases.initial_weights())}
    reference = reference_numpy.run(
        kind,
        start,
        gradients,
        lambda t: reference_numpy.bert_learning_rate(t, 0.05, 10, 2),
        weight_decay_rate=0.01,
        exclude_from_weight_decay=cases.EXCLUSIONS,
        clip_norm=cases.CLIPNORM,
    )[-1]
    for v in model.trainable_variables:
        for ours, expected in zip((v, *optimizer.get_slots(v)), reference[name_of(v)]):
            np.testing.assert_allclose(ours.numpy(), expected, rtol=2e-5, atol=1e-6, err_msg=name_of(v))


@pytest.mark.parametrize("kind", KINDS)
def test_float16_variable_gets_float16_slots_and_float16_update(flavour, kind):
    rng = np.random.default_rng(4)
    start = rng.normal(0.0, 1.0, (8, 4)).astype(np.float16)
    grads = [rng.normal(0.0, 1.0, (8, 4)).astype(np.float16) for _ in range(4)]
    variable = harness.make_variables(flavour, {"kernel": start})["kernel"]
    optimizer = getattr(harness.front_end(flavour), CLASS_NAMES[kind])(learning_rate=0.01, weight_decay_rate=0.01)
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), variable)])
    m, v = optimizer.get_slots(variable)
    assert dtype_names([variable, m, v]) == {"float16"}
    reference = reference_numpy.run(
        kind,
        {"kernel": start},
        [{"kernel": g.astype(np.float64)} for g in grads],
        lambda t: 0.01,
        weight_decay_rate=0.01,
    )[-1]["kernel"]
    # float16 keeps ~3 decimal digits; the slots' v is ~1e-3 * g^2.
    for ours, expected in zip((variable, m, v), reference):
        np.testing.assert_allclose(ours.numpy().astype(np.float64), expected, rtol=1e-2, atol=2e-3)
