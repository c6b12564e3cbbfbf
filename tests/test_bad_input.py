"""Bad input is a ValueError naming the argument, the value received and what is allowed."""

from __future__ import annotations

import math
import re

import pytest

import harness
import tf_bertopt

OPTIMIZER_CASES = [
    ("learning_rate", -1e-3, "learning_rate=-0.001", ">= 0"),
    ("learning_rate", math.nan, "learning_rate=nan", ">= 0"),
    ("weight_decay_rate", -0.01, "weight_decay_rate=-0.01", ">= 0"),
    ("weight_decay_rate", math.nan, "weight_decay_rate=nan", ">= 0"),
    ("beta_1", 1.0, "beta_1=1.0", r"\[0, 1\)"),
    ("beta_2", -0.1, "beta_2=-0.1", r"\[0, 1\)"),
    ("epsilon", 0.0, "epsilon=0.0", "> 0"),
    ("epsilon", -1e-6, "epsilon=-1e-06", "> 0"),
    ("exclude_from_weight_decay", ["LayerNorm", "bias("], "bias\\(", "invalid regular expression"),
    ("include_in_weight_decay", ["[unclosed"], r"\[unclosed", "invalid regular expression"),
    ("exclude_from_weight_decay", [3], "received 3", "must be a string"),
    ("global_clipnorm", -1.0, "global_clipnorm=-1.0", "> 0"),
]


@pytest.mark.parametrize("kind", ["AdamWeightDecay", "LAMB"])
@pytest.mark.parametrize("argument,value,received,allowed", OPTIMIZER_CASES)
def test_optimizer_rejects_bad_argument_with_a_clear_message(flavour, kind, argument, value, received, allowed):
    cls = getattr(harness.front_end(flavour), kind)
    with pytest.raises(ValueError) as error:
        cls(**{argument: value})
    message = str(error.value)
    assert cls.__name__ in message and argument in message
    assert re.search(received, message), message
    assert re.search(allowed, message), message


def tensor_cases():
    import tensorflow as tf

    return [tf.constant(-1e-3), tf.constant([1e-3, 2e-3]), tf.constant("fast")]


@pytest.mark.parametrize("case", range(3), ids=["negative", "not_scalar", "not_a_number"])
def test_learning_rate_tensor_holding_no_valid_rate_is_rejected(flavour, case):
    value = tensor_cases()[case]
    with pytest.raises(ValueError, match=r"LAMB: `learning_rate` must be a finite number >= 0") as error:
        harness.front_end(flavour).LAMB(learning_rate=value)
    assert "learning_rate=" in str(error.value)


LAMB_CASES = [
    ("exclude_from_layer_adaptation", ["(?P<x"], "invalid regular expression"),
    ("trust_ratio_bounds", (2.0, 1.0), "lower <= upper"),
    ("weight_norm_bounds", (-1.0, None), "numbers >= 0"),
    ("weight_norm_bounds", 3.0, "pair"),
    ("bias_correction", "yes", "True or False"),
]


@pytest.mark.parametrize("argument,value,allowed", LAMB_CASES)
def test_lamb_rejects_bad_option(flavour, argument, value, allowed):
    with pytest.raises(ValueError, match=allowed) as error:
        harness.front_end(flavour).LAMB(**{argument: value})
    assert argument in str(error.value)


SCHEDULE_CASES = [
    (dict(decay_steps=0), "decay_steps=0", "integer > 0"),
    (dict(decay_steps=-5), "decay_steps=-5", "integer > 0"),
    (dict(decay_steps=2.5), "decay_steps=2.5", "integer > 0"),
    (dict(warmup_steps=-1), "warmup_steps=-1", "integer >= 0"),
    (dict(initial_learning_rate=-1.0), "initial_learning_rate=-1.0", ">= 0"),
    (dict(end_learning_rate=-1e-6), "end_learning_rate=-1e-06", ">= 0"),
    (dict(power=0.0), "power=0.0", "> 0"),
    (dict(power=-1.0), "power=-1.0", "> 0"),
    (dict(warmup_power=0.0), "warmup_power=0.0", "> 0"),
    (dict(decay_start="end"), "decay_start='end'", "'step_0', 'warmup_end'"),
    (dict(decay_start="warmup_end", warmup_steps=100), "decay_steps=100, warmup_steps=100", "> warmup_steps"),
    (dict(warmup_style="garden"), "warmup_style='garden'", "'bert', 'model_garden_linear'"),
    (dict(warmup_style="model_garden_linear", warmup_power=2.0), "warmup_power=2.0", "must be 1.0"),
    (dict(warmup_style="model_garden_polynomial", warmup_initial_learning_rate=1e-5),
     "warmup_initial_learning_rate=1e-05", "must be 0.0"),
]


@pytest.mark.parametrize("overrides,received,allowed", SCHEDULE_CASES)
def test_schedule_rejects_bad_argument_with_a_clear_message(flavour, overrides, received, allowed):
    arguments = dict(initial_learning_rate=1e-4, decay_steps=100, warmup_steps=10)
    arguments.update(overrides)
    with pytest.raises(ValueError) as error:
        harness.front_end(flavour).WarmupPolynomialDecay(**arguments)
    message = str(error.value)
    assert "WarmupPolynomialDecay" in message and received in message and allowed in message, message


def test_create_optimizer_rejects_unknown_optimizer_type(flavour):
    with pytest.raises(ValueError, match=r"`optimizer_type` must be one of 'adamw', 'lamb'; received optimizer_type='adam'"):
        harness.front_end(flavour).create_optimizer(1e-4, 100, 10, "adam")


def test_create_optimizer_rejects_lamb_options_for_adamw():
    with pytest.raises(ValueError, match="bias_correction only applies to optimizer_type='lamb'"):
        tf_bertopt.create_optimizer(1e-4, 100, 10, "adamw", bias_correction=True)


def test_create_optimizer_passes_schedule_errors_through():
    with pytest.raises(ValueError, match="decay_steps=0"):
        tf_bertopt.create_optimizer(1e-4, 0, 10)


def test_single_pattern_string_counts_as_one_pattern():
    optimizer = tf_bertopt.AdamWeightDecay(exclude_from_weight_decay="LayerNorm")
    assert optimizer.get_config()["exclude_from_weight_decay"] == ["LayerNorm"]
