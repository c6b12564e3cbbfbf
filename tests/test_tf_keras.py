"""The tf-keras (Keras 2) front end: what it does beyond the shared parity
suite (test_parity.py runs both flavours against TF1), and how it matches
the Keras 3 front end's names, arguments, configs and errors.
"""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import harness
import test_parity
import tf1_reference
from tf_bertopt import keras3 as k3
from tf_bertopt import tf_keras as tk

KINDS = {"adamw": "AdamWeightDecay", "lamb": "LAMB"}
RNG = np.random.default_rng(7)
X = RNG.normal(size=(64, 5)).astype(np.float32)
Y = (X @ RNG.normal(size=(5, 1)) + 0.1 * RNG.normal(size=(64, 1))).astype(np.float32)


def bert_like_model(seed: int = 0):
    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential(
        [
            tf_keras.layers.Dense(8, input_shape=(5,), name="dense"),
            tf_keras.layers.LayerNormalization(name="LayerNorm"),
            tf_keras.layers.Dense(1, name="output"),
        ]
    )


def bert_optimizer(kind: str = "lamb", **overrides):
    kwargs = dict(exclude_from_layer_adaptation=["LayerNorm"]) if kind == "lamb" else {}
    kwargs.update(overrides)
    return tk.create_optimizer(0.02, 40, 4, kind, **kwargs)


def fit(model, epochs: int = 1, **compile_kwargs):
    model.compile(loss="mse", **compile_kwargs)
    return model.fit(X, Y, batch_size=16, epochs=epochs, shuffle=False, verbose=0).history["loss"]


def same_numbers(a, b) -> bool:
    a, b = list(a), list(b)
    return len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def tf1_run(kind):
    return test_parity.tf1_history(kind, "bert_schedule_clipped")


def assert_equals_tf1(history, kind):
    for step, (mine, reference) in enumerate(zip(history, tf1_run(kind))):
        for name in mine:
            for slot, a, b in zip("wmv", mine[name], reference[name]):
                assert np.array_equal(a, b), f"step {step}, {name} ({slot})"


# --- classes, names and arguments shared with Keras 3 ---------------------------------------


def test_classes_are_tf_keras_optimizers_and_schedules():
    assert issubclass(tk.AdamWeightDecay, tf_keras.optimizers.Optimizer)
    assert issubclass(tk.LAMB, tf_keras.optimizers.Optimizer)
    assert issubclass(tk.WarmupPolynomialDecay, tf_keras.optimizers.schedules.LearningRateSchedule)
    assert not issubclass(tk.LAMB, keras.optimizers.Optimizer)


@pytest.mark.parametrize("name", ["AdamWeightDecay", "LAMB", "WarmupPolynomialDecay", "create_optimizer"])
def test_signature_equals_keras3(name):
    assert inspect.signature(getattr(tk, name)) == inspect.signature(getattr(k3, name))


@pytest.mark.parametrize("kind", KINDS)
def test_config_has_the_keras3_keys_and_values(kind):
    ours = bert_optimizer(kind).get_config()
    keras3 = k3.create_optimizer(0.02, 40, 4, kind, **({"exclude_from_layer_adaptation": ["LayerNorm"]} if kind == "lamb" else {})).get_config()
    own_keys = set(keras3) - set(keras.optimizers.Optimizer(learning_rate=0.1).get_config())
    assert own_keys and {key: ours[key] for key in own_keys} == {key: keras3[key] for key in own_keys}


def test_slot_names_are_lamb_m_and_lamb_v():
    optimizer = bert_optimizer("lamb")
    model = bert_like_model()
    optimizer.build(model.trainable_variables)
    m, v = optimizer.get_slots(model.trainable_variables[0])
    assert (m.name, v.name) == ("lamb_m/dense/kernel:0", "lamb_v/dense/kernel:0")


def test_names_are_matched_without_the_output_suffix():
    optimizer = bert_optimizer("adamw")  # BERT's exclusions: LayerNorm, layer_norm, bias
    model = bert_like_model()
    optimizer.build(model.trainable_variables)
    decayed = {v.name: optimizer.uses_weight_decay(v) for v in model.trainable_variables}
    assert decayed == {
        "dense/kernel:0": True,
        "dense/bias:0": False,
        "LayerNorm/gamma:0": False,
        "LayerNorm/beta:0": False,
        "output/kernel:0": True,
        "output/bias:0": False,
    }


