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
