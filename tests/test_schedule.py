"""WarmupPolynomialDecay against TF1's polynomial_decay + BERT warmup (bit for bit)
and against the float64 formulas of SPEC §3 (all variants)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import harness
import reference_numpy
import tf1_reference
from tf_bertopt import WarmupPolynomialDecay

STEPS = list(range(0, 140))  # past decay_steps for every config below
TF1_CONFIGS = {
    "bert_linear": dict(init_lr=1e-4, num_train_steps=100, num_warmup_steps=10),
    "power_0.5": dict(init_lr=3e-4, num_train_steps=90, num_warmup_steps=7, power=0.5),
    "power_2": dict(init_lr=5e-5, num_train_steps=100, num_warmup_steps=10, power=2.0),
    "end_rate": dict(init_lr=1e-3, num_train_steps=50, num_warmup_steps=5, end_lr=1e-5),
    "cycle": dict(init_lr=2e-4, num_train_steps=30, num_warmup_steps=4, end_lr=1e-6, power=2.0, cycle=True),
    "no_warmup": dict(init_lr=1e-4, num_train_steps=100, num_warmup_steps=0),
}


MODES = {
    "eager": lambda schedule: schedule,
    "tf_function": lambda schedule: tf.function(schedule),
    "xla": lambda schedule: tf.function(schedule, jit_compile=True),
}


def ours(config, mode, schedule_class=WarmupPolynomialDecay):
    schedule = schedule_class(
        config["init_lr"],
        config["num_train_steps"],
        config["num_warmup_steps"],
        end_learning_rate=config.get("end_lr", 0.0),
        power=config.get("power", 1.0),
        cycle=config.get("cycle", False),
    )
    run = MODES[mode](schedule)
    return np.array([run(tf.constant(s, tf.int64)).numpy() for s in STEPS], np.float32)


@pytest.mark.parametrize("mode", ["eager", "tf_function"])
@pytest.mark.parametrize("name", TF1_CONFIGS)
def test_values_equal_tf1_graph_bit_for_bit(flavour, name, mode):
    # TF1's values are those of its Grappler-optimised graph; ours must equal
    # them however they are executed.
    config = TF1_CONFIGS[name]
    theirs = tf1_reference.schedule_values(STEPS, **config)
    mine = ours(config, mode, harness.front_end(flavour).WarmupPolynomialDecay)
    mismatched = [(s, a, b) for s, a, b in zip(STEPS, mine, theirs) if a != b]
    assert not mismatched, mismatched[:5]


@pytest.mark.parametrize("name", TF1_CONFIGS)
def test_xla_values_within_two_peak_ulps_of_tf1_and_never_negative(name):
    # XLA fuses 1 - t*(1/T) into one FMA (measured: at most 1.5e-7 x init).
    config = TF1_CONFIGS[name]
    theirs = tf1_reference.schedule_values(STEPS, **config)
    mine = ours(config, "xla")
    assert np.all(np.isfinite(mine)) and np.all(mine >= 0)
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=2.5e-7 * config["init_lr"])


VARIANTS = {
    "bert": {},
    "hugging_face": dict(decay_start="warmup_end"),
    "model_garden_power": dict(warmup_power=2.0),
    "model_garden_start": dict(warmup_initial_learning_rate=1e-5),
    "all_together": dict(decay_start="warmup_end", warmup_power=0.5, warmup_initial_learning_rate=2e-5, cycle=True),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_match_float64_formulas(variant):
    extra = VARIANTS[variant]
    init, total, warmup, end = 1e-4, 60, 12, 1e-6
    schedule = WarmupPolynomialDecay(init, total, warmup, end_learning_rate=end, power=1.5, **extra)
    for step in STEPS:
        expected = reference_numpy.bert_learning_rate(
            step, init, total, warmup, end, 1.5, extra.get("cycle", False), extra.get("decay_start", "step_0"),
            extra.get("warmup_power", 1.0), extra.get("warmup_initial_learning_rate", 0.0))
        assert schedule(step).numpy() == pytest.approx(expected, rel=2e-6, abs=1e-12), step


def test_bert_decay_counts_from_step_zero():
    schedule = WarmupPolynomialDecay(1.0, 100, 10)
    assert schedule(0).numpy() == 0.0
    assert schedule(10).numpy() == pytest.approx(0.9)  # init * (1 - W/T), not init
    assert schedule(100).numpy() == 0.0


def test_hugging_face_variant_reaches_peak_at_end_of_warmup():
    schedule = WarmupPolynomialDecay(1.0, 100, 10, decay_start="warmup_end")
    assert schedule(10).numpy() == 1.0
    assert schedule(55).numpy() == pytest.approx(0.5)


@settings(max_examples=40, deadline=None)
@given(
    init=st.floats(1e-6, 1.0),
    total=st.integers(1, 10_000),
    warmup=st.integers(0, 2_000),
    power=st.floats(0.1, 4.0),
    step=st.integers(0, 20_000),
)
def test_rate_stays_between_zero_and_peak(init, total, warmup, power, step):
    value = WarmupPolynomialDecay(init, total, warmup, power=power)(step).numpy()
    assert 0.0 <= value <= np.float32(init)


def test_config_round_trip_keeps_every_option():
    schedule = WarmupPolynomialDecay(1e-4, 100, 10, 1e-6, 2.0, True, "warmup_end", 0.5, 1e-5, "lr")
    again = WarmupPolynomialDecay.from_config(schedule.get_config())
    assert again.get_config() == schedule.get_config()
    assert all(again(s).numpy() == schedule(s).numpy() for s in (0, 5, 10, 50, 150))


# TF Model Garden's warmups (official/modeling/optimization/lr_schedule.py),
# written here from that source: Keras's PolynomialDecay evaluated once at W,
# eagerly, when the warmup schedule is made; the rest per step in a tf.function.
MODEL_GARDEN_CONFIGS = {
    "bert_linear": dict(init=1e-4, T=10000, W=1000, start=1e-5, power_warmup=1.0),
    "short": dict(init=1e-4, T=100, W=10, start=1e-5, power_warmup=2.0),
    "decay_power_0.5": dict(init=3e-4, T=90, W=7, end=1e-6, power=2.0, start=2e-5, power_warmup=0.5),
    "cycle": dict(init=2e-4, T=30, W=4, end=1e-6, power=2.0, cycle=True, start=0.0, power_warmup=3.0),
    "odd_powers": dict(init=5e-5, T=100, W=13, power=0.5, start=1e-6, power_warmup=1.5),
}


def model_garden_linear_warmup(after_warmup, warmup_steps, warmup_learning_rate):
    final = after_warmup(warmup_steps)

    def schedule(step):
        global_step = tf.cast(step, tf.float32)
        linear = warmup_learning_rate + global_step / warmup_steps * (final - warmup_learning_rate)
        return tf.cond(global_step < warmup_steps, lambda: linear, lambda: after_warmup(step))

    return schedule


def model_garden_polynomial_warmup(after_warmup, warmup_steps, power):
    final = after_warmup(warmup_steps)

    def schedule(step):
        global_step = tf.cast(step, tf.float32)
        warmup_steps_float = tf.cast(warmup_steps, tf.float32)
        done = tf.math.maximum(global_step, 1.0) / warmup_steps_float
        warmup = final * tf.math.pow(done, power)
        return tf.cond(global_step < warmup_steps_float, lambda: warmup, lambda: after_warmup(step))

    return schedule


def model_garden_steps(config):
    """Every step past the end for the short configs; for the long one, every
    step around the start, the end of warmup and the end, and every 37th."""
    T, W = config["T"], config["W"]
    if T <= 1000:
        return list(range(0, int(T * 1.4)))
    return sorted(set(range(0, 50)) | set(range(W - 50, W + 50)) | set(range(T - 10, T + 5)) | set(range(0, T, 37)))


@pytest.mark.parametrize("style", ["model_garden_linear", "model_garden_polynomial"])
@pytest.mark.parametrize("name", MODEL_GARDEN_CONFIGS)
def test_model_garden_warmups_equal_model_garden_bit_for_bit(flavour, name, style):
    import keras
    import tf_keras

    config = MODEL_GARDEN_CONFIGS[name]
    schedules = (keras if flavour == "keras3" else tf_keras).optimizers.schedules
    decay = schedules.PolynomialDecay(config["init"], config["T"], config.get("end", 0.0), config.get("power", 1.0),
                                      config.get("cycle", False))
    if style == "model_garden_linear":
        theirs = model_garden_linear_warmup(decay, config["W"], config["start"])
        options = dict(warmup_initial_learning_rate=config["start"])
    else:
        theirs = model_garden_polynomial_warmup(decay, config["W"], config["power_warmup"])
        options = dict(warmup_power=config["power_warmup"])
    mine = harness.front_end(flavour).WarmupPolynomialDecay(
        config["init"], config["T"], config["W"], config.get("end", 0.0), config.get("power", 1.0),
        config.get("cycle", False), warmup_style=style, **options,
    )
    steps = model_garden_steps(config)
    in_graph = tf.function(theirs)
    expected = np.array([in_graph(tf.constant(s, tf.int64)).numpy() for s in steps], np.float32)
    for mode in ("eager", "tf_function"):
        run = MODES[mode](mine)
        values = np.array([run(tf.constant(s, tf.int64)).numpy() for s in steps], np.float32)
        mismatched = [(s, a, b) for s, a, b in zip(steps, values, expected) if a != b]
        assert not mismatched, (mode, mismatched[:5])


def test_model_garden_warmups_ramp_to_the_decayed_rate_and_polynomial_is_not_zero_at_step_0():
    """The values the options exist for (init 1e-4, T 10000, W 1000, start 1e-5)."""
    bert = WarmupPolynomialDecay(1e-4, 10000, 1000, warmup_initial_learning_rate=1e-5)
    linear = WarmupPolynomialDecay(1e-4, 10000, 1000, warmup_initial_learning_rate=1e-5,
                                   warmup_style="model_garden_linear")
    polynomial = WarmupPolynomialDecay(1e-4, 10000, 1000, warmup_style="model_garden_polynomial")
    assert float(bert(999)) == pytest.approx(1e-5 + 0.999 * 9e-5, rel=1e-6)  # 9.991e-5: towards init
    assert float(linear(999)) == pytest.approx(1e-5 + 0.999 * 8e-5, rel=1e-6)  # 8.992e-5: towards 9e-5
    assert float(polynomial(0)) == pytest.approx(9e-5 / 1000, rel=1e-6)
    assert float(bert.__class__(1e-4, 10000, 1000)(0)) == 0.0
