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

import harness
import test_parity

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
