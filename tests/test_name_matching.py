"""Variable names as the patterns see them, and the per-list decisions."""

from __future__ import annotations

import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import harness
from tf_bertopt import name_matching


def test_keras3_variables_go_by_their_full_path():
    variables = harness.keras3_variables({"encoder/layer_0/LayerNorm/gamma": [1.0]})
    assert name_matching.variable_name(variables["encoder/layer_0/LayerNorm/gamma"]) == "encoder/layer_0/LayerNorm/gamma"


def test_tf_variables_go_by_their_name_without_the_output_suffix():
    with tf.name_scope("layer_0"):
        variable = tf.Variable([1.0], name="bias")
    assert variable.name == "layer_0/bias:0"
    assert name_matching.variable_name(variable) == "layer_0/bias"


@given(name=st.text(alphabet="abcLN_/0", min_size=1, max_size=20), pattern=st.sampled_from(["a", "N_", "/0", "b$"]))
def test_include_always_wins_over_exclude(name, pattern):
    rules = name_matching.NameRules(exclude_from_weight_decay=(pattern,), include_in_weight_decay=(pattern,))
    assert rules.uses_weight_decay(name)


def test_unmatched_lists_the_patterns_that_match_no_name():
    rules = name_matching.NameRules(("LayerNorm", "bias"), ("adapter",), ("layer_norm",))
    unmatched = rules.unmatched(["encoder/layer_0/LayerNorm/gamma", "encoder/dense/kernel"])
    assert unmatched == {
        "exclude_from_weight_decay": ["bias"],
        "include_in_weight_decay": ["adapter"],
        "exclude_from_layer_adaptation": ["layer_norm"],
    }
