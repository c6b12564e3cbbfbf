"""Keras's ``use_ema=True`` with both optimizers: the moving average of the weights.

Keras's rule, written out independently here: after the first update the
average is the weights; after each later update
``average <- momentum * average + (1 - momentum) * weights``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import harness
import tf_bertopt

STEPS = 8
MOMENTUM = 0.75
KINDS = {"adamw": tf_bertopt.AdamWeightDecay, "lamb": tf_bertopt.LAMB}


def train(kind, **ema_args):
    """Returns ``[(weights, averages)]`` after each update, as dicts by name."""
    weights = harness.initial_weights()
    stream = harness.gradient_steps(weights, steps=STEPS, seed=11)
    variables = harness.keras3_variables(weights)
    names = list(weights)
    optimizer = KINDS[kind](learning_rate=0.01, weight_decay_rate=0.01, global_clipnorm=1.0, use_ema=True, **ema_args)
    optimizer.build([variables[n] for n in names])
    averages = dict(zip(names, optimizer._model_variables_moving_average))  # Keras's own slot list

    @tf.function
    def apply(grads):
        optimizer.apply_gradients([(g, variables[n]) for n, g in zip(names, grads)])

    history = []
    for step in stream:
        apply([step[n] for n in names])
        history.append(({n: variables[n].numpy() for n in names}, {n: averages[n].numpy() for n in names}))
    return history


@pytest.mark.parametrize("kind", KINDS)
def test_moving_average_equals_independent_computation(kind):
    history = train(kind, ema_momentum=MOMENTUM)
    expected = None
    for step, (weights, averages) in enumerate(history):
        current = {n: w.astype(np.float64) for n, w in weights.items()}
        if expected is None:
            expected = current
        else:
            expected = {n: MOMENTUM * expected[n] + (1 - MOMENTUM) * current[n] for n in current}
        for name in weights:
            np.testing.assert_allclose(averages[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=f"{step} {name}")
    moved = [n for n in weights if not np.allclose(averages[n], weights[n], rtol=1e-4)]
    assert moved, "the average must lag behind the weights, or this test proves nothing"
