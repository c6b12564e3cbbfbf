"""Keras 3 integration: compile/fit, configs, .keras files, checkpoints, Keras's own decay API."""

from __future__ import annotations

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
import tf_bertopt

FULL_OPTIONS = {
    "adamw": lambda: tf_bertopt.AdamWeightDecay(
        learning_rate=tf_bertopt.WarmupPolynomialDecay(1e-3, 100, 10, 1e-6, 2.0, True, "warmup_end", 0.5, 1e-5),
        weight_decay_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-7,
        exclude_from_weight_decay=["LayerNorm", "bias"], include_in_weight_decay=["adapter_bias"],
        global_clipnorm=2.0, use_ema=True, ema_momentum=0.9, name="my_adamw",
    ),
    "lamb": lambda: tf_bertopt.LAMB(
        learning_rate=3e-3, weight_decay_rate=0.0, beta_1=0.85, beta_2=0.98, epsilon=1e-8,
        exclude_from_weight_decay=["bias"], include_in_weight_decay=["special"],
        exclude_from_layer_adaptation=["LayerNorm"], bias_correction=True,
        weight_norm_bounds=(0.0, 10.0), trust_ratio_bounds=(None, 5.0), clipnorm=1.5,
        gradient_accumulation_steps=2,
    ),
}


def regression_model():
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(16, activation="relu", name="dense"),
        keras.layers.LayerNormalization(name="LayerNorm"),
        keras.layers.Dense(1, name="output"),
    ])


def regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    return x, (x @ np.arange(1, 7, dtype="float32"))[:, None]


@pytest.mark.parametrize("optimizer_type", ["adamw", "lamb"])
def test_compile_fit_lowers_the_loss(optimizer_type):
    model = regression_model()
    model.compile(optimizer=tf_bertopt.create_optimizer(5e-2, 80, 8, optimizer_type), loss="mse")
    x, y = regression_data()
    history = model.fit(x, y, batch_size=32, epochs=10, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]


@pytest.mark.parametrize("kind", FULL_OPTIONS)
def test_config_round_trip_keeps_every_option(kind):
    optimizer = FULL_OPTIONS[kind]()
    config = optimizer.get_config()
    again = type(optimizer).from_config(copy.deepcopy(config))  # Keras's from_config mutates its argument
    assert again.get_config() == config
    assert config["include_in_weight_decay"] and config["exclude_from_weight_decay"]
    if kind == "lamb":
        assert config["bias_correction"] and config["trust_ratio_bounds"] == (None, 5.0)


@pytest.mark.parametrize("kind", FULL_OPTIONS)
def test_keras_file_round_trip_restores_optimizer_schedule_and_state(kind, tmp_path):
    model = regression_model()
    model.compile(optimizer=FULL_OPTIONS[kind](), loss="mse")
    x, y = regression_data()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")  # no custom_objects
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        assert np.array_equal(np.asarray(a), np.asarray(b)), a.path


@pytest.mark.parametrize("optimizer_type", ["adamw", "lamb"])
def test_checkpoint_resume_continues_bit_for_bit(optimizer_type, tmp_path):
    weights = harness.initial_weights()
    stream = harness.gradient_steps(weights, 12)
    make = lambda: tf_bertopt.create_optimizer(  # noqa: E731
        0.02, 20, 3, optimizer_type, exclude_from_weight_decay=harness.EXCLUSIONS)
    straight = harness.run_keras3(make(), weights, stream)

    first = make()
    variables = harness.keras3_variables(weights)
    names = list(weights)
    first.build([variables[n] for n in names])
    for step in stream[:6]:
        first.apply_gradients([(None if step[n] is None else tf.constant(step[n]), variables[n]) for n in names])
    checkpoint = tf.train.Checkpoint(optimizer=first, **{n.replace("/", "."): variables[n] for n in names})
    path = checkpoint.save(tmp_path / "ckpt")

    resumed = make()
    fresh = harness.keras3_variables({n: np.zeros_like(w) for n, w in weights.items()})
    resumed.build([fresh[n] for n in names])
    tf.train.Checkpoint(optimizer=resumed, **{n.replace("/", "."): fresh[n] for n in names}).restore(path).assert_consumed()
    assert int(resumed.iterations) == 6
    for step in stream[6:]:
        resumed.apply_gradients([(None if step[n] is None else tf.constant(step[n]), fresh[n]) for n in names])
    for name in names:
        m, v = resumed.get_slots(fresh[name])
        for slot, ours, expected in zip("wmv", (fresh[name], m, v), straight[-1][name]):
            assert np.array_equal(np.asarray(ours), expected), f"{name} ({slot})"


