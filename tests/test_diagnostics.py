"""Optimizer diagnostics: event files read back and compared with values recomputed in numpy."""

from __future__ import annotations

import collections
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import harness
from cli_helpers import run_python
from tf_bertopt import diagnostics, layerwise

DEPTHS = layerwise.LayerDepths([("embeddings/", 0), ("layer_0/", 1), ("layer_1/", 2), ("pooler/", 3)])
RATE, DECAY, CLIP = 0.05, 0.5, 1.0
WARM_STEPS = 2  # steps before the recorded one, so that the slots are not zero


def read_events(folder) -> dict[int, dict[str, np.ndarray]]:
    """``{step: {tag: value}}`` of every event file in ``folder``; a tag written twice at a step fails."""
    events: dict[int, dict[str, np.ndarray]] = collections.defaultdict(dict)
    for path in sorted(pathlib.Path(folder).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.tag not in events[event.step], f"{value.tag} written twice at step {event.step}"
                events[event.step][value.tag] = tf.make_ndarray(value.tensor)
    return dict(events)


def make_optimizer(api, kind):
    options = dict(global_clipnorm=CLIP, layerwise_lr_decay=DECAY, layer_depths=DEPTHS,
                   exclude_from_weight_decay=harness.EXCLUSIONS)
    if kind == "lamb":
        return api.LAMB(RATE, weight_decay_rate=0.01, exclude_from_layer_adaptation=["LayerNorm"], **options)
    return api.AdamWeightDecay(RATE, weight_decay_rate=0.01, **options)


def numpy_expectations(optimizer, kind, weights, slots, grads):
    """Each variable's diagnostics from the formulas, in float64."""
    total = np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads.values()))
    scale = CLIP / max(total, CLIP)
    expected = {}
    for name, w in weights.items():
        g = grads[name].astype(np.float64) * scale
        m, v = (s.astype(np.float64) for s in slots[name])
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        u = m / (np.sqrt(v) + 1e-6)
        if not any(p in name for p in harness.EXCLUSIONS):
            u = u + 0.01 * w
        ratio = 1.0
        if kind == "lamb" and "LayerNorm" not in name and np.linalg.norm(w) > 0 and np.linalg.norm(u) > 0:
            ratio = np.linalg.norm(w) / np.linalg.norm(u)
        rate = RATE * DECAY ** (3 - DEPTHS.depth_of(name)) * ratio
        expected[name] = dict(weight_norm=np.linalg.norm(w), gradient_norm=np.linalg.norm(g),
                              update_norm=rate * np.linalg.norm(u), trust_ratio=ratio, effective_learning_rate=rate)
    return expected, total


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_written_values_equal_numpy_recomputation_and_the_real_step(flavour, kind, tmp_path):
    api = harness.front_end(flavour)
    weights = harness.initial_weights()
    stream = harness.gradient_steps(weights)
    names = [n for n in weights if n != harness.SOMETIMES_NONE]  # it has a gradient on every step used here
    variables = harness.make_variables(flavour, weights)
    optimizer = make_optimizer(api, kind)
    for step in stream[:WARM_STEPS]:
        optimizer.apply_gradients([(tf.constant(step[n]), variables[n]) for n in weights])
    grads = {n: stream[WARM_STEPS][n] * 3.0 for n in names}  # global norm > CLIP: clipping fires
    before = {n: np.array(variables[n]) for n in names}
    slots = {n: tuple(np.array(s) for s in optimizer.get_slots(variables[n])) for n in names}
    pairs = [(tf.constant(grads[n]), variables[n]) for n in names]
    values = diagnostics.optimizer_diagnostics(optimizer, pairs)
    with tf.summary.create_file_writer(str(tmp_path / "variables")).as_default():
        diagnostics.write_optimizer_diagnostics(values, optimizer.iterations)
    with tf.summary.create_file_writer(str(tmp_path / "layers")).as_default():
        diagnostics.write_optimizer_diagnostics(values, optimizer.iterations, per="layer", histograms=False)
    optimizer.apply_gradients(pairs)
    written = read_events(tmp_path / "variables")[WARM_STEPS]
    by_layer = read_events(tmp_path / "layers")[WARM_STEPS]

    expected, total = numpy_expectations(optimizer, kind, before, slots, grads)
    for name in names:
        for metric, value in expected[name].items():
            np.testing.assert_allclose(written[f"optimizer/{metric}/{name}"], value, rtol=2e-5, atol=1e-9,
                                       err_msg=f"{metric} of {name}")
        taken = np.linalg.norm(np.array(variables[name], np.float64) - before[name])
        np.testing.assert_allclose(written[f"optimizer/update_norm/{name}"], taken, rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(written["optimizer/global_gradient_norm"], total, rtol=1e-6)
    assert written["optimizer/clipped"] == 1.0
    assert written["optimizer/learning_rate"] == np.float32(RATE)
    decayed = sum(1 for n in names if not any(p in n for p in harness.EXCLUSIONS))
    np.testing.assert_allclose(written["optimizer/fraction_decayed"], decayed / len(names))
    for depth in sorted({DEPTHS.depth_of(n) for n in names}):
        members = [expected[n] for n in names if DEPTHS.depth_of(n) == depth]
        for metric in diagnostics.METRICS:
            column = [m[metric] for m in members]
            combined = np.sqrt(np.sum(np.square(column))) if metric.endswith("_norm") else np.mean(column)
            np.testing.assert_allclose(by_layer[f"optimizer/{metric}/depth_{depth}"], combined, rtol=2e-5,
                                       err_msg=f"{metric} of depth {depth}")
    histogram = written["optimizer/histogram/trust_ratio"]
    assert histogram.shape == (diagnostics.HISTOGRAM_BUCKETS, 3) and histogram[:, 2].sum() == len(names)


def _fit(api, keras, kind, log_dir, every, per):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="layer_0"), keras.layers.Dense(1, name="pooler")])
    depths = layerwise.LayerDepths([("layer_0", 1), ("pooler", 3)])
    optimizer = api.LAMB(0.01, global_clipnorm=0.1, layerwise_lr_decay=0.5, layer_depths=depths) if kind == "lamb" \
        else api.AdamWeightDecay(0.01, global_clipnorm=0.1, layerwise_lr_decay=0.5, layer_depths=depths)
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    callback = api.OptimizerDiagnostics(str(log_dir), every_n_steps=every, per=per)
    model.fit(rng.normal(size=(40, 3)), rng.normal(size=(40, 1)), batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    return model


def test_callback_writes_every_n_updates_once_per_tag(flavour, tmp_path):
    keras = __import__("keras" if flavour == "keras3" else "tf_keras")
    model = _fit(harness.front_end(flavour), keras, "lamb", tmp_path, every=4, per="layer")
    events = read_events(tmp_path)
    assert sorted(events) == [0, 4, 8]  # 10 updates
    for written in events.values():
        assert {t for t in written if "/depth_" in t} == {f"optimizer/{m}/depth_{d}" for m in diagnostics.METRICS for d in (1, 3)}
        assert written["optimizer/clipped"] in (0.0, 1.0)
    assert model.optimizer._diagnostics_settings is None  # stopped when fit ends


def _summary_ops(flavour, recording):
    api = harness.front_end(flavour)
    weights = {"layer_0/kernel": np.ones((2, 2), np.float32)}
    variables = harness.make_variables(flavour, weights)
    optimizer = api.LAMB(0.01)
    optimizer.build(list(variables.values()))
    if recording:
        optimizer.record_diagnostics(every_n_steps=10)
    step = tf.function(lambda g: optimizer.apply_gradients([(g, variables["layer_0/kernel"])]))
    graph = step.get_concrete_function(tf.TensorSpec((2, 2))).graph
    ops = [op.type for op in graph.get_operations()]
    ops += [op.type for function in graph._functions.values() for op in function.graph.get_operations()] \
        if hasattr(graph, "_functions") else []
    return sum(1 for t in ops if "Summary" in t), len(ops)


def test_nothing_is_added_to_the_step_when_not_recording(flavour):
    summaries_off, size_off = _summary_ops(flavour, recording=False)
    _, size_on = _summary_ops(flavour, recording=True)
    assert summaries_off == 0
    assert size_on > size_off


_MIRRORED_SCRIPT = """
import importlib, sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tf_bertopt import layerwise

def fit(keras, api, log_dir, strategy):
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="layer_0"), keras.layers.Dense(1, name="pooler")],
                                 name="model")
        model.layers[0].set_weights([np.full((3, 4), 0.3, np.float32), np.zeros(4, np.float32)])
        model.layers[1].set_weights([np.full((4, 1), -0.2, np.float32), np.zeros(1, np.float32)])
        optimizer = api.LAMB(0.01, global_clipnorm=0.1, layerwise_lr_decay=0.5,
                             layer_depths=layerwise.LayerDepths([("layer_0", 1), ("pooler", 3)]))
        model.compile(optimizer=optimizer, loss="mse")
    x = np.linspace(-1, 1, 48, dtype=np.float32).reshape(16, 3)
    y = np.sin(x.sum(axis=1, keepdims=True))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
              callbacks=[api.OptimizerDiagnostics(log_dir, every_n_steps=2, histograms=False)])

folder = sys.argv[1]
for flavour, library in (("keras3", "keras"), ("tf_keras", "tf_keras")):
    keras, api = importlib.import_module(library), importlib.import_module(f"tf_bertopt.{flavour}")
    fit(keras, api, f"{folder}/{flavour}/mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    fit(keras, api, f"{folder}/{flavour}/single", tf.distribute.get_strategy())
"""


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirrored")
    result = run_python("-c", _MIRRORED_SCRIPT, str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_mirrored_strategy_writes_each_value_once_and_equal_to_one_device(mirrored_runs, flavour):
    folder = mirrored_runs / flavour
    mirrored, single = read_events(folder / "mirrored"), read_events(folder / "single")  # fails on duplicates
    assert sorted(mirrored) == sorted(single) == [0, 2]
    for step in single:
        assert set(mirrored[step]) == set(single[step])
        for tag, value in single[step].items():
            # The replicas' gradients are summed in another order: rounding only.
            np.testing.assert_allclose(mirrored[step][tag], value, rtol=1e-5, atol=1e-8, err_msg=f"{tag} at {step}")
