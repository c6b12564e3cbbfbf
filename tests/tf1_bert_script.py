"""A legacy TF1 BERT-style fine-tuning script, run under ``tf.compat.v1`` graph mode.

A one-layer BERT-like classifier with BERT's variable names, trained as TF1
BERT's ``run_classifier`` did: ``tf.gradients``, ``tf.clip_by_global_norm``
at 1.0, BERT's optimizer and schedule (``tf1_reference``), ``global_step``
incremented after each update, and a ``tf.compat.v1.train.Saver``
checkpoint. It imports nothing from tf_bertopt.

``forward`` is plain TensorFlow on a dict of tensors keyed by TF1 name, so a
TF2 loop can run the same model on Keras variables.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

import tf1_reference

v1 = tf.compat.v1

VOCAB, SEQ, HIDDEN, CLASSES, BATCH = 8, 5, 4, 3, 6
EXCLUSIONS = ["LayerNorm", "layer_norm", "bias"]


def initial_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(0.0, 0.4, shape).astype(np.float32)  # noqa: E731
    return {
        "bert/embeddings/word_embeddings": normal(VOCAB, HIDDEN),
        "bert/embeddings/LayerNorm/gamma": np.ones(HIDDEN, np.float32),
        "bert/embeddings/LayerNorm/beta": np.zeros(HIDDEN, np.float32),
        "bert/encoder/layer_0/attention/self/query/kernel": normal(HIDDEN, HIDDEN),
        "bert/encoder/layer_0/attention/self/query/bias": np.zeros(HIDDEN, np.float32),
        "bert/encoder/layer_0/output/dense/kernel": normal(HIDDEN, HIDDEN),
        "bert/encoder/layer_0/output/dense/bias": np.zeros(HIDDEN, np.float32),
        "bert/pooler/dense/kernel": normal(HIDDEN, HIDDEN),
        "bert/pooler/dense/bias": np.zeros(HIDDEN, np.float32),
        "output_weights": normal(CLASSES, HIDDEN),
        "output_bias": np.zeros(CLASSES, np.float32),
    }


def batches(count: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(0, VOCAB, (BATCH, SEQ)).astype(np.int32), rng.integers(0, CLASSES, BATCH).astype(np.int32))
        for _ in range(count)
    ]


def one_hot_lookup(table, flat_ids):
    """BERT's ``use_one_hot_embeddings=True`` (its TPU path): a dense gradient."""
    return tf.matmul(tf.one_hot(flat_ids, VOCAB), table)


def gather_lookup(table, flat_ids):
    """BERT's ``use_one_hot_embeddings=False`` (GPU/CPU): a ``tf.IndexedSlices``
    gradient with one row per id, repeated ids repeated."""
    return tf.gather(table, flat_ids)


LOOKUPS = {"one_hot": one_hot_lookup, "gather": gather_lookup}


