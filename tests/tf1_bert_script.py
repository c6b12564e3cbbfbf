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


def forward(params, ids, labels):
    """Mean cross-entropy of the classifier; ``params`` maps TF1 names to tensors."""
    p = lambda name: params[name]  # noqa: E731
    # One-hot embedding lookup (BERT's TPU path): a dense gradient.
    x = tf.matmul(tf.one_hot(tf.reshape(ids, [-1]), VOCAB), p("bert/embeddings/word_embeddings"))
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    x = (x - mean) * tf.math.rsqrt(variance + 1e-12)
    x = x * p("bert/embeddings/LayerNorm/gamma") + p("bert/embeddings/LayerNorm/beta")
    h = tf.tanh(tf.matmul(x, p("bert/encoder/layer_0/attention/self/query/kernel"))
                + p("bert/encoder/layer_0/attention/self/query/bias"))
    h = tf.matmul(h, p("bert/encoder/layer_0/output/dense/kernel")) + p("bert/encoder/layer_0/output/dense/bias") + x
    pooled = tf.reduce_mean(tf.reshape(h, [-1, SEQ, HIDDEN]), axis=1)
    pooled = tf.tanh(tf.matmul(pooled, p("bert/pooler/dense/kernel")) + p("bert/pooler/dense/bias"))
    logits = tf.matmul(pooled, p("output_weights"), transpose_b=True) + p("output_bias")
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def train(lamb, weights, data, *, schedule, checkpoint_dir, save_after, clip_norm=1.0, **optimizer_kwargs):
    """Trains on every batch of ``data``, saving a checkpoint after ``save_after`` steps.

    Returns ``(checkpoint prefix, {name: value})``: every global variable
    (weights, slots, ``global_step``) after the last step.
    """
    with tf.Graph().as_default():
        global_step = v1.train.get_or_create_global_step()
        params = {name: v1.get_variable(name, initializer=tf.constant(value)) for name, value in weights.items()}
        # Static batch shape (TPU BERT's drop_remainder=True): with a None batch
        # dimension grappler picks other kernels, a few ulp off a tf.function's.
        ids = v1.placeholder(tf.int32, [BATCH, SEQ])
        labels = v1.placeholder(tf.int32, [BATCH])
        loss = forward(params, ids, labels)
        learning_rate = tf1_reference.bert_learning_rate(global_step, **schedule)
        tvars = v1.trainable_variables()
        grads = tf.gradients(loss, tvars)
        grads, _ = tf.clip_by_global_norm(grads, clip_norm=clip_norm)
        optimizer = tf1_reference.TF1BertOptimizer(learning_rate, lamb, **optimizer_kwargs)
        apply = optimizer.apply_gradients(zip(grads, tvars), global_step=global_step)
        with tf.control_dependencies([apply]):
            train_op = global_step.assign_add(1)
        saver = v1.train.Saver()
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            prefix = None
            for step, (batch_ids, batch_labels) in enumerate(data, start=1):
                session.run(train_op, {ids: batch_ids, labels: batch_labels})
                if step == save_after:
                    prefix = saver.save(session, os.path.join(checkpoint_dir, "model.ckpt"), global_step=global_step)
            return prefix, {v.op.name: session.run(v) for v in v1.global_variables()}


def write_checkpoint(directory, tensors, step=None):
    """A Saver checkpoint holding exactly ``tensors`` ({name: array}); returns its prefix."""
    with tf.Graph().as_default():
        variables = [v1.get_variable(name, initializer=tf.constant(value)) for name, value in tensors.items()]
        with v1.Session() as session:
            session.run(v1.variables_initializer(variables))
            return v1.train.Saver(variables).save(session, os.path.join(directory, "model.ckpt"), global_step=step)
