"""N replicas give the numbers of one device on the same global batch (Keras 3 and tf-keras).

The training runs happen in child processes (``distributed_cases.py``): one
with two logical CPUs for ``MirroredStrategy``, and two ``MultiWorkerMirroredStrategy``
workers on 127.0.0.1. The model, data and optimizer settings are BERT-like:
warmup + decay schedule, weight decay with exclusions, ``global_clipnorm=1.0``
active on every step, EMA on in the custom loops. Embedding models, whose
gradients are ``tf.IndexedSlices``, are compared bit for bit with TF1's
clipping (``tf.clip_by_global_norm`` on the slices) on one device.

Tolerance: a replica's gradient is summed in another order than one device's,
so results differ by rounding only. Measured after 4 steps: at most 3 float32
ulps (of each variable's largest magnitude) on weights, 19 on slots; we allow
``ULPS = 32``. Clipping each replica's gradient instead of their sum moves the
weights by millions of such ulps.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import distributed_cases as cases

ULPS = 32
KINDS = ["adamw", "lamb"]
FLAVOURS = {"keras3": "", "tf_keras": "tf_keras/"}  # result-name prefixes


def _start_workers(folder, attempt):
    workers = [f"127.0.0.1:{port}" for port in cases.free_ports(2)]
    outputs = [folder / f"worker_{i}_{attempt}.pkl" for i in range(2)]
    processes = [
        cases.start_child(
            "multi_worker",
            outputs[i],
            TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}),
        )
        for i in range(2)
    ]
    return outputs, processes


def _load(path):
    with open(path, "rb") as stream:
        return pickle.load(stream)


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Starts the Mirrored process and both workers at once, so that their
    start-up overlaps; whatever is still running at the end is killed."""
    folder = tmp_path_factory.mktemp("distributed")
    started = {
        "mirrored": ([folder / "mirrored.pkl"], [cases.start_child("mirrored", folder / "mirrored.pkl")]),
        "multi_worker": _start_workers(folder, 0),
        "folder": folder,
    }
    yield started
    cases.finish_children(started["mirrored"][1] + started["multi_worker"][1], timeout=0)


@pytest.fixture(scope="module")
def mirrored(children):
    (output,), processes = children["mirrored"]
    errors = cases.finish_children(processes, timeout=400)
    assert not errors, "MirroredStrategy runs failed:\n" + errors[0]
    return _load(output)


@pytest.fixture(scope="module")
def multi_worker(children):
    outputs, processes = children["multi_worker"]
    errors = cases.finish_children(processes, timeout=300)
    if errors and any("in use" in e.lower() for e in errors):
        # A port we probed as free was taken before the worker bound it: once more.
        outputs, processes = _start_workers(children["folder"], 1)
        children["multi_worker"] = (outputs, processes)
        errors = cases.finish_children(processes, timeout=300)
    assert not errors, "MultiWorkerMirroredStrategy workers failed:\n" + "\n----\n".join(errors)
    return [_load(output) for output in outputs]


def assert_same_training(ours, reference, tolerance=ULPS):
    """Every column (weight, slots, EMA) of every variable within ``tolerance`` ulps."""
    assert len(ours) == len(reference)
    for index, (row, expected) in enumerate(zip(ours, reference)):
        for column, (a, b) in enumerate(zip(row, expected)):
            assert a.shape == b.shape
            distance = cases.ulps(a, b)
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
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mirrored_custom_loop_equals_one_device(mirrored, flavour, kind):
    prefix = FLAVOURS[flavour]
    assert_same_training(mirrored[f"{prefix}loop/{kind}/mirrored"], mirrored[f"{prefix}loop/{kind}/single"])


@pytest.mark.parametrize("name", ["fit/adamw", "fit/lamb", "tf_keras/fit/lamb"])
def test_mirrored_model_fit_equals_one_device(mirrored, name):
    # The one-device run has EMA on; EMA does not touch weights or slots.
    reference = [row[:3] for row in mirrored[name.replace("fit/", "loop/") + "/single"]]
    assert_same_training(mirrored[f"{name}/mirrored"], reference)


@pytest.mark.parametrize("kind, clip", [("adamw", "clipnorm"), ("lamb", "clipvalue")])
def test_mirrored_clipnorm_and_clipvalue_clip_the_summed_gradient(mirrored, kind, clip):
    assert_same_training(mirrored[f"loop/{kind}/{clip}/mirrored"], mirrored[f"loop/{kind}/{clip}/single"])