def forward(params, ids, labels, lookup=one_hot_lookup, reduction=tf.reduce_mean):
    """Cross-entropy of the classifier, its ``reduction`` over the batch (mean
    or sum); ``params`` maps TF1 names to tensors.

    ``lookup(table, flat_ids)`` embeds the ids (``one_hot_lookup``,
    ``gather_lookup`` or, in TF2, a Keras ``Embedding`` layer ignoring ``table``).
    """
    p = lambda name: params[name]  # noqa: E731
    x = lookup(p("bert/embeddings/word_embeddings"), tf.reshape(ids, [-1]))
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    x = (x - mean) * tf.math.rsqrt(variance + 1e-12)
    x = x * p("bert/embeddings/LayerNorm/gamma") + p("bert/embeddings/LayerNorm/beta")
    h = tf.tanh(tf.matmul(x, p("bert/encoder/layer_0/attention/self/query/kernel"))
                + p("bert/encoder/layer_0/attention/self/query/bias"))
    h = tf.matmul(h, p("bert/encoder/layer_0/output/dense/kernel")) + p("bert/encoder/layer_0/output/dense/bias") + x
    pooled = tf.reduce_mean(tf.reshape(h, [-1, SEQ, HIDDEN]), axis=1)
    pooled = tf.tanh(tf.matmul(pooled, p("bert/pooler/dense/kernel")) + p("bert/pooler/dense/bias"))
    logits = tf.matmul(pooled, p("output_weights"), transpose_b=True) + p("output_bias")
    return reduction(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def train(lamb, weights, data, *, schedule, checkpoint_dir, save_after, clip_norm=1.0, **optimizer_kwargs):
    """Trains on every batch of ``data``, saving a checkpoint after ``save_after`` steps.

    Returns ``(checkpoint prefix, {name: value})``: every global variable
    (weights, slots, ``global_step``) after the last step.
    """
    prefix, history = None, []

    def after_step(session, saver, step):
        nonlocal prefix
        if step == save_after:
            prefix = saver.save(session, os.path.join(checkpoint_dir, "model.ckpt"), global_step=step)
        if step == len(data):
            history.append({v.op.name: session.run(v) for v in v1.global_variables()})

    _train(lamb, weights, data, schedule, clip_norm, one_hot_lookup, tf.reduce_mean, False, after_step,
           optimizer_kwargs)
    return prefix, history[-1]


def train_history(lamb, weights, data, *, schedule, lookup="gather", clip_norm=1.0, dense_before_clipping=False,
                  **optimizer_kwargs):
    """Trains on every batch of ``data``; returns every global variable after each step
    (``[{name: value}]``), and the global norm that clipping measured at each step.

    The loss is summed over the batch (as BERT's pretraining sums its losses):
    gradient norms of 2 to 9, so that clipping at 1.0 acts on every step.

    ``dense_before_clipping`` sums an ``IndexedSlices`` gradient's repeated rows
    before ``tf.clip_by_global_norm`` (not what TF1 BERT did; for contrast).
    """
    history = []

    def after_step(session, saver, step):
        history.append({v.op.name: session.run(v) for v in v1.global_variables()})

    norms = _train(lamb, weights, data, schedule, clip_norm, LOOKUPS[lookup], tf.reduce_sum, dense_before_clipping,
                   after_step, optimizer_kwargs)
    return history, norms


def _train(lamb, weights, data, schedule, clip_norm, lookup, reduction, dense_before_clipping, after_step,
           optimizer_kwargs):
    with tf.Graph().as_default():
        global_step = v1.train.get_or_create_global_step()
        params = {name: v1.get_variable(name, initializer=tf.constant(value)) for name, value in weights.items()}
        # Static batch shape (TPU BERT's drop_remainder=True): with a None batch
        # dimension grappler picks other kernels, a few ulp off a tf.function's.
        ids = v1.placeholder(tf.int32, [BATCH, SEQ])
        labels = v1.placeholder(tf.int32, [BATCH])
        loss = forward(params, ids, labels, lookup, reduction)
        learning_rate = tf1_reference.bert_learning_rate(global_step, **schedule)
        tvars = v1.trainable_variables()
        grads = tf.gradients(loss, tvars)
        if dense_before_clipping:
            grads = [tf.convert_to_tensor(g) for g in grads]
        grads, norm = tf.clip_by_global_norm(grads, clip_norm=clip_norm)
        optimizer = tf1_reference.TF1BertOptimizer(learning_rate, lamb, **optimizer_kwargs)
        apply = optimizer.apply_gradients(zip(grads, tvars), global_step=global_step)
        with tf.control_dependencies([apply]):
            train_op = global_step.assign_add(1)
        saver = v1.train.Saver()
        norms = []
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            for step, (batch_ids, batch_labels) in enumerate(data, start=1):
                norms.append(session.run([train_op, norm], {ids: batch_ids, labels: batch_labels})[1])
                after_step(session, saver, step)
        return norms


def write_checkpoint(directory, tensors, step=None):
    """A Saver checkpoint holding exactly ``tensors`` ({name: array}); returns its prefix."""
    with tf.Graph().as_default():
        variables = [v1.get_variable(name, initializer=tf.constant(value)) for name, value in tensors.items()]
        with v1.Session() as session:
            session.run(v1.variables_initializer(variables))
            return v1.train.Saver(variables).save(session, os.path.join(directory, "model.ckpt"), global_step=step)