@pytest.mark.parametrize("kind", KINDS)
def test_keras_weight_decay_is_refused_with_the_keras3_message(kind):
    messages = []
    for api in (tk, k3):
        with pytest.raises(ValueError, match="weight_decay_rate=0.01 instead") as error:
            getattr(api, KINDS[kind])(weight_decay=0.01)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def test_exclude_from_weight_decay_method_adds_patterns_and_variables():
    optimizer = tk.AdamWeightDecay(weight_decay_rate=0.1)
    model = bert_like_model()
    output_kernel = model.get_layer("output").kernel
    optimizer.exclude_from_weight_decay(var_list=[output_kernel], var_names=["LayerNorm/gamma"])
    optimizer.build(model.trainable_variables)
    decayed = {v.name for v in model.trainable_variables if optimizer.uses_weight_decay(v)}
    assert decayed == {"dense/kernel:0", "dense/bias:0", "LayerNorm/beta:0", "output/bias:0"}
    assert optimizer.get_config()["exclude_from_weight_decay"] == ["LayerNorm/gamma"]


def test_exclude_from_weight_decay_after_build_is_refused():
    optimizer = tk.AdamWeightDecay(weight_decay_rate=0.1)
    optimizer.build(bert_like_model().trainable_variables)
    with pytest.raises(ValueError, match="before the optimizer is built"):
        optimizer.exclude_from_weight_decay(var_names=["bias"])


def test_jit_compile_defaults_to_false_the_tf1_exact_path():
    assert tk.LAMB().jit_compile is False
    assert tk.LAMB().get_config()["jit_compile"] is False


def test_callable_learning_rate_is_read_at_every_update():
    rate = tf.Variable(0.0)
    optimizer = tk.AdamWeightDecay(learning_rate=lambda: rate.read_value())
    weight = tf.Variable([1.0, -2.0], name="w")
    optimizer.apply_gradients([(tf.constant([0.5, 0.5]), weight)])
    assert np.array_equal(weight.numpy(), [1.0, -2.0])
    rate.assign(0.1)
    optimizer.apply_gradients([(tf.constant([0.5, 0.5]), weight)])
    assert not np.array_equal(weight.numpy(), [1.0, -2.0])


# --- wrong flavour --------------------------------------------------------------------------


def test_keras3_optimizer_in_a_tf_keras_model_is_a_type_error_naming_the_class():
    with pytest.raises(TypeError, match=r"tf_bertopt\.keras3\.LAMB is a Keras 3 optimizer.*tf_bertopt\.tf_keras\.LAMB"):
        bert_like_model().compile(optimizer=k3.LAMB(), loss="mse")


def test_tf_keras_optimizer_in_a_keras3_model_is_a_type_error_naming_the_class():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    with pytest.raises(TypeError, match=r"tf_bertopt\.tf_keras\.AdamWeightDecay is a tf-keras .*tf_bertopt\.keras3\.AdamWeightDecay"):
        model.compile(optimizer=tk.AdamWeightDecay(), loss="mse")


def test_keras3_optimizer_in_tf_keras_loss_scale_optimizer_is_a_type_error_naming_the_class():
    with pytest.raises(TypeError, match=r"Use tf_bertopt\.tf_keras\.LAMB"):
        tf_keras.mixed_precision.LossScaleOptimizer(k3.LAMB())


def test_keras3_schedule_for_a_tf_keras_optimizer_is_a_type_error():
    with pytest.raises(TypeError, match=r"Use tf_bertopt\.tf_keras\.WarmupPolynomialDecay"):
        tk.LAMB(learning_rate=k3.WarmupPolynomialDecay(0.01, 10))


def test_tf_keras_schedule_for_a_keras3_optimizer_is_a_type_error():
    with pytest.raises(TypeError, match=r"Use tf_bertopt\.keras3\.WarmupPolynomialDecay"):
        k3.AdamWeightDecay(learning_rate=tk.WarmupPolynomialDecay(0.01, 10))


