"""Keras 3 ``gradient_accumulation_steps=N``: one update on the mean of N micro-batch gradients.

Unlike Keras's own optimizers, ours evaluate the learning-rate schedule (and
LAMB's bias correction) at the number of *updates*, not micro-batches: BERT's
``num_train_steps`` counts updates.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import harness
import reference_numpy
from tf_bertopt import keras3

MICRO = 3
UPDATES = 5
INIT_LR, DECAY_STEPS, WARMUP = 0.02, 8, 2
CLIP = 1.0
NAME_ARGS = dict(exclude_from_weight_decay=harness.EXCLUSIONS, include_in_weight_decay=harness.INCLUSIONS)
KIND_ARGS = {
    "adamw": dict(weight_decay_rate=0.01),
    "lamb": dict(weight_decay_rate=0.01, exclude_from_layer_adaptation=["LayerNorm"], bias_correction=True),
}


def make_optimizer(kind, **keras_args):
    cls = keras3.AdamWeightDecay if kind == "adamw" else keras3.LAMB
    schedule = keras3.WarmupPolynomialDecay(INIT_LR, DECAY_STEPS, WARMUP)
    return cls(learning_rate=schedule, global_clipnorm=CLIP, **KIND_ARGS[kind], **NAME_ARGS, **keras_args)


def micro_batches(weights):
    """Gradients whose means have global norms on both sides of CLIP."""
    stream = harness.gradient_steps(weights, steps=MICRO * UPDATES, seed=5)
    batches = []
    for t, step in enumerate(stream):
        scale = np.float32(1.0 if (t // MICRO) % 2 == 0 else 0.2)
        batches.append({n: np.zeros_like(weights[n]) if g is None else g * scale for n, g in step.items()})
    return batches


@tf.function
def _mean(group):
    # As Keras forms it, in a graph: (g_N + (g_1 + ... + g_{N-1})) / N. In a
    # graph, TensorFlow turns "/ N" into "* (1/N)", so numpy would differ in the last bit.
    total = group[0]
    for g in group[1:-1]:
        total = total + g
    return (group[-1] + total) / MICRO


def keras_mean(micro):
    means = []
    for u in range(UPDATES):
        group = micro[u * MICRO : (u + 1) * MICRO]
        means.append({name: _mean([step[name] for step in group]).numpy() for name in group[0]})
    return means


@pytest.fixture(scope="module")
def runs():
    weights = harness.initial_weights()
    micro = micro_batches(weights)
    means = keras_mean(micro)
    results = {}
    for kind in KIND_ARGS:
        accumulating = make_optimizer(kind, gradient_accumulation_steps=MICRO)
        results[kind] = dict(
            accumulated=harness.run_keras3(accumulating, weights, micro),
            optimizer=accumulating,
            plain=harness.run_keras3(make_optimizer(kind), weights, means),
        )
    return weights, means, results


def test_clipping_is_active_on_some_mean_gradients(runs):
    _, means, _ = runs
    norms = [harness.global_norm(mean) for mean in means]
    assert min(norms) < CLIP < max(norms)


@pytest.mark.parametrize("kind", KIND_ARGS)
def test_accumulated_update_equals_one_step_on_the_mean_gradient(runs, kind):
    _, _, results = runs
    accumulated, plain = results[kind]["accumulated"], results[kind]["plain"]
    for u in range(UPDATES):
        after_update = accumulated[(u + 1) * MICRO - 1]
        for name, columns in after_update.items():
            for slot, a, b in zip("wmv", columns, plain[u][name]):
                assert np.array_equal(a, b), f"update {u}, {name} ({slot})"


@pytest.mark.parametrize("kind", KIND_ARGS)
def test_micro_batches_between_updates_leave_weights_and_slots_alone(runs, kind):
    weights, _, results = runs
    accumulated = results[kind]["accumulated"]
    before = {n: (w, np.zeros_like(w), np.zeros_like(w)) for n, w in weights.items()}
    for u in range(UPDATES):
        for micro_step in range(u * MICRO, (u + 1) * MICRO - 1):
            for name, columns in accumulated[micro_step].items():
                for a, b in zip(columns, before[name]):
                    assert np.array_equal(a, b), f"micro-batch {micro_step}, {name}"
        before = accumulated[(u + 1) * MICRO - 1]


@pytest.mark.parametrize("kind", KIND_ARGS)
def test_schedule_and_bias_correction_advance_per_update(runs, kind):
    """Against the float64 reference fed the mean gradients, with ``lr(t)`` and
    ``1 - beta^(t+1)`` at update ``t``: a schedule stepped per micro-batch
    would be in warmup for 2/3 of a step here, and fail."""
    weights, means, results = runs
    reference = reference_numpy.run(
        kind,
        weights,
        [{n: g.astype(np.float64) for n, g in mean.items()} for mean in means],
        lambda t: reference_numpy.bert_learning_rate(t, INIT_LR, DECAY_STEPS, WARMUP),
        clip_norm=CLIP,
        **KIND_ARGS[kind],
        **NAME_ARGS,
    )
    accumulated = results[kind]["accumulated"]
    for u in range(UPDATES):
        for name, columns in accumulated[(u + 1) * MICRO - 1].items():
            for slot, a, b in zip("wmv", columns, reference[u][name]):
                np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6, err_msg=f"update {u}, {name} ({slot})")


@pytest.mark.parametrize("kind", KIND_ARGS)
def test_learning_rate_reads_the_schedule_at_the_update_count(runs, kind):
    _, _, results = runs
    optimizer = results[kind]["optimizer"]
    assert int(optimizer.iterations) == UPDATES
    expected = reference_numpy.bert_learning_rate(UPDATES, INIT_LR, DECAY_STEPS, WARMUP)
    assert float(optimizer.learning_rate) == pytest.approx(expected, rel=1e-6)
