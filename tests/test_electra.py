"""ELECTRA's recipe against ELECTRA's TF1 graph, bit for bit: schedule, layer rates, clipping.

Twenty steps on variables named as ELECTRA names them (two encoder layers,
embeddings, the embedding projection, a task head), with gradients whose
global norm swings around the clip norm 1.0; both optimizers, both Keras
flavours, op by op and fused.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

import harness
import tf1_electra_reference

N_LAYERS = 2
LAYER_DECAY = 0.8
SCHEDULE = dict(learning_rate=0.02, num_train_steps=40, warmup_proportion=0.1, lr_decay_power=1.0)
LAMB_EXCLUSIONS = ["LayerNorm"]
SOMETIMES_NONE = "electra/encoder/layer_1/intermediate/dense/bias"


def electra_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(0.0, 0.5, shape).astype(np.float32)  # noqa: E731
    return {
        "electra/embeddings/word_embeddings": normal(6, 4),
        "electra/embeddings/LayerNorm/gamma": np.ones(4, np.float32),
        "electra/embeddings_project/kernel": normal(4, 3),
        "electra/encoder/layer_0/attention/self/query/kernel": normal(3, 3),
        "electra/encoder/layer_0/attention/output/LayerNorm/beta": np.zeros(3, np.float32),
        "electra/encoder/layer_1/intermediate/dense/kernel": normal(3, 5),
        SOMETIMES_NONE: normal(5),
        "task_specific/classify/kernel": normal(3, 2),
        "task_specific/classify/bias": normal(2),
    }


def gradient_steps(weights, steps: int = 20, seed: int = 1):
    rng = np.random.default_rng(seed)
    stream = []
    for t in range(steps):
        scale = [0.05, 0.3, 1.2][t % 3]
        step = {name: rng.normal(0.0, scale, w.shape).astype(np.float32) for name, w in weights.items()}
        if t in (5, 6):
            step[SOMETIMES_NONE] = None
        stream.append(step)
    return stream


def make_optimizer(api, kind, fused):
    extra = {"exclude_from_layer_adaptation": LAMB_EXCLUSIONS} if kind == "lamb" else {}
    return api.create_electra_optimizer(
        SCHEDULE["learning_rate"],
        SCHEDULE["num_train_steps"],
        weight_decay_rate=0.01,
        warmup_proportion=SCHEDULE["warmup_proportion"],
        lr_decay_power=SCHEDULE["lr_decay_power"],
        layerwise_lr_decay_power=LAYER_DECAY,
        n_transformer_layers=N_LAYERS,
        optimizer_type=kind,
        fused=fused,
        **extra,
    )


@functools.lru_cache(maxsize=None)
def keras_history(flavour, kind, fused):
    weights = electra_weights()
    return harness.run(flavour, lambda api: make_optimizer(api, kind, fused), weights, gradient_steps(weights))


@functools.lru_cache(maxsize=None)
def tf1_history(kind):
    weights = electra_weights()
    return tf1_electra_reference.run(weights, gradient_steps(weights), schedule=SCHEDULE, layer_decay=LAYER_DECAY,
                                     n_layers=N_LAYERS, lamb=kind == "lamb",
                                     exclude_from_layer_adaptation=LAMB_EXCLUSIONS)


def test_gradient_stream_activates_clipping_on_some_steps_only():
    weights = electra_weights()
    norms = [harness.global_norm(step) for step in gradient_steps(weights)]
    assert min(norms) < 1.0 < max(norms)


@pytest.mark.parametrize("fused", [False, True], ids=["op_by_op", "fused"])
@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_every_step_equals_electra_tf1_graph_bit_for_bit(flavour, kind, fused):
    ours, theirs = keras_history(flavour, kind, fused), tf1_history(kind)
    assert len(ours) == len(theirs) == 20
    for step, (mine, reference) in enumerate(zip(ours, theirs)):
        for name in mine:
            for slot, a, b in zip("wmv", mine[name], reference[name]):
                assert np.array_equal(a, b), f"step {step}, {name} ({slot}): max |diff| {np.max(np.abs(a - b))}"


def test_layer_rates_matter_in_the_reference():
    """Guards the parity test: without layer rates ELECTRA's graph gives other weights."""
    weights = electra_weights()
    plain = tf1_electra_reference.run(weights, gradient_steps(weights)[:8], schedule=SCHEDULE)
    layered = tf1_history("adamw")[7]
    for name in weights:
        if name.startswith("task_specific/"):  # depth L + 2: multiplier 1
            assert np.array_equal(plain[-1][name][0], layered[name][0]), name
        else:
            assert not np.array_equal(plain[-1][name][0], layered[name][0]), name


SCHEDULES = {
    "proportion": dict(learning_rate=0.02, num_train_steps=40, warmup_proportion=0.1),
    "fractional_warmup": dict(learning_rate=1e-4, num_train_steps=30, warmup_proportion=0.25, lr_decay_power=2.0),
    "warmup_steps_win": dict(learning_rate=5e-4, num_train_steps=120, warmup_steps=17, warmup_proportion=0.05),
    "square_root_decay": dict(learning_rate=3e-4, num_train_steps=90, warmup_steps=13, lr_decay_power=0.5),
}