def test_formatting_an_optimizer_elsewhere_still_works():
    assert f"{tk.LAMB()}".startswith("<tf_bertopt.tf_keras.lamb.LAMB object")


# --- training, saving, checkpoints ---------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_fit_lowers_the_loss(kind):
    losses = fit(bert_like_model(), epochs=6, optimizer=bert_optimizer(kind))
    assert losses[-1] < 0.5 * losses[0]


def test_compile_with_jit_compile_trains_like_the_graph_to_float32_rounding():
    graph, xla = bert_like_model(), bert_like_model()
    fit(graph, optimizer=bert_optimizer())
    fit(xla, optimizer=bert_optimizer(), jit_compile=True)
    for a, b in zip(graph.weights, xla.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip_keeps_every_option(kind):
    extra = dict(bias_correction=True, weight_norm_bounds=(0.0, 10.0), trust_ratio_bounds=(None, 5.0)) if kind == "lamb" else {}
    optimizer = bert_optimizer(kind, include_in_weight_decay=["adapter_bias"], use_ema=True, **extra)
    config = optimizer.get_config()
    restored = type(optimizer).from_config(config)
    assert isinstance(restored._learning_rate, tk.WarmupPolynomialDecay)
    assert restored.get_config() == config


@pytest.mark.parametrize("file_name", ["model.keras", "model.h5"])
def test_saved_model_file_continues_training_bit_for_bit(tmp_path, file_name):
    model = bert_like_model()
    fit(model, optimizer=bert_optimizer())
    model.save(tmp_path / file_name)
    loaded = tf_keras.models.load_model(tmp_path / file_name)
    assert isinstance(loaded.optimizer, tk.LAMB)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert same_numbers(loaded.optimizer.variables, model.optimizer.variables)
    for m in (model, loaded):
        m.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert same_numbers(loaded.weights, model.weights)
    assert same_numbers(loaded.optimizer.variables, model.optimizer.variables)


def train_steps(model, optimizer, steps: int, start: int = 0):
    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for i in range(start, start + steps):
        batch = slice(16 * (i % 4), 16 * (i % 4) + 16)
        step(X[batch], Y[batch])


def test_checkpoint_resume_continues_bit_for_bit(tmp_path):
    model, optimizer = bert_like_model(), bert_optimizer()
    train_steps(model, optimizer, 5)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    train_steps(model, optimizer, 4, start=5)

    # Restored before the optimizer is built: its slots are restored as they are created.
    resumed_model, resumed_optimizer = bert_like_model(seed=1), bert_optimizer()
    status = tf.train.Checkpoint(model=resumed_model, optimizer=resumed_optimizer).restore(path)
    assert int(resumed_optimizer.iterations.numpy()) == 5
    train_steps(resumed_model, resumed_optimizer, 4, start=5)
    status.assert_consumed()
    assert same_numbers(resumed_model.weights, model.weights)
    assert same_numbers(resumed_optimizer.variables, optimizer.variables)


# --- Keras features -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_loss_scale_optimizer_gives_the_tf1_numbers(kind):
    weights = harness.initial_weights()
    optimizer = tf_keras.mixed_precision.LossScaleOptimizer(
        test_parity.make_optimizer("tf_keras", kind, test_parity.CONFIGS["bert_schedule_clipped"])
    )
    assert_equals_tf1(harness.run("tf_keras", optimizer, weights, harness.gradient_steps(weights)), kind)


def test_mixed_float16_fit_wraps_in_loss_scale_optimizer_with_float32_slots():
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = bert_like_model()
        losses = fit(model, epochs=4, optimizer=bert_optimizer())
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, tk.LAMB)
    m, v = model.optimizer.inner_optimizer.get_slots(model.trainable_variables[0])
    assert m.dtype == v.dtype == tf.float32
    assert np.isfinite(losses[-1]) and losses[-1] < losses[0]


@functools.lru_cache(maxsize=None)
def ema_run(kind):
    weights = harness.initial_weights()
    optimizer = test_parity.make_optimizer("tf_keras", kind, test_parity.CONFIGS["bert_schedule_clipped"])
    optimizer.use_ema, optimizer.ema_momentum = True, 0.75
    history = harness.run("tf_keras", optimizer, weights, harness.gradient_steps(weights))
    return history, optimizer


