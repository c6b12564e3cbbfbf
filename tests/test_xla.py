"""Training under jit_compile=True (XLA, what TPUs need) against the non-XLA run.

XLA:CPU fuses multiply-adds and reorders reductions, so bit-equality is not
expected. Errors are measured in ulps of each tensor's largest element
(element-wise ulps are meaningless for entries near zero). Measured on TF 2.21
CPU over the 30-step parity run with BERT's schedule and clipping: at most
4 such ulps for either optimizer on any weight or slot at any
step; the bound leaves head-room for other CPUs.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import harness
import test_parity
from tf_bertopt import update_rules, xla_context

ULP_BOUND = 8


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_xla_training_within_ulp_bound_of_non_xla(flavour, kind):
    weights = harness.initial_weights()
    stream = harness.gradient_steps(weights)
    config = test_parity.CONFIGS["bert_schedule_clipped"]
    xla = harness.run(flavour, test_parity.make_optimizer(flavour, kind, config), weights, stream, jit_compile=True)
    plain = test_parity.keras_history(flavour, kind, "bert_schedule_clipped")
    worst = max(
        harness.max_scaled_ulp_difference(a, b)
        for x, y in zip(xla, plain)
        for name in x
        for a, b in zip(x[name], y[name])
    )
    print(f"{flavour} {kind}: max ulps XLA vs non-XLA = {worst}")
    assert worst <= ULP_BOUND
    assert not np.array_equal(xla[-1]["layer_0/dense/kernel"][0], weights["layer_0/dense/kernel"])


SUM_SHAPES = [(), (7,), (3000,), (4096,), (30, 50), (2, 3, 1024), (0,), (5, 0)]


def _values(shape):
    return np.random.default_rng(len(shape) + sum(shape)).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("shape", SUM_SHAPES, ids=str)
def test_sum_of_elements_outside_xla_is_tfs_sum_bit_for_bit(shape):
    values = tf.constant(_values(shape))
    summed = tf.function(update_rules.sum_of_elements, autograph=False)(values)
    assert summed.numpy().tobytes() == tf.reduce_sum(values).numpy().tobytes()


@pytest.mark.parametrize("shape", SUM_SHAPES, ids=str)
def test_sum_of_elements_under_xla_equals_the_float64_sum_to_float32_precision(shape):
    values = _values(shape)
    summed = tf.function(update_rules.sum_of_elements, jit_compile=True, autograph=False)(tf.constant(values))
    exact = values.astype(np.float64).sum()
    assert abs(float(summed) - exact) <= 1e-6 * max(1.0, np.abs(values.astype(np.float64)).sum())


def test_norms_under_xla_on_a_cpu_are_summed_by_a_matrix_vector_product():
    # XLA:CPU's own full reduction is a scalar loop, ~4x slower for LAMB's ||u||.
    # On GPU/TPU the sum stays a reduction (a float32 product may run at TF32/bfloat16).
    weight = tf.Variable(tf.ones([64, 128]))
    norm = tf.function(lambda: update_rules.l2_norm(weight.read_value()), jit_compile=True, autograph=False)
    hlo = norm.experimental_get_compiler_ir()(stage="optimized_hlo")
    assert (" dot(" in hlo) == (not xla_context._has_accelerator())
    assert float(norm()) == pytest.approx(np.sqrt(64 * 128))
