"""Both optimizers, in both Keras flavours, against the TF1 graph (bit for bit)
and a float64 numpy reference.

Thirty steps on variables whose names exercise every rule: decayed kernels,
excluded biases and LayerNorm, an included bias, a zero-norm variable, a
variable whose gradient is always zero and one whose gradient is sometimes
None; constant learning rate, and BERT's schedule with global-norm clipping
active on some steps.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import harness
import reference_numpy
import tf1_reference

SCHEDULE = dict(init_lr=0.02, num_train_steps=40, num_warmup_steps=6)
CONFIGS = {
    "constant_lr": dict(learning_rate=0.01, clip_norm=None),
    "bert_schedule_clipped": dict(schedule=SCHEDULE, clip_norm=1.0),
}
OPTIMIZER_ARGS = {
    "adamw": dict(weight_decay_rate=0.01),
    "lamb": dict(weight_decay_rate=0.01, exclude_from_layer_adaptation=["LayerNorm"]),
}
NAME_ARGS = dict(exclude_from_weight_decay=harness.EXCLUSIONS, include_in_weight_decay=harness.INCLUSIONS)


def make_optimizer(flavour, kind, config):
    kwargs = dict(OPTIMIZER_ARGS[kind], **NAME_ARGS)
    if config["clip_norm"] is not None:
        kwargs["global_clipnorm"] = config["clip_norm"]
    if "schedule" in config:
        s = config["schedule"]
        lr = harness.front_end(flavour).WarmupPolynomialDecay(s["init_lr"], s["num_train_steps"], s["num_warmup_steps"])
    else:
        lr = config["learning_rate"]
    api = harness.front_end(flavour)
    cls = api.AdamWeightDecay if kind == "adamw" else api.LAMB
    return cls(learning_rate=lr, **kwargs)


@functools.lru_cache(maxsize=None)
def keras_history(flavour, kind, config_name):
    weights = harness.initial_weights()
    optimizer = make_optimizer(flavour, kind, CONFIGS[config_name])
    return harness.run(flavour, optimizer, weights, harness.gradient_steps(weights))


@functools.lru_cache(maxsize=None)
def tf1_history(kind, config_name):
    weights = harness.initial_weights()
    config = CONFIGS[config_name]
    return tf1_reference.run(kind == "lamb", weights, harness.gradient_steps(weights),
                             schedule=config.get("schedule"), learning_rate=config.get("learning_rate"),
                             clip_norm=config["clip_norm"], **OPTIMIZER_ARGS[kind], **NAME_ARGS)


def numpy_history(kind, config_name):
    weights = harness.initial_weights()
    config = CONFIGS[config_name]
    if "schedule" in config:
        s = config["schedule"]
        lr = lambda t: reference_numpy.bert_learning_rate(t, s["init_lr"], s["num_train_steps"], s["num_warmup_steps"])  # noqa: E731
    else:
        lr = lambda t: config["learning_rate"]  # noqa: E731
    return reference_numpy.run(kind, weights, harness.gradient_steps(weights), lr, clip_norm=config["clip_norm"],
                               **OPTIMIZER_ARGS[kind], **NAME_ARGS)


KINDS = ["adamw", "lamb"]


def test_gradient_stream_activates_clipping_on_some_steps_only():
    weights = harness.initial_weights()
    norms = [harness.global_norm(step) for step in harness.gradient_steps(weights)]
    assert min(norms) < 1.0 < max(norms)


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_step_equals_tf1_graph_bit_for_bit(flavour, kind, config_name):
    ours, theirs = keras_history(flavour, kind, config_name), tf1_history(kind, config_name)
    assert len(ours) == len(theirs) == 30
    for step, (mine, reference) in enumerate(zip(ours, theirs)):
        for name in mine:
            for slot, a, b in zip("wmv", mine[name], reference[name]):
                assert np.array_equal(a, b), f"step {step}, {name} ({slot}): max |diff| {np.max(np.abs(a - b))}"


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_step_matches_float64_reference(flavour, kind, config_name):
    # float32 rounding only: relative 2e-5, absolute 1e-6 after 30 steps.
    for step, (mine, reference) in enumerate(zip(keras_history(flavour, kind, config_name), numpy_history(kind, config_name))):
        for name in mine:
            for slot, a, b in zip("wmv", mine[name], reference[name]):
                np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6, err_msg=f"step {step}, {name} ({slot})")


@pytest.mark.parametrize("kind", KINDS)
def test_weights_move_and_the_rules_matter(flavour, kind):
    """Guards the parity tests against passing vacuously."""
    history = keras_history(flavour, kind, "constant_lr")
    first, last = harness.initial_weights(), history[-1]
    for name in first:
        moved = not np.array_equal(first[name], last[name][0])
        # Only the undecayed bias with an always-zero gradient stays put (u = 0, and LAMB's r = 1).
        assert moved == (name != harness.ZERO_GRADIENT), name
    assert np.array_equal(last[harness.ZERO_GRADIENT][1], np.zeros(3, np.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_none_gradient_leaves_variable_and_slots_untouched(flavour, kind):
    history = keras_history(flavour, kind, "bert_schedule_clipped")
    for step in sorted(harness.NONE_STEPS):
        before, after = history[step - 1][harness.SOMETIMES_NONE], history[step][harness.SOMETIMES_NONE]
        for a, b in zip(before, after):
            assert np.array_equal(a, b)


def test_first_bert_step_moves_no_weight_but_fills_the_slots(flavour):
    history = keras_history(flavour, "adamw", "bert_schedule_clipped")
    start = harness.initial_weights()
    for name, (w, m, v) in history[0].items():
        assert np.array_equal(w, start[name]), name
    assert np.any(history[0]["layer_0/dense/kernel"][1] != 0)