@pytest.mark.parametrize("kind", KINDS)
def test_ema_leaves_the_updates_equal_to_tf1(kind):
    assert_equals_tf1(ema_run(kind)[0], kind)


def test_ema_averages_the_weight_trajectory():
    history, optimizer = ema_run("lamb")
    names = list(history[0])
    for index, name in enumerate(names):
        average = harness.initial_weights()[name].astype(np.float64)
        for step, state in enumerate(history):
            if not (name == harness.SOMETIMES_NONE and step in harness.NONE_STEPS):  # no gradient, no update
                average = 0.75 * average + 0.25 * state[name][0]
        np.testing.assert_allclose(optimizer._model_variables_moving_average[index].numpy(), average, rtol=1e-5, atol=1e-6)


def test_optimizer_jit_compile_true_matches_tf1_to_float32_rounding():
    # XLA fuses the update's operations and rounds differently, so this path
    # is close to TF1, not bit-identical (why jit_compile defaults to False).
    weights = harness.initial_weights()
    optimizer = test_parity.make_optimizer("tf_keras", "lamb", test_parity.CONFIGS["bert_schedule_clipped"])
    optimizer.jit_compile = True  # tf-keras turns it off without a GPU; force the XLA path
    history = harness.run("tf_keras", optimizer, weights, harness.gradient_steps(weights))
    for mine, reference in zip(history, tf1_run("lamb")):
        for name in mine:
            for a, b in zip(mine[name], reference[name]):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def sparse_stream(weights):
    """Embedding gradients as IndexedSlices with repeated rows."""
    rng = np.random.default_rng(3)
    stream = harness.gradient_steps(weights)
    for step in stream:
        values = rng.normal(0.0, 0.8, (5, 4)).astype(np.float32)
        step["embeddings/word_embeddings"] = (values, np.array([4, 1, 4, 0, 4], np.int64))
    return stream


def test_indexed_slices_give_the_tf1_numbers_of_clipped_slices():
    kind = "lamb"  # LAMB's norms see every element
    weights = harness.initial_weights()
    config = test_parity.CONFIGS["bert_schedule_clipped"]
    optimizer = test_parity.make_optimizer("tf_keras", kind, config)
    sparse = ("embeddings/word_embeddings",)
    ours = harness.run("tf_keras", optimizer, weights, sparse_stream(weights), sparse=sparse)
    theirs = tf1_reference.run(kind == "lamb", weights, sparse_stream(weights), schedule=config["schedule"],
                               clip_norm=config["clip_norm"], sparse=sparse, **test_parity.OPTIMIZER_ARGS[kind],
                               **test_parity.NAME_ARGS)
    for mine, reference in zip(ours, theirs):
        for name in mine:
            for a, b in zip(mine[name], reference[name]):
                assert np.array_equal(a, b), name


def test_explicit_namespaces_are_reachable_as_attributes():
    import tf_bertopt

    assert tf_bertopt.__getattr__("tf_keras") is tk
    assert tf_bertopt.__getattr__("keras3") is k3


def test_in_this_process_tf_keras_is_keras3_and_so_are_the_top_level_classes():
    import tf_bertopt

    assert tf_bertopt.FLAVOUR == "keras3"
    assert tf_bertopt.LAMB is k3.LAMB and tf_bertopt.create_optimizer is k3.create_optimizer


# --- in subprocesses: flavour resolution and replicas ---------------------------------------


