"""Sparse gradients (tf.IndexedSlices from embedding lookups) give exactly the
dense-gradient result, repeated rows summed, as TF1 did."""

from __future__ import annotations

import numpy as np
import pytest

import harness
import tf1_reference

EMBEDDINGS = "embeddings/word_embeddings"
INDICES = np.array([2, 0, 2, 5, 2], np.int64)  # row 2 repeated, rows 1, 3, 4 missing


def sparse_and_dense_streams(steps=20):
    weights = harness.initial_weights()
    rng = np.random.default_rng(7)
    sparse, dense = [], []
    for step in harness.gradient_steps(weights, steps):
        values = rng.normal(0.0, 0.4, (len(INDICES), 4)).astype(np.float32)
        summed = np.zeros_like(weights[EMBEDDINGS])
        np.add.at(summed, INDICES, values)
        sparse.append(dict(step, **{EMBEDDINGS: (values, INDICES)}))
        dense.append(dict(step, **{EMBEDDINGS: summed}))
    return weights, sparse, dense


def optimizer(flavour, kind, **kwargs):
    api = harness.front_end(flavour)
    cls = api.AdamWeightDecay if kind == "adamw" else api.LAMB
    return cls(learning_rate=0.01, weight_decay_rate=0.01, exclude_from_weight_decay=harness.EXCLUSIONS, **kwargs)


def assert_histories_equal(a, b):
    for step, (x, y) in enumerate(zip(a, b)):
        for name in x:
            for slot, p, q in zip("wmv", x[name], y[name]):
                assert np.array_equal(p, q), f"step {step}, {name} ({slot})"


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_sparse_gradient_equals_dense_gradient_with_clipping(flavour, kind):
    weights, sparse, dense = sparse_and_dense_streams()
    from_sparse = harness.run(flavour, optimizer(flavour, kind, global_clipnorm=1.0), weights, sparse, sparse=[EMBEDDINGS])
    from_dense = harness.run(flavour, optimizer(flavour, kind, global_clipnorm=1.0), weights, dense)
    assert_histories_equal(from_sparse, from_dense)


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_sparse_gradient_equals_tf1_graph_fed_indexed_slices(flavour, kind):
    weights, sparse, _ = sparse_and_dense_streams()
    ours = harness.run(flavour, optimizer(flavour, kind), weights, sparse, sparse=[EMBEDDINGS])
    theirs = tf1_reference.run(kind == "lamb", weights, sparse, learning_rate=0.01, sparse=[EMBEDDINGS],
                               weight_decay_rate=0.01, exclude_from_weight_decay=harness.EXCLUSIONS)
    assert_histories_equal(ours, theirs)
    untouched_rows = [1, 3, 4]
    assert np.all(ours[0][EMBEDDINGS][1][untouched_rows] == 0)  # no gradient, no moment
