"""Sparse gradients (tf.IndexedSlices from embedding lookups) are clipped as
TF1's clip ops do, over their values with each lookup counted once, and then
update as their dense gradient, repeated rows summed, as TF1 did."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
import tf1_reference

EMBEDDINGS = "embeddings/word_embeddings"
INDICES = np.array([2, 0, 2, 5, 2], np.int64)  # row 2 repeated, rows 1, 3, 4 missing
MODES = {"eager": None, "function": False, "jit_compile": True}  # tf.function's jit_compile


def sparse_stream(steps=20):
    weights = harness.initial_weights()
    rng = np.random.default_rng(7)
    sparse = []
    for step in harness.gradient_steps(weights, steps):
        values = rng.normal(0.0, 0.4, (len(INDICES), 4)).astype(np.float32)
        sparse.append(dict(step, **{EMBEDDINGS: (values, INDICES)}))
    return weights, sparse


def optimizer(flavour, kind, **kwargs):
    api = harness.front_end(flavour)
    cls = api.AdamWeightDecay if kind == "adamw" else api.LAMB
    return cls(learning_rate=0.01, weight_decay_rate=0.01, exclude_from_weight_decay=harness.EXCLUSIONS, **kwargs)


def assert_histories_equal(a, b):
    for step, (x, y) in enumerate(zip(a, b)):
        for name in x:
            for slot, p, q in zip("wmv", x[name], y[name]):
                assert np.array_equal(p, q), f"step {step}, {name} ({slot})"


def first_moment_after_one_lookup_step(flavour, mode, ids, upstream, **optimizer_kwargs):
    """``m`` after one AdamWeightDecay step (learning rate 0) on a 4x3 table
    looked up with ``ids``, the loss being ``upstream * sum(lookups)``: ``m`` is
    ``(1 - beta_1)`` times the clipped gradient the update used."""
    table = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    variable = keras.Variable(table, name="table") if flavour == "keras3" else tf.Variable(table, name="table")
    opt = harness.front_end(flavour).AdamWeightDecay(learning_rate=0.0, **optimizer_kwargs)
    watched = variable.value if flavour == "keras3" else variable

    def step():
        with tf.GradientTape() as tape:
            loss = upstream * tf.reduce_sum(tf.gather(watched, tf.constant(ids)))
        grad = tape.gradient(loss, watched)
        assert isinstance(grad, tf.IndexedSlices)
        opt.apply_gradients([(grad, variable)])

    (step if MODES[mode] is None else tf.function(step, jit_compile=MODES[mode]))()
    return opt.get_slots(variable)[0].numpy()


@pytest.mark.parametrize("fused", [False, True], ids=["op_by_op", "fused"])
@pytest.mark.parametrize("mode", MODES)
def test_global_clipnorm_counts_each_lookup_of_a_row_as_tf1(flavour, mode, fused):
    # Row 1 looked up 3 times, row 2 once, each lookup's gradient 3.0 per
    # element: TF1's global norm is over the 4 looked-up rows, sqrt(4*3*9) = 10.39
    # (the summed rows, 9s and 3s, would have norm 16.43).
    m = first_moment_after_one_lookup_step(flavour, mode, [1, 1, 1, 2], 3.0, global_clipnorm=1.0, fused=fused)
    scaled = 3.0 / np.sqrt(4 * 3 * 9.0)
    expected = 0.1 * np.array([[0, 0, 0], [3 * scaled] * 3, [scaled] * 3, [0, 0, 0]])
    np.testing.assert_allclose(m, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("mode", MODES)
def test_clipnorm_measures_the_values_of_the_slices_as_tf1(flavour, mode):
    m = first_moment_after_one_lookup_step(flavour, mode, [0, 0, 3], 2.0, clipnorm=1.0)
    scaled = 2.0 / np.sqrt(3 * 3 * 4.0)  # 3 lookups, not rows of 4s and 2s (norm 7.75)
    expected = 0.1 * np.array([[2 * scaled] * 3, [0, 0, 0], [0, 0, 0], [scaled] * 3])
    np.testing.assert_allclose(m, expected, rtol=1e-6, atol=0)


def test_clipvalue_clips_each_looked_up_value_before_rows_are_summed(flavour):
    m = first_moment_after_one_lookup_step(flavour, "function", [1, 1, 1], 3.0, clipvalue=1.0)
    np.testing.assert_allclose(m[1], 0.1 * np.array([3.0, 3.0, 3.0]), rtol=1e-6, atol=0)


@pytest.mark.parametrize("clip_norm", [None, 1.0], ids=["unclipped", "global_clipnorm"])
@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_sparse_gradient_equals_tf1_graph_fed_indexed_slices(flavour, kind, clip_norm):
    weights, sparse = sparse_stream()
    ours = harness.run(flavour, optimizer(flavour, kind, global_clipnorm=clip_norm), weights, sparse,
                       sparse=[EMBEDDINGS])
    theirs = tf1_reference.run(kind == "lamb", weights, sparse, learning_rate=0.01, sparse=[EMBEDDINGS],
                               clip_norm=clip_norm, weight_decay_rate=0.01,
                               exclude_from_weight_decay=harness.EXCLUSIONS)
    assert_histories_equal(ours, theirs)
    untouched_rows = [1, 3, 4]
    assert np.all(ours[0][EMBEDDINGS][1][untouched_rows] == 0)  # no gradient, no moment