def run_python(code: str, **env) -> None:
    """Runs ``code`` in a fresh interpreter that imports this same tf_bertopt."""
    import tf_bertopt

    environment = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    package_root = os.path.dirname(os.path.dirname(tf_bertopt.__file__))
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
    environment.update(TF_CPP_MIN_LOG_LEVEL="3", **env)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_tf_use_legacy_keras_makes_the_top_level_classes_tf_keras_ones():
    run_python(
        """
        import tensorflow as tf
        import tf_keras
        import tf_bertopt
        assert tf_bertopt.FLAVOUR == "tf_keras"
        for name in ("AdamWeightDecay", "LAMB", "WarmupPolynomialDecay", "create_optimizer"):
            assert getattr(tf_bertopt, name) is getattr(tf_bertopt.tf_keras, name), name
        assert isinstance(tf_bertopt.LAMB(), tf.keras.optimizers.Optimizer)
        model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
        model.compile(optimizer=tf_bertopt.create_optimizer(0.1, 10, 2), loss="mse")
        assert isinstance(model.optimizer, tf_bertopt.tf_keras.AdamWeightDecay)
        """,
        TF_USE_LEGACY_KERAS="1",
    )


def test_default_top_level_classes_are_keras3_and_tf_keras_is_not_imported():
    run_python(
        """
        import sys
        import tensorflow as tf
        import tf_bertopt
        assert tf_bertopt.FLAVOUR == "keras3"
        assert "tf_keras" not in sys.modules
        assert tf_bertopt.LAMB is tf_bertopt.keras3.LAMB
        assert isinstance(tf_bertopt.LAMB(), tf.keras.optimizers.Optimizer)
        """
    )


def test_global_clipnorm_clips_the_gradient_summed_over_replicas_with_clip_by_global_norm():
    # Two replicas each see half the batch; the reference sums the two halves'
    # gradients by hand, clips with tf.clip_by_global_norm and applies them
    # with an unclipped optimizer: the numbers must be identical.
    run_python(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import tf_keras
        from tf_bertopt import tf_keras as tk

        rng = np.random.default_rng(0)
        x = rng.normal(size=(8, 3)).astype(np.float32)
        y = rng.normal(size=(8, 2)).astype(np.float32) * 10
        halves = [(x[:4], y[:4]), (x[4:], y[4:])]

        def model():
            tf_keras.utils.set_random_seed(0)
            return tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])

        def loss_of(m, xs, ys):
            return tf.reduce_sum(tf.square(m(xs) - ys)) / 8.0

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            mirrored, optimizer = model(), tk.LAMB(0.05, global_clipnorm=0.5)
        inputs = strategy.experimental_distribute_values_from_function(lambda ctx: halves[ctx.replica_id_in_sync_group])

        @tf.function
        def replicated_step(batch):
            def step(batch):
                with tf.GradientTape() as tape:
                    loss = loss_of(mirrored, *batch)
                grads = tape.gradient(loss, mirrored.trainable_variables)
                optimizer.apply_gradients(zip(grads, mirrored.trainable_variables))
            strategy.run(step, args=(batch,))

        single, reference = model(), tk.LAMB(0.05)
        for _ in range(3):
            replicated_step(inputs)
            per_half = []
            for xs, ys in halves:
                with tf.GradientTape() as tape:
                    loss = loss_of(single, xs, ys)
                per_half.append(tape.gradient(loss, single.trainable_variables))
            summed = [a + b for a, b in zip(*per_half)]
            assert tf.linalg.global_norm(summed) > 0.5  # clipping is active
            clipped, _ = tf.clip_by_global_norm(summed, 0.5)
            reference.apply_gradients(zip(clipped, single.trainable_variables))
            for a, b in zip(mirrored.weights, single.weights):
                assert np.array_equal(a.numpy(), b.numpy()), (a.numpy(), b.numpy())
        """
    )


@pytest.mark.parametrize("make_rate", [tf.constant, tf.Variable, keras.Variable], ids=["tensor", "tf_variable", "keras_variable"])
def test_scalar_tensor_or_variable_learning_rate_trains_as_the_number_it_holds(flavour, make_rate):
    # As tf_keras.optimizers.Adam: the value is read once (Keras 3's own Adam refuses tensors).
    weights = harness.initial_weights()
    stream = harness.gradient_steps(weights, 3)
    api = harness.front_end(flavour)
    from_tensor = harness.run(flavour, api.LAMB(learning_rate=make_rate(1e-3)), weights, stream)
    from_number = harness.run(flavour, api.LAMB(learning_rate=1e-3), weights, stream)
    for a, b in zip(from_tensor, from_number):
        for name in a:
            for x, y in zip(a[name], b[name]):
                np.testing.assert_array_equal(x, y)