def test_tolerance_tells_per_replica_clipping_apart(mirrored):
    """Guards the tests above: clipping per replica is far outside the tolerance."""
    ours, reference = mirrored["replica_clip/adamw/mirrored"], mirrored["loop/adamw/single"]
    assert max(cases.ulps(row[0], expected[0]) for row, expected in zip(ours, reference)) > 1000 * ULPS


def test_tf1_tpu_clipping_reproduced_by_clipping_before_apply_gradients(mirrored):
    ours, emulated = mirrored["replica_clip/adamw/mirrored"], mirrored["replica_clip/adamw/emulated"]
    for row, expected in zip(ours, emulated):
        for a, b in zip(row, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mirrored_sparse_gradients_clip_as_one_device_in_tf1_bit_for_bit(mirrored, flavour, kind):
    """The replicas' embedding slices are gathered, then clipped over their
    values: exactly TF1's ``tf.clip_by_global_norm`` on one device's global batch."""
    prefix = FLAVOURS[flavour]
    ours, reference = mirrored[f"{prefix}sparse/{kind}/mirrored"], mirrored[f"{prefix}sparse/{kind}/tf1_clipping"]
    for row, expected in zip(ours, reference):
        for a, b in zip(row, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["sparse_head/lamb", "tf_keras/sparse_head/adamw"])
def test_mirrored_sparse_and_dense_gradients_clip_as_one_device_in_tf1(mirrored, name):
    assert_same_training(mirrored[f"{name}/mirrored"], mirrored[f"{name}/tf1_clipping"])


def test_sparse_case_norm_over_values_differs_from_norm_of_summed_rows():
    """Guards the tests above: summing repeated rows before clipping (or
    each replica densifying its own slices) would clip by another factor."""
    over_values, over_rows = cases.sparse_first_step_norms()
    assert over_values > cases.CLIPNORM and over_rows > cases.CLIPNORM
    assert abs(over_values - over_rows) > 0.05 * over_values


@pytest.mark.parametrize("name", ["fit/adamw", "loop/lamb", "tf_keras/fit/adamw"])
def test_xla_compiled_distributed_step_equals_one_device(mirrored, name):
    reference = [row[:3] for row in mirrored[name.replace("fit/", "loop/") + "/single"]]
    assert_same_training(mirrored[f"{name}/xla_mirrored"], reference)


@pytest.mark.parametrize("name", ["loss_scale/lamb", "tf_keras/loss_scale/adamw"])
def test_loss_scale_skips_a_non_finite_step_on_every_replica(mirrored, name):
    states, scales, updates = mirrored[f"{name}/mirrored"]
    assert scales == [1024.0, 512.0, 512.0]
    assert updates == ([1, 2, 3] if name.startswith("tf_keras/") else [1, 1, 2])
    for before, after in zip(states[0], states[1]):
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
    assert all(np.all(np.isfinite(column)) for row in states[2] for column in row)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(states[1], states[2]))


@pytest.mark.parametrize("name", ["nonfinite/adamw", "tf_keras/nonfinite/lamb"])
def test_skip_nonfinite_steps_skips_on_every_replica_when_one_replica_is_nonfinite(mirrored, name):
    (before, _, _, _), (skipped, replica_weights, counts, updates), (after, _, _, _) = mirrored[f"{name}/mirrored"]
    for row_before, row_skipped in zip(before, skipped):
        for a, b in zip(row_before, row_skipped):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(replica_weights[0], replica_weights[1])
    assert counts == [1, 1] and updates == [1, 1]
    assert all(np.all(np.isfinite(column)) for row in after for column in row)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(skipped, after))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_multi_worker_mirrored_equals_one_device(mirrored, multi_worker, flavour, kind):
    prefix = FLAVOURS[flavour]
    for worker in multi_worker:
        assert_same_training(worker[f"{prefix}loop/{kind}/multi_worker"], mirrored[f"{prefix}loop/{kind}/single"])


@pytest.mark.parametrize("name", ["sparse/lamb", "tf_keras/sparse/adamw"])
def test_multi_worker_sparse_gradients_clip_as_one_device_in_tf1_bit_for_bit(mirrored, multi_worker, name):
    for worker in multi_worker:
        for row, expected in zip(worker[f"{name}/multi_worker"], mirrored[f"{name}/tf1_clipping"]):
            for a, b in zip(row, expected):
                np.testing.assert_array_equal(a, b)
