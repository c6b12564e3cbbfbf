"""ELECTRA's TF1 ``create_optimizer`` as a ``tf.compat.v1`` graph: its schedule and layer rates.

Written for these tests from ELECTRA's published formulas
(``google-research/electra``, ``model/optimization.py``): the learning rate
is ``polynomial_decay`` times ``min(1, t/W)`` with ``W = max(num_train_steps *
warmup_proportion, warmup_steps)``; with layer-wise decay it becomes a dict,
name substring -> ``learning_rate * decay ** (n_layers + 2 - depth)`` (a
tensor times a Python float), which ``tf1_reference.TF1BertOptimizer``
applies key by key as ELECTRA's optimizer does. Clipping by global norm 1.0
and the train op are ``tf1_reference.run``'s. Imports nothing from tf_bertopt.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

import tf1_reference

v1 = tf.compat.v1
EXCLUSIONS = ["LayerNorm", "layer_norm", "bias"]


def electra_learning_rate(global_step, learning_rate, num_train_steps, warmup_steps=0, warmup_proportion=0,
                          lr_decay_power=1.0):
    """ELECTRA's scheduled learning rate, a float32 tensor of ``global_step``."""
    rate = v1.train.polynomial_decay(learning_rate, global_step, num_train_steps, end_learning_rate=0.0,
                                     power=lr_decay_power, cycle=False)
    warmup = max(num_train_steps * warmup_proportion, warmup_steps)
    rate *= tf.minimum(1.0, tf.cast(global_step, tf.float32) / tf.cast(warmup, tf.float32))
    return rate


def electra_layer_rates(rate, layer_decay, n_layers):
    """ELECTRA's rate per name key, in ELECTRA's key order."""
    depths = collections.OrderedDict([("/embeddings/", 0), ("/embeddings_project/", 0), ("task_specific/", n_layers + 2)])
    for layer in range(n_layers):
        depths[f"encoder/layer_{layer}/"] = layer + 1
    return {key: rate * (layer_decay ** (n_layers + 2 - depth)) for key, depth in depths.items()}


def schedule_values(steps, **schedule_kwargs):
    """``electra_learning_rate`` at each of ``steps``, in a session."""
    with tf.Graph().as_default():
        step = v1.placeholder(tf.int64, [])
        rate = electra_learning_rate(step, **schedule_kwargs)
        with v1.Session() as session:
            return np.array([session.run(rate, {step: s}) for s in steps], np.float32)


def run(weights, gradient_steps, *, schedule, layer_decay=None, n_layers=None, lamb=False,
        weight_decay_rate=0.01, exclude_from_layer_adaptation=None):
    """ELECTRA's training op on fed gradients; ``[{name: (w, m, v)}]`` after each step."""

    def learning_rate_fn(global_step):
        rate = electra_learning_rate(global_step, **schedule)
        return rate if layer_decay is None else electra_layer_rates(rate, layer_decay, n_layers)

    extra = {} if not lamb else {"exclude_from_layer_adaptation": exclude_from_layer_adaptation}
    return tf1_reference.run(lamb, weights, gradient_steps, learning_rate_fn=learning_rate_fn, clip_norm=1.0,
                             weight_decay_rate=weight_decay_rate, exclude_from_weight_decay=EXCLUSIONS, **extra)
