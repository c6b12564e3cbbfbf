"""Prints the table of docs/tf-keras.md: how far the tf-keras front end's
``jit_compile=True`` update is from the TF1 graph over the parity suite's runs.

Run from the repository root:
    PYTHONPATH=$PWD:$PWD/tests python tests/tf_keras_jit_report.py
"""

import numpy as np

import harness
import test_parity as parity


def largest_differences(kind: str, config: str, jit_compile: bool) -> tuple[int, float]:
    """(max ulp difference, max relative difference) from TF1 over every weight and slot."""
    weights = harness.initial_weights()
    optimizer = parity.make_optimizer("tf_keras", kind, parity.CONFIGS[config])
    optimizer.jit_compile = jit_compile  # tf-keras turns it off without a GPU; force it
    ours = harness.run("tf_keras", optimizer, weights, harness.gradient_steps(weights))
    tf1 = parity.tf1_history(kind, config)
    pairs = [(a, b) for step, ref in zip(ours, tf1) for name in step for a, b in zip(step[name], ref[name])]
    ulps = max(harness.max_ulp_difference(a, b) for a, b in pairs)
    relative = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))) for a, b in pairs)
    return ulps, relative


def main() -> None:
    print("| optimizer | run | `jit_compile=False` (ulp) | `jit_compile=True` (ulp) | `jit_compile=True` (max relative) |")
    print("|---|---|---|---|---|")
    for kind in ("adamw", "lamb"):
        for config in parity.CONFIGS:
            exact_ulps, _ = largest_differences(kind, config, jit_compile=False)
            jit_ulps, jit_relative = largest_differences(kind, config, jit_compile=True)
            print(f"| {kind} | {config} | {exact_ulps} | {jit_ulps} | {jit_relative:.1e} |")


if __name__ == "__main__":
    main()
