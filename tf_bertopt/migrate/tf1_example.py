"""A small TF1 BERT checkpoint with optimizer state, to try the migration tools on.

``write_tf1_example_checkpoint(directory)`` trains a tiny BERT-shaped
classifier (TF1 BERT's variable names, one encoder layer, hidden size 8) for a
few steps the way TF1 BERT's ``run_classifier.py`` did, in a
``tf.compat.v1`` graph: ``tf.gradients``, gradients clipped to global norm
1.0, BERT's ``AdamWeightDecayOptimizer`` (slots ``<variable>/adam_m`` and
``<variable>/adam_v``, no decay on ``LayerNorm`` and ``bias``), the warmup +
linear-decay learning rate, ``global_step`` incremented after each update,
and a ``tf.compat.v1.train.Saver`` checkpoint. Nothing of tf_bertopt's
optimizers is used: the checkpoint is what legacy TF1 code writes.

``tf-bertopt make-tf1-example DIR`` calls it from the command line.
"""

from __future__ import annotations

import os

import numpy as np

VOCAB, POSITIONS, HIDDEN, INTERMEDIATE, CLASSES = 32, 8, 8, 16, 2
EXCLUSIONS = ("LayerNorm", "layer_norm", "bias")


def tf1_variable_shapes(layers: int = 1) -> dict[str, tuple[int, ...]]:
    """TF1 BERT's variable names (classifier head of ``run_classifier.py``) and their shapes here."""
    shapes = {
        "bert/embeddings/word_embeddings": (VOCAB, HIDDEN),
        "bert/embeddings/position_embeddings": (POSITIONS, HIDDEN),
        "bert/embeddings/LayerNorm/gamma": (HIDDEN,),
        "bert/embeddings/LayerNorm/beta": (HIDDEN,),
    }
    for index in range(layers):
        layer = f"bert/encoder/layer_{index}"
        for dense, (rows, columns) in {
            "attention/self/query": (HIDDEN, HIDDEN),
            "attention/self/key": (HIDDEN, HIDDEN),
            "attention/self/value": (HIDDEN, HIDDEN),
            "attention/output/dense": (HIDDEN, HIDDEN),
            "intermediate/dense": (HIDDEN, INTERMEDIATE),
            "output/dense": (INTERMEDIATE, HIDDEN),
        }.items():
            shapes[f"{layer}/{dense}/kernel"] = (rows, columns)
            shapes[f"{layer}/{dense}/bias"] = (columns,)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{layer}/{norm}/gamma"] = (HIDDEN,)
            shapes[f"{layer}/{norm}/beta"] = (HIDDEN,)
    shapes.update({
        "bert/pooler/dense/kernel": (HIDDEN, HIDDEN),
        "bert/pooler/dense/bias": (HIDDEN,),
        "output_weights": (CLASSES, HIDDEN),
        "output_bias": (CLASSES,),
    })
    return shapes


def write_tf1_example_checkpoint(
    directory: str | os.PathLike,
    *,
    steps: int = 20,
    init_lr: float = 1e-3,
    train_steps: int = 100,
    warmup_steps: int = 10,
    layers: int = 1,
    seed: int = 0,
) -> str:
    """Trains the tiny TF1 BERT classifier ``steps`` updates and saves a TF1 checkpoint.

    The learning rate at step ``t`` is BERT's: ``init_lr * t / warmup_steps``
    during warmup, ``init_lr * (1 - t / train_steps)`` after.

    Args:
        directory: where to write ``model.ckpt-<steps>.*`` and the
            ``checkpoint`` file (created if missing).
        steps: updates before saving (``global_step`` in the checkpoint), >= 1.
        init_lr: BERT's peak learning rate (``init_lr``), > 0.
        train_steps: BERT's ``num_train_steps``, the decay horizon, > 0.
        warmup_steps: BERT's ``num_warmup_steps``, >= 0.
        layers: encoder layers, >= 1.
        seed: initial weights and training data.

    Returns:
        The checkpoint prefix (``<directory>/model.ckpt-<steps>``).

    Raises:
        ValueError: an argument is out of range.
    """
    for name, value, minimum in (("steps", steps, 1), ("train_steps", train_steps, 1),
                                 ("warmup_steps", warmup_steps, 0), ("layers", layers, 1)):
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(
                f"write_tf1_example_checkpoint: `{name}` must be an integer >= {minimum}; received {name}={value!r}."
            )
    if not init_lr > 0:
        raise ValueError(f"write_tf1_example_checkpoint: `init_lr` must be > 0; received init_lr={init_lr!r}.")
    import tensorflow as tf

    v1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    batch, sequence = 4, POSITIONS
    os.makedirs(directory, exist_ok=True)
    with tf.Graph().as_default():
        params = {
            name: v1.get_variable(name, initializer=tf.constant(_initial_value(rng, name, shape)))
            for name, shape in tf1_variable_shapes(layers).items()
        }
        ids = v1.placeholder(tf.int32, [batch, sequence])
        labels = v1.placeholder(tf.int32, [batch])
        loss = _classifier_loss(tf, params, ids, labels, layers)
        global_step = v1.train.get_or_create_global_step()
        learning_rate = _bert_learning_rate(tf, global_step, init_lr, train_steps, warmup_steps)
        tvars = v1.trainable_variables()
        grads, _ = tf.clip_by_global_norm(tf.gradients(loss, tvars), clip_norm=1.0)
        with tf.control_dependencies([_adam_weight_decay_update(tf, zip(grads, tvars), learning_rate)]):
            train_op = global_step.assign_add(1)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            for _ in range(steps):
                feed = {ids: rng.integers(0, VOCAB, (batch, sequence)), labels: rng.integers(0, CLASSES, batch)}
                session.run(train_op, feed)
            return v1.train.Saver().save(session, os.path.join(os.fspath(directory), "model.ckpt"),
                                         global_step=global_step)


