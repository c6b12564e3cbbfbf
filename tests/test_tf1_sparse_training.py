"""A BERT-style model whose embeddings are looked up with ``tf.gather`` (BERT's
``use_one_hot_embeddings=False``, its GPU/CPU path) trains as in TF1, bit for
bit, every step: weights and both slots.

The reference is ``tf1_bert_script``: a ``tf.compat.v1`` graph with
``tf.gradients``, ``tf.clip_by_global_norm(grads, 1.0)`` (which measures the
embedding's ``IndexedSlices`` over its values, each lookup counted once) and
BERT's optimizer and schedule. Every batch repeats ids (30 lookups in a
vocabulary of 8) and clipping acts on every step.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import harness
import tf1_bert_script as script

SCHEDULE = dict(init_lr=0.05, num_train_steps=12, num_warmup_steps=3)
STEPS = 8
KINDS = ["adamw", "lamb"]
SLOTS = {"adamw": ("adam_m", "adam_v"), "lamb": ("lamb_m", "lamb_v")}
EMBEDDINGS = "bert/embeddings/word_embeddings"


@pytest.fixture(scope="module")
def tf1_runs():
    """TF1's history (and clipping norms) per optimizer and clipping order; cached."""
    runs = {}

    def get(kind, dense_before_clipping=False):
        key = (kind, dense_before_clipping)
        if key not in runs:
            runs[key] = script.train_history(
                kind == "lamb", script.initial_weights(), script.batches(STEPS), schedule=SCHEDULE,
                dense_before_clipping=dense_before_clipping,
                weight_decay_rate=0.01, exclude_from_weight_decay=script.EXCLUSIONS,
            )
        return runs[key]

    return get


def keras_embedding(flavour, table):
    """A Keras ``Embedding`` layer of ``flavour`` holding ``table``."""
    module = keras if flavour == "keras3" else tf_keras
    layer = module.layers.Embedding(table.shape[0], table.shape[1], name="word_embeddings")
    layer.build((None,))
    layer.embeddings.assign(table)
    return layer


def train_in_keras(flavour, kind, *, fused=False, embedding_layer=False):
    """STEPS steps of ``create_optimizer`` on the script's model in a tf.function;
    returns ``[{TF1 name: (w, m, v)}]`` after each step."""
    weights = script.initial_weights()
    params = harness.make_variables(flavour, weights)
    lookup = script.gather_lookup
    if embedding_layer:
        layer = keras_embedding(flavour, weights[EMBEDDINGS])
        params[EMBEDDINGS] = layer.embeddings
        lookup = lambda table, flat_ids: layer(flat_ids)  # noqa: E731
    variables = list(params.values())  # TF1's order: the order in which the norms are summed
    optimizer = harness.front_end(flavour).create_optimizer(
        SCHEDULE["init_lr"], SCHEDULE["num_train_steps"], SCHEDULE["num_warmup_steps"], kind, fused=fused
    )

    @tf.function
    def step(ids, labels):
        with tf.GradientTape() as tape:
            loss = script.forward(params, ids, labels, lookup, tf.reduce_sum)
        grads = tape.gradient(loss, variables)
        assert isinstance(grads[0], tf.IndexedSlices)
        optimizer.apply_gradients(zip(grads, variables))

    history = []
    for ids, labels in script.batches(STEPS):
        step(ids, labels)
        history.append(
            {name: tuple(np.array(x.numpy()) for x in (v, *optimizer.get_slots(v))) for name, v in params.items()}
        )
    return history


def differences_from_tf1(ours, theirs, kind) -> list[str]:
    found = []
    for step, (state, tf1_state) in enumerate(zip(ours, theirs), start=1):
        for name, columns in state.items():
            for label, value, entry in zip("wmv", columns, (name, *(f"{name}/{s}" for s in SLOTS[kind]))):
                if not np.array_equal(value, tf1_state[entry]):
                    found.append(f"step {step}, {name} ({label}): "
                                 f"{harness.max_ulp_difference(value, tf1_state[entry])} ulp")
    return found


@pytest.mark.parametrize("fused", [False, True], ids=["op_by_op", "fused"])
@pytest.mark.parametrize("kind", KINDS)
def test_gather_embeddings_with_clipping_train_as_tf1_bit_for_bit(tf1_runs, flavour, kind, fused):
    history, _ = tf1_runs(kind)
    ours = train_in_keras(flavour, kind, fused=fused)
    assert len(ours) == len(history) == STEPS
    assert differences_from_tf1(ours, history, kind) == []


@pytest.mark.parametrize("kind", KINDS)
def test_keras_embedding_layer_trains_as_tf1_gather_bit_for_bit(tf1_runs, flavour, kind):
    history, _ = tf1_runs(kind)
    ours = train_in_keras(flavour, kind, embedding_layer=True)
    assert differences_from_tf1(ours, history, kind) == []


def test_clipping_acts_on_every_step_and_counting_repeated_rows_once_would_differ(tf1_runs):
    """Guards the tests above: each batch repeats ids, clipping is active on
    every step, and clipping the summed (dense) gradient instead moves every
    weight off TF1's numbers."""
    assert all(len(np.unique(ids)) < ids.size for ids, _ in script.batches(STEPS))
    history, norms = tf1_runs("adamw")
    dense_history, dense_norms = tf1_runs("adamw", dense_before_clipping=True)
    assert min(norms) > 1.0
    assert all(abs(a - b) > 1e-3 for a, b in zip(norms, dense_norms))
    assert not np.array_equal(history[0][f"{EMBEDDINGS}/adam_m"], dense_history[0][f"{EMBEDDINGS}/adam_m"])
    for name in script.initial_weights():
        assert not np.array_equal(history[-1][name], dense_history[-1][name]), name
