"""Shared test inputs: variables whose names exercise every rule, gradient
streams, and a runner that trains a tf_bertopt optimizer on them, in either
Keras flavour (``FLAVOURS``; tests take the ``flavour`` fixture of conftest.py)."""

from __future__ import annotations

import contextlib
import importlib

import keras
import numpy as np
import tensorflow as tf

from tf_bertopt import name_matching

FLAVOURS = ["keras3", "tf_keras"]


def front_end(flavour: str):
    """``tf_bertopt.keras3`` or ``tf_bertopt.tf_keras``."""
    return importlib.import_module(f"tf_bertopt.{flavour}")

EXCLUSIONS = ["LayerNorm", "layer_norm", "bias"]
INCLUSIONS = ["adapter_bias"]  # a bias that is decayed all the same: include wins over exclude


def initial_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(0.0, 0.5, shape).astype(np.float32)  # noqa: E731
    return {
        "layer_0/dense/kernel": normal(4, 3),
        "layer_0/dense/bias": normal(3),
        "layer_0/LayerNorm/gamma": np.ones(3, np.float32),
        "layer_0/LayerNorm/beta": np.zeros(3, np.float32),  # zero norm: LAMB's r1 guard
        "layer_0/adapter_bias": normal(3),
        "embeddings/word_embeddings": normal(6, 4),
        "pooler/dense/bias": normal(3),  # its gradient is always zero: LAMB's r2 guard
        "layer_1/dense/kernel": normal(3, 3),  # no gradient (None) on some steps
    }


ZERO_GRADIENT = "pooler/dense/bias"
SOMETIMES_NONE = "layer_1/dense/kernel"
NONE_STEPS = {3, 4, 11}


def gradient_steps(weights, steps: int = 30, seed: int = 1):
    """Gradients whose global norm swings between ~0.2 and ~5, so that clipping
    at 1.0 is active on some steps and not on others."""
    rng = np.random.default_rng(seed)
    stream = []
    for t in range(steps):
        scale = [0.05, 0.3, 1.2][t % 3]
        step = {name: (rng.normal(0.0, scale, w.shape)).astype(np.float32) for name, w in weights.items()}
        step[ZERO_GRADIENT] = np.zeros_like(weights[ZERO_GRADIENT])
        if t in NONE_STEPS:
            step[SOMETIMES_NONE] = None
        stream.append(step)
    return stream


def global_norm(step) -> float:
    return float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in step.values() if g is not None)))


def keras3_variables(weights):
    variables = {}
    for path, value in weights.items():
        *scopes, leaf = path.split("/")
        with contextlib.ExitStack() as stack:
            for scope in scopes:
                stack.enter_context(keras.name_scope(scope))
            variables[path] = keras.Variable(value, name=leaf)
        assert variables[path].path == path
    return variables


def tf_keras_variables(weights):
    """tf-keras names variables ``scope/leaf:0``; tf_bertopt matches the name without ``:0``."""
    variables = {path: tf.Variable(value, name=path) for path, value in weights.items()}
    for path, variable in variables.items():
        assert name_matching.variable_name(variable) == path
    return variables


def make_variables(flavour: str, weights):
    return {"keras3": keras3_variables, "tf_keras": tf_keras_variables}[flavour](weights)


def run(flavour, optimizer, weights, stream, *, sparse=(), jit_compile=False):
    """Applies ``stream`` with ``optimizer``; returns ``[{name: (w, m, v)}]`` after each step.

    ``optimizer`` is an optimizer of ``flavour``, or a function that makes one
    from the flavour's module (``lambda api: api.LAMB(...)``). A wrapper such
    as a loss-scale optimizer is read through its ``inner_optimizer``.
    Gradients named in ``sparse`` are ``(values, indices)`` pairs, applied as
    ``tf.IndexedSlices``.
    """
    if not hasattr(optimizer, "apply_gradients"):
        optimizer = optimizer(front_end(flavour))
    slots = getattr(optimizer, "inner_optimizer", optimizer)
    variables = make_variables(flavour, weights)
    names = list(weights)
    optimizer.build([variables[n] for n in names])

    @tf.function(jit_compile=jit_compile)
    def apply(grads):
        pairs = []
        for name, grad in zip(names, grads):
            if name in sparse and grad is not None:
                values, indices = grad
                grad = tf.IndexedSlices(values, indices, tf.constant(weights[name].shape, tf.int64))
            pairs.append((grad, variables[name]))
        optimizer.apply_gradients(pairs)

    history = []
    for step in stream:
        apply([step[n] for n in names])
        state = {}
        for name in names:
            m, v = slots.get_slots(variables[name])
            state[name] = tuple(np.array(x.numpy()) for x in (variables[name], m, v))
        history.append(state)
    return history


def run_keras3(optimizer, weights, stream, *, sparse=(), jit_compile=False):
    """``run`` for a Keras 3 optimizer."""
    return run("keras3", optimizer, weights, stream, sparse=sparse, jit_compile=jit_compile)


def max_ulp_difference(a, b) -> int:
    """Largest distance in float32 units in the last place between two arrays."""
    a = np.ascontiguousarray(a, np.float32).view(np.int32).astype(np.int64)
    b = np.ascontiguousarray(b, np.float32).view(np.int32).astype(np.int64)
    # Map the sign-magnitude bit patterns onto a monotonic integer line.
    a = np.where(a < 0, np.int64(-(2**31)) - a, a)
    b = np.where(b < 0, np.int64(-(2**31)) - b, b)
    return int(np.max(np.abs(a - b))) if a.size else 0


def max_scaled_ulp_difference(a, b) -> float:
    """Largest |a - b| in units of the float32 spacing at the largest |b|.

    Element-wise ulps explode for elements near zero (one ulp of 1e-9 is tiny);
    this measures the error on the scale of the tensor itself.
    """
    scale = np.max(np.abs(b)) if np.size(b) else 0.0
    if scale == 0:
        return float(np.max(np.abs(a))) if np.size(a) else 0.0
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.spacing(np.float32(scale)))
