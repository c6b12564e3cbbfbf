"""Keras's ``use_ema=True`` with both optimizers, in both Keras flavours: the moving average of the weights.

The flavours' rules, written out independently here:

* Keras 3: after the first update the average is the weights; after each
  later update ``average <- momentum * average + (1 - momentum) * weights``,
  for every variable.
* tf-keras: the average starts as the initial weights and takes that step
  after every update, for the variables that had a gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import harness

STEPS = 8
MOMENTUM = 0.75
KINDS = {"adamw": "AdamWeightDecay", "lamb": "LAMB"}


def train(flavour, kind, **ema_args):
    """Returns ``[(weights, averages)]`` after each update, as dicts by name."""
    weights = harness.initial_weights()
    stream = harness.gradient_steps(weights, steps=STEPS, seed=11)
    variables = harness.make_variables(flavour, weights)
    names = list(weights)
    cls = getattr(harness.front_end(flavour), KINDS[kind])
    optimizer = cls(learning_rate=0.01, weight_decay_rate=0.01, global_clipnorm=1.0, use_ema=True, **ema_args)
    optimizer.build([variables[n] for n in names])
    averages = dict(zip(names, optimizer._model_variables_moving_average))  # Keras's own list, build order

    @tf.function
    def apply(grads):
        optimizer.apply_gradients([(g, variables[n]) for n, g in zip(names, grads)])

    history = []
    for step in stream:
        apply([step[n] for n in names])
        history.append(({n: variables[n].numpy() for n in names}, {n: averages[n].numpy() for n in names}))
    return history


@pytest.mark.parametrize("kind", KINDS)
def test_moving_average_equals_independent_computation(flavour, kind):
    history = train(flavour, kind, ema_momentum=MOMENTUM)
    stream = harness.gradient_steps(harness.initial_weights(), steps=STEPS, seed=11)
    expected = None
    if flavour == "tf_keras":
        expected = {n: w.astype(np.float64) for n, w in harness.initial_weights().items()}
    for step, (weights, averages) in enumerate(history):
        current = {n: w.astype(np.float64) for n, w in weights.items()}
        if expected is None:
            expected = current
        else:
            moves = [n for n in current if flavour == "keras3" or stream[step][n] is not None]
            expected.update({n: MOMENTUM * expected[n] + (1 - MOMENTUM) * current[n] for n in moves})
        for name in weights:
            np.testing.assert_allclose(averages[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=f"{step} {name}")
    moved = [n for n in weights if not np.allclose(averages[n], weights[n], rtol=1e-4)]
    assert moved, "the average must lag behind the weights, or this test proves nothing"