def electra_schedule_values(flavour, config, mode):
    from tf_bertopt import electra

    schedule = harness.front_end(flavour).ElectraSchedule(
        config["learning_rate"],
        config["num_train_steps"],
        electra.electra_warmup_steps(config["num_train_steps"], config.get("warmup_proportion", 0), config.get("warmup_steps", 0)),
        config.get("lr_decay_power", 1.0),
    )
    call = {"eager": schedule, "function": tf.function(schedule), "xla": tf.function(schedule, jit_compile=True)}[mode]
    steps = range(config["num_train_steps"] + 5)
    return np.array([call(tf.constant(s, tf.int64)).numpy() for s in steps], np.float32)


def tf1_schedule_values(config):
    return tf1_electra_reference.schedule_values(list(range(config["num_train_steps"] + 5)), **config)


@pytest.mark.parametrize("config_name", SCHEDULES)
def test_schedule_equals_electra_tf1_graph_bit_for_bit(flavour, config_name):
    # tf.function gives the same graph; the optimizer parity tests run it that way.
    config = SCHEDULES[config_name]
    ours, theirs = electra_schedule_values(flavour, config, "eager"), tf1_schedule_values(config)
    assert np.array_equal(ours, theirs), np.max(np.abs(ours - theirs))


@pytest.mark.parametrize("config_name", ["fractional_warmup", "square_root_decay"])
def test_schedule_under_xla_within_two_peak_ulps_of_tf1(config_name):
    # As WarmupPolynomialDecay: XLA fuses 1 - t*(1/T) into one multiply-add.
    config = SCHEDULES[config_name]
    ours, theirs = electra_schedule_values("keras3", config, "xla"), tf1_schedule_values(config)
    assert np.all(ours >= 0)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2.5e-7 * config["learning_rate"])


def test_schedule_multiplies_the_decayed_rate_by_the_warmup_factor():
    from tf_bertopt.keras3 import ElectraSchedule

    schedule = ElectraSchedule(1.0, 10, 4)
    values = [float(schedule(s)) for s in (0, 2, 4, 10)]
    np.testing.assert_allclose(values, [0.0, 0.8 * 0.5, 0.6, 0.0], rtol=1e-6)


def test_schedule_command_prints_electras_schedule_as_tf1_computes_it(capsys):
    from tf_bertopt import cli

    steps = [0, 3, 7, 8, 30, 59, 60]
    arguments = ["schedule", "--init-lr", "1e-3", "--train-steps", "60", "--warmup-steps", "5", "--power", "2",
                 "--electra", "--electra-warmup-proportion", "0.125", "--no-plot", "--at", *map(str, steps)]
    assert cli.main(arguments) == 0
    out = capsys.readouterr().out
    assert "[1] ELECTRA: ElectraSchedule(0.001, 60, 7.5, power=2)" in out
    printed = {int(cells[0]): float(cells[2]) for cells in (line.split() for line in out.splitlines())
               if len(cells) == 3 and cells[0].isdigit()}
    theirs = tf1_electra_reference.schedule_values(steps, learning_rate=1e-3, num_train_steps=60, warmup_steps=5,
                                                   warmup_proportion=0.125, lr_decay_power=2.0)
    np.testing.assert_allclose([printed[s] for s in steps], theirs, rtol=1e-6)  # printed with 7 digits


def test_electra_optimizer_config_round_trip_keeps_schedule_and_layer_rates(flavour):
    api = harness.front_end(flavour)
    optimizer = make_optimizer(api, "adamw", fused=False)
    restored = type(optimizer).from_config(optimizer.get_config())
    assert isinstance(restored._learning_rate, api.ElectraSchedule)
    assert restored._learning_rate.get_config() == optimizer._learning_rate.get_config()
    assert restored.layer_depths == layerwise_depths() and restored.layerwise_lr_decay == LAYER_DECAY
    assert restored.global_clipnorm == 1.0 and restored.weight_decay_rate == 0.01


def layerwise_depths():
    from tf_bertopt import layerwise

    return layerwise.electra_layer_depths(N_LAYERS)


@pytest.mark.parametrize("fused", [False, True], ids=["op_by_op", "fused"])
def test_xla_compiled_step_within_a_few_ulps_of_electra_tf1_graph(fused):
    # XLA fuses the schedule's 1 - t/T into one multiply-add (see the schedule
    # tests); measured: at most 2 ulps of each variable's scale after 6 steps.
    weights = electra_weights()
    stream = gradient_steps(weights)[:6]
    ours = harness.run("keras3", lambda api: make_optimizer(api, "lamb", fused), weights, stream, jit_compile=True)
    theirs = tf1_history("lamb")[5]
    for name in weights:
        assert harness.max_scaled_ulp_difference(ours[-1][name][0], theirs[name][0]) <= 8, name
