"""N replicas give the numbers of one device on the same global batch (Keras 3).

The training runs happen in child processes (``distributed_cases.py``): one
with two logical CPUs for ``MirroredStrategy``, and two ``MultiWorkerMirroredStrategy``
workers on 127.0.0.1. The model, data and optimizer settings are BERT-like:
warmup + decay schedule, weight decay with exclusions, ``global_clipnorm=1.0``
active on every step, EMA on in the custom loops.

Tolerance: a replica's gradient is summed in another order than one device's,
so results differ by rounding only. Measured after 4 steps: at most 3 float32
ulps (of each variable's largest magnitude) on weights, 19 on slots; we allow
``ULPS = 32``. Clipping each replica's gradient instead of their sum moves the
weights by millions of such ulps.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import distributed_cases as cases
import tf_bertopt

ULPS = 32
KINDS = ["adamw", "lamb"]
TESTS_DIR = Path(__file__).resolve().parent
PACKAGE_ROOT = Path(tf_bertopt.__file__).resolve().parents[1]


def _environment(**extra) -> dict:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), str(TESTS_DIR), env.get("PYTHONPATH", "")])
    return env


def _start(case: str, output: Path, **extra_env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(TESTS_DIR / "distributed_cases.py"), case, str(output)],
        env=_environment(**extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(processes: list[subprocess.Popen], timeout: float) -> list[str]:
    """Waits for all; kills every one still running on timeout or on a failure."""
    try:
        errors = []
        for process in processes:
            _, stderr = process.communicate(timeout=timeout)
            if process.returncode != 0:
                errors.append(stderr[-4000:])
        return errors
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    output = tmp_path_factory.mktemp("mirrored") / "results.pkl"
    errors = _finish([_start("mirrored", output)], timeout=400)
    assert not errors, errors[0]
    with open(output, "rb") as stream:
        return pickle.load(stream)


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi_worker")
    for attempt in range(2):  # a free port can be taken between our probe and the worker's bind
        workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        outputs = [folder / f"worker_{i}_{attempt}.pkl" for i in range(2)]
        processes = [
            _start(
                "multi_worker",
                outputs[i],
                TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}),
            )
            for i in range(2)
        ]
        errors = _finish(processes, timeout=300)
        if not errors:
            break
        if attempt == 1 or not any("in use" in e.lower() for e in errors):
            pytest.fail("MultiWorkerMirroredStrategy workers failed:\n" + "\n----\n".join(errors))
    results = []
    for output in outputs:
        with open(output, "rb") as stream:
            results.append(pickle.load(stream))
    return results


def ulps(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in float32 ulps of b's largest magnitude."""
    scale = np.float32(np.max(np.abs(b)))
    difference = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return difference / float(np.spacing(scale)) if scale else difference / float(np.spacing(np.float32(0)))


def assert_same_training(ours, reference, tolerance=ULPS):
    """Every column (weight, slots, EMA) of every variable within ``tolerance`` ulps."""
    assert len(ours) == len(reference)
    for index, (row, expected) in enumerate(zip(ours, reference)):
        for column, (a, b) in enumerate(zip(row, expected)):
            assert a.shape == b.shape
            distance = ulps(a, b)
            assert distance <= tolerance, f"variable {index}, column {column}: {distance:.1f} ulps"


def test_clipping_is_active_and_per_replica_clipping_would_differ(mirrored):
    first, second = mirrored["replica_gradients"]
    norm = lambda grads: float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads)))  # noqa: E731
    summed = [a + b for a, b in zip(first, second)]
    assert norm(first) > cases.CLIPNORM and norm(second) > cases.CLIPNORM and norm(summed) > cases.CLIPNORM
    clip = lambda grads: [g * cases.CLIPNORM / norm(grads) for g in grads]  # noqa: E731
    per_replica = [a + b for a, b in zip(clip(first), clip(second))]
    global_ = clip(summed)
    assert norm([a - b for a, b in zip(per_replica, global_)]) > 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_mirrored_custom_loop_equals_one_device(mirrored, kind):
    assert_same_training(mirrored[f"loop/{kind}/mirrored"], mirrored[f"loop/{kind}/single"])


@pytest.mark.parametrize("kind", KINDS)
def test_mirrored_model_fit_equals_one_device(mirrored, kind):
    # The one-device run has EMA on; EMA does not touch weights or slots.
    reference = [row[:3] for row in mirrored[f"loop/{kind}/single"]]
    assert_same_training(mirrored[f"fit/{kind}/mirrored"], reference)


@pytest.mark.parametrize("kind, clip", [("adamw", "clipnorm"), ("lamb", "clipvalue")])
def test_mirrored_clipnorm_and_clipvalue_clip_the_summed_gradient(mirrored, kind, clip):
    assert_same_training(mirrored[f"loop/{kind}/{clip}/mirrored"], mirrored[f"loop/{kind}/{clip}/single"])


def test_tolerance_tells_per_replica_clipping_apart(mirrored):
    """Guards the tests above: clipping per replica is far outside the tolerance."""
    ours, reference = mirrored["replica_clip/adamw/mirrored"], mirrored["loop/adamw/single"]
    assert max(ulps(row[0], expected[0]) for row, expected in zip(ours, reference)) > 1000 * ULPS


def test_tf1_tpu_clipping_reproduced_by_clipping_before_apply_gradients(mirrored):
    ours, emulated = mirrored["replica_clip/adamw/mirrored"], mirrored["replica_clip/adamw/emulated"]
    for row, expected in zip(ours, emulated):
        for a, b in zip(row, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind, runner", [("adamw", "fit"), ("lamb", "loop")])
def test_xla_compiled_distributed_step_equals_one_device(mirrored, kind, runner):
    reference = [row[:3] for row in mirrored[f"loop/{kind}/single"]]
    assert_same_training(mirrored[f"{runner}/{kind}/xla_mirrored"], reference)


def test_loss_scale_skips_a_non_finite_step_on_every_replica(mirrored):
    states, scales = mirrored["loss_scale/lamb/mirrored"]
    assert scales == [1024.0, 512.0, 512.0]
    for before, after in zip(states[0], states[1]):
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
    assert all(np.all(np.isfinite(column)) for row in states[2] for column in row)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(states[1], states[2]))


@pytest.mark.parametrize("kind", KINDS)
def test_multi_worker_mirrored_equals_one_device(mirrored, multi_worker, kind):
    for worker in multi_worker:
        assert_same_training(worker[f"loop/{kind}/multi_worker"], mirrored[f"loop/{kind}/single"])