def test_keras_weight_decay_argument_is_refused_with_a_pointer_to_ours():
    with pytest.raises(ValueError, match=r"weight_decay_rate=0\.01"):
        tf_bertopt.AdamWeightDecay(weight_decay=0.01)


def test_keras_exclude_method_maps_onto_our_patterns():
    optimizer = tf_bertopt.LAMB(weight_decay_rate=0.01)
    variables = harness.keras3_variables(harness.initial_weights())
    kernel = variables["layer_0/dense/kernel"]
    optimizer.exclude_from_weight_decay(var_list=[kernel], var_names=["LayerNorm"])
    optimizer.build(list(variables.values()))
    assert optimizer.get_config()["exclude_from_weight_decay"] == ["LayerNorm"]
    assert not optimizer.uses_weight_decay(kernel)
    assert not optimizer.uses_weight_decay(variables["layer_0/LayerNorm/gamma"])
    assert optimizer.uses_weight_decay(variables["layer_1/dense/kernel"])
    with pytest.raises(ValueError, match="before the optimizer is built"):
        optimizer.exclude_from_weight_decay(var_names=["bias"])


def test_patterns_match_the_full_path_not_only_the_leaf_name():
    # Keras's own matching sees only "gamma"; BERT's pattern needs the path.
    optimizer = tf_bertopt.AdamWeightDecay(weight_decay_rate=0.01, exclude_from_weight_decay=["LayerNorm"])
    variables = harness.keras3_variables(harness.initial_weights())
    optimizer.build(list(variables.values()))
    assert not optimizer.uses_weight_decay(variables["layer_0/LayerNorm/gamma"])
    assert optimizer.uses_weight_decay(variables["layer_0/dense/kernel"])


def test_include_wins_over_exclude_and_layer_adaptation_is_decided_per_variable():
    optimizer = tf_bertopt.LAMB(exclude_from_weight_decay=["bias"], include_in_weight_decay=["adapter_bias"],
                                exclude_from_layer_adaptation=["LayerNorm", "bias"])
    variables = harness.keras3_variables(harness.initial_weights())
    optimizer.build(list(variables.values()))
    assert optimizer.uses_weight_decay(variables["layer_0/adapter_bias"])
    assert not optimizer.uses_weight_decay(variables["layer_0/dense/bias"])
    assert not optimizer.uses_layer_adaptation(variables["layer_0/LayerNorm/beta"])
    assert optimizer.uses_layer_adaptation(variables["layer_0/dense/kernel"])


def test_create_optimizer_defaults_are_berts():
    optimizer = tf_bertopt.create_optimizer(1e-4, 1000, 100)
    config = optimizer.get_config()
    assert isinstance(optimizer, tf_bertopt.AdamWeightDecay)
    assert (config["weight_decay_rate"], config["beta_1"], config["beta_2"], config["epsilon"]) == (0.01, 0.9, 0.999, 1e-6)
    assert config["exclude_from_weight_decay"] == ["LayerNorm", "layer_norm", "bias"]
    assert config["global_clipnorm"] == 1.0
    schedule = optimizer._learning_rate.get_config()
    assert (schedule["end_learning_rate"], schedule["power"], schedule["warmup_steps"]) == (0.0, 1.0, 100)
    assert isinstance(tf_bertopt.create_optimizer(1e-4, 1000, 100, "lamb"), tf_bertopt.LAMB)


def test_create_optimizer_overrides_reach_the_optimizer():
    optimizer = tf_bertopt.create_optimizer(1e-4, 1000, 0, "lamb", weight_decay_rate=0.1, global_clipnorm=None,
                                            exclude_from_layer_adaptation=["bias"], use_ema=True)
    config = optimizer.get_config()
    assert (config["weight_decay_rate"], config["global_clipnorm"], config["use_ema"]) == (0.1, None, True)
    assert config["exclude_from_layer_adaptation"] == ["bias"]