def _initial_value(rng, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name.endswith("gamma"):
        return np.ones(shape, np.float32)
    if name.endswith(("beta", "bias")):
        return np.zeros(shape, np.float32)
    return rng.normal(0.0, 0.02, shape).astype(np.float32)


def _classifier_loss(tf, params, ids, labels, layers: int):
    """Mean cross-entropy of BERT's classifier on ``ids``: one attention head per layer."""

    def layer_norm(x, prefix):
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        normalized = (x - mean) * tf.math.rsqrt(variance + 1e-12)
        return normalized * params[f"{prefix}/gamma"] + params[f"{prefix}/beta"]

    def dense(x, prefix):
        return tf.matmul(x, params[f"{prefix}/kernel"]) + params[f"{prefix}/bias"]

    batch, sequence = ids.shape
    # One-hot lookup, as TF1 BERT on TPUs (use_one_hot_embeddings): a dense gradient.
    words = tf.matmul(tf.one_hot(tf.reshape(ids, [-1]), VOCAB), params["bert/embeddings/word_embeddings"])
    x = tf.reshape(words, [batch, sequence, HIDDEN]) + params["bert/embeddings/position_embeddings"]
    x = tf.reshape(layer_norm(x, "bert/embeddings/LayerNorm"), [-1, HIDDEN])
    for index in range(layers):
        layer = f"bert/encoder/layer_{index}"
        query, key, value = (
            tf.reshape(dense(x, f"{layer}/attention/self/{part}"), [batch, sequence, HIDDEN])
            for part in ("query", "key", "value")
        )
        weights = tf.nn.softmax(tf.matmul(query, key, transpose_b=True) / np.sqrt(HIDDEN).astype(np.float32))
        context = tf.reshape(tf.matmul(weights, value), [-1, HIDDEN])
        x = layer_norm(dense(context, f"{layer}/attention/output/dense") + x, f"{layer}/attention/output/LayerNorm")
        hidden = tf.nn.gelu(dense(x, f"{layer}/intermediate/dense"))
        x = layer_norm(dense(hidden, f"{layer}/output/dense") + x, f"{layer}/output/LayerNorm")
    first_token = tf.reshape(x, [batch, sequence, HIDDEN])[:, 0]
    pooled = tf.tanh(dense(first_token, "bert/pooler/dense"))
    logits = tf.matmul(pooled, params["output_weights"], transpose_b=True) + params["output_bias"]
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def _bert_learning_rate(tf, global_step, init_lr: float, train_steps: int, warmup_steps: int):
    """TF1 BERT's ``optimization.create_optimizer`` schedule as graph ops."""
    v1 = tf.compat.v1
    decayed = v1.train.polynomial_decay(tf.constant(init_lr), global_step, train_steps, end_learning_rate=0.0)
    if not warmup_steps:
        return decayed
    step = tf.cast(global_step, tf.float32)
    warmup = init_lr * step / float(warmup_steps)
    in_warmup = tf.cast(step < warmup_steps, tf.float32)
    return (1.0 - in_warmup) * decayed + in_warmup * warmup


def _adam_weight_decay_update(tf, grads_and_vars, learning_rate, weight_decay_rate=0.01, beta_1=0.9,
                              beta_2=0.999, epsilon=1e-6):
    """TF1 BERT's ``AdamWeightDecayOptimizer.apply_gradients`` (no bias correction)."""
    v1 = tf.compat.v1
    assignments = []
    for grad, param in grads_and_vars:
        name = param.op.name
        m = v1.get_variable(name + "/adam_m", param.shape, tf.float32, v1.zeros_initializer(), trainable=False)
        v = v1.get_variable(name + "/adam_v", param.shape, tf.float32, v1.zeros_initializer(), trainable=False)
        next_m = beta_1 * m + (1.0 - beta_1) * grad
        next_v = beta_2 * v + (1.0 - beta_2) * tf.square(grad)
        update = next_m / (tf.sqrt(next_v) + epsilon)
        if not any(pattern in name for pattern in EXCLUSIONS):
            update += weight_decay_rate * param
        assignments += [param.assign(param - learning_rate * update), m.assign(next_m), v.assign(next_v)]
    return tf.group(*assignments)
