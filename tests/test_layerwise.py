"""Layer-wise learning-rate decay: depth rules, build-time decisions, config, report and command line."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
import tf1_reference
from tf_bertopt import cli, decay_report, layerwise

# TF1 BERT-base names (google-research/bert modeling.py, run_classifier.py, run_pretraining.py).
TF1_BERT_DEPTHS = {
    "bert/embeddings/word_embeddings": 0,
    "bert/embeddings/LayerNorm/beta": 0,
    "bert/encoder/layer_0/attention/self/query/kernel": 1,
    "bert/encoder/layer_1/output/dense/bias": 2,
    "bert/encoder/layer_10/intermediate/dense/kernel": 11,  # not layer_1's
    "bert/encoder/layer_11/output/LayerNorm/gamma": 12,
    "bert/pooler/dense/kernel": 14,
    "cls/predictions/output_bias": 14,
    "output_weights": 14,
    "output_bias": 14,
}

# keras-hub 0.32 names: BertBackbone(num_layers=2), BertTextClassifier's and BertMaskedLM's heads.
KERAS_HUB_BERT_DEPTHS = {
    "token_embedding/embeddings": 0,
    "position_embedding/embeddings": 0,
    "segment_embedding/embeddings": 0,
    "embeddings_layer_norm/gamma": 0,
    "transformer_layer_0/self_attention_layer/query/kernel": 1,
    "transformer_layer_0/feedforward_layer_norm/beta": 1,
    "transformer_layer_1/feedforward_output_dense/bias": 2,
    "pooled_dense/kernel": 4,
    "logits/kernel": 4,
    "mlm_head/output_bias": 4,
    "mlm_head/intermediate_layer_norm/gamma": 4,
}


def test_tf1_bert_rules_place_embeddings_layers_and_head():
    depths = layerwise.tf1_bert_layer_depths(12)
    assert {name: depths.depth_of(name) for name in TF1_BERT_DEPTHS} == TF1_BERT_DEPTHS
    assert depths.max_depth == 14


def test_keras_hub_bert_rules_place_backbone_and_task_heads():
    depths = layerwise.keras_hub_bert_layer_depths(2)
    assert {name: depths.depth_of(name) for name in KERAS_HUB_BERT_DEPTHS} == KERAS_HUB_BERT_DEPTHS


def test_electra_rules_are_electras_substring_keys():
    depths = layerwise.electra_layer_depths(2)
    assert depths.depth_of("electra/embeddings/word_embeddings") == 0
    assert depths.depth_of("electra/embeddings_project/kernel") == 0
    assert depths.depth_of("electra/encoder/layer_1/output/dense/kernel") == 2
    assert depths.depth_of("task_specific/classify/kernel") == 4
    # ELECTRA's "/embeddings/" needs a scope before it, and no pattern is a regex wildcard.
    assert depths.depth_of("embeddings/word_embeddings") is None
    assert depths.depth_of("electra/encoderXlayer_1/kernel") is None


def test_multiplier_is_decay_to_the_distance_from_the_deepest():
    depths = layerwise.LayerDepths([("a", 0), ("b", 1), ("c", 3)])
    assert [depths.multiplier(0.5, d) for d in (0, 1, 3)] == [0.125, 0.25, 1.0]
    assert layerwise.LayerDepths([("a", 0)], max_depth=2).multiplier(0.5, 0) == 0.25


def test_first_matching_rule_wins_when_rules_overlap():
    depths = layerwise.LayerDepths([("head/dense", 5), ("dense", 1), ("head", 4)])
    assert depths.depth_of("head/dense/kernel") == 5
    assert depths.depth_of("body/dense/kernel") == 1
    assert depths.depth_of("head/norm/gamma") == 4


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(rules=[]), "at least one"),
        (dict(rules=[("a(", 0)]), "invalid regular expression"),
        (dict(rules=[("a", -1)]), "depth of 'a'"),
        (dict(rules=["a"]), "(pattern, depth) pair"),
        (dict(rules=[("a", 3)], max_depth=2), "max_depth"),
    ],
)
def test_bad_rules_are_value_errors(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        layerwise.LayerDepths(**arguments)


def _variables(flavour, names):
    return harness.make_variables(flavour, {n: np.ones((2,), np.float32) for n in names})


@pytest.mark.parametrize("kind", ["AdamWeightDecay", "LAMB"])
def test_unplaced_variable_is_a_value_error_at_build_naming_it(flavour, kind):
    api = harness.front_end(flavour)
    optimizer = getattr(api, kind)(0.1, layerwise_lr_decay=0.8, layer_depths=layerwise.tf1_bert_layer_depths(1))
    variables = _variables(flavour, ["bert/embeddings/word_embeddings", "adapter/dense/kernel"])
    with pytest.raises(ValueError, match=f"{kind}: no `layer_depths` rule gives a depth to the variable.*'adapter/dense/kernel'"):
        optimizer.build(list(variables.values()))


def test_default_depth_places_what_no_rule_does(flavour):
    api = harness.front_end(flavour)
    depths = layerwise.tf1_bert_layer_depths(1, default_depth=2)
    optimizer = api.AdamWeightDecay(0.1, layerwise_lr_decay=0.5, layer_depths=depths)
    variables = _variables(flavour, ["bert/embeddings/word_embeddings", "adapter/dense/kernel", "output_bias"])
    optimizer.build(list(variables.values()))
    assert [optimizer.layer_depth(v) for v in variables.values()] == [0, 2, 3]
    assert [optimizer.learning_rate_multiplier(v) for v in variables.values()] == [0.125, 0.5, 1.0]


def test_layerwise_decay_without_depth_rules_is_a_value_error(flavour):
    with pytest.raises(ValueError, match="LAMB: `layerwise_lr_decay=0.8` needs `layer_depths`"):
        harness.front_end(flavour).LAMB(0.1, layerwise_lr_decay=0.8)


@pytest.mark.parametrize("decay", [0.0, -0.5, "0.8"])
def test_non_positive_decay_is_a_value_error(flavour, decay):
    with pytest.raises((ValueError, TypeError), match="layerwise_lr_decay"):
        harness.front_end(flavour).AdamWeightDecay(0.1, layerwise_lr_decay=decay, layer_depths=[("a", 0)])


@pytest.mark.parametrize("kind", ["AdamWeightDecay", "LAMB"])
def test_config_round_trip_keeps_decay_and_rules(flavour, kind):
    api = harness.front_end(flavour)
    depths = layerwise.LayerDepths([("emb", 0), ("layer_0/", 1)], default_depth=2, max_depth=3)
    optimizer = getattr(api, kind)(0.1, layerwise_lr_decay=0.7, layer_depths=depths)
    config = optimizer.get_config()
    assert config["layerwise_lr_decay"] == 0.7
    assert config["layer_depths"] == {"rules": [["emb", 0], ["layer_0/", 1]], "default_depth": 2, "max_depth": 3}
    restored = type(optimizer).from_config(config)
    assert restored.layerwise_lr_decay == 0.7 and restored.layer_depths == depths


def test_optimizer_saved_with_a_model_comes_back_with_its_rules(tmp_path):
    import tf_bertopt.keras3 as api

    depths = layerwise.LayerDepths([("hidden", 0), ("head", 1)])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="hidden"), keras.layers.Dense(1, name="head")])
    model.compile(optimizer=api.LAMB(0.01, layerwise_lr_decay=0.5, layer_depths=depths), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.optimizer.layer_depths == depths and loaded.optimizer.layerwise_lr_decay == 0.5
    assert [loaded.optimizer.learning_rate_multiplier(v) for v in loaded.trainable_variables] == [0.5, 0.5, 1.0, 1.0]


@pytest.mark.parametrize("fused", [False, True], ids=["op_by_op", "fused"])
def test_each_variable_moves_at_its_own_rate(flavour, fused):
    """With a plain SGD-like first step (v = g^2, so u = 0.1*g/(0.0316*|g| + eps) ~ sign(g)), the
    step of each variable is lr * multiplier, up to the Adam ratio, which is the same for all."""
    api = harness.front_end(flavour)
    names = ["bert/embeddings/word_embeddings", "bert/encoder/layer_0/kernel", "output_weights"]
    variables = _variables(flavour, names)
    optimizer = api.AdamWeightDecay(0.1, layerwise_lr_decay=0.5, layer_depths=layerwise.tf1_bert_layer_depths(1), fused=fused)
    optimizer.apply_gradients([(tf.ones((2,)), v) for v in variables.values()])
    steps = [1.0 - float(np.asarray(v)[0]) for v in variables.values()]
    np.testing.assert_allclose(np.array(steps) / steps[-1], [0.125, 0.25, 1.0], rtol=1e-6)


def test_a_variable_two_electra_keys_match_is_refused_by_tf1_and_updated_once_by_us(flavour):
    """ELECTRA's TF1 optimizer would update such a variable once per key; its second
    ``get_variable`` for the same slot fails when the graph is built. We take the first key
    (ELECTRA's dict order) and update once: the TF1 numbers of that key alone."""
    name = "electra/encoder/layer_0/embeddings/kernel"  # "/embeddings/" and "encoder/layer_0/"
    weights = {name: np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)}
    stream = [{name: np.random.default_rng(t + 1).normal(size=(3, 2)).astype(np.float32)} for t in range(4)]
    rate, decay = 0.01, 0.8

    def both_keys(_):
        return {"/embeddings/": tf.constant(rate) * (decay ** 3), "encoder/layer_0/": tf.constant(rate) * (decay ** 2)}

    with tf.Graph().as_default():
        variable = tf.compat.v1.get_variable(name, initializer=weights[name])
        optimizer = tf1_reference.TF1BertOptimizer(both_keys(None), False, 0.0)
        with pytest.raises(ValueError, match="already exists"):
            optimizer.apply_gradients([(tf.ones((3, 2)), variable)])

    theirs = tf1_reference.run(False, weights, stream, learning_rate_fn=lambda _: {"/embeddings/": both_keys(None)["/embeddings/"]},
                               weight_decay_rate=0.0)
    ours = harness.run(flavour, lambda api: api.AdamWeightDecay(rate, layerwise_lr_decay=decay,
                                                                 layer_depths=layerwise.electra_layer_depths(1)),
                       weights, stream)
    for mine, reference in zip(ours, theirs):
        for a, b in zip(mine[name], reference[name]):
            assert np.array_equal(a, b)


def test_decay_report_shows_depth_and_multiplier_of_each_variable():
    import tf_bertopt.keras3 as api

    optimizer = api.AdamWeightDecay(0.1, layerwise_lr_decay=0.5, layer_depths=layerwise.tf1_bert_layer_depths(1))
    report = decay_report(optimizer, ["bert/embeddings/word_embeddings", "bert/encoder/layer_0/kernel", "output_bias", "other"])
    assert [(v.layer_depth, v.learning_rate_multiplier) for v in report.variables] == [(0, 0.125), (1, 0.25), (3, 1.0), (None, None)]
    text = str(report)
    assert re.search(r"^\s+no\s+0\s+0\.125\s+bert/embeddings/word_embeddings", text, re.MULTILINE), text
    assert "no layer_depths rule places 1 variable(s), e.g. 'other'" in text


def test_decay_report_command_shows_layer_multipliers(tmp_path, capsys):
    inputs = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(10, 3, name="token_embedding")(inputs)
    x = keras.layers.Dense(3, name="transformer_layer_0")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    model.save(tmp_path / "tiny.keras")
    arguments = ["decay-report", str(tmp_path / "tiny.keras"), "--optimizer", "adamw", "--layer-depths", "keras-hub-bert",
                 "--num-layers", "1", "--layerwise-lr-decay", "0.5"]
    assert cli.main(arguments) == 0
    rows = re.findall(r"^\s+(?:yes|no)\s+(\d+)\s+(\S+)\s+(\S+)", capsys.readouterr().out, re.MULTILINE)
    assert {name: (int(depth), float(multiplier)) for depth, multiplier, name in rows} == {
        "token_embedding/embeddings": (0, 0.125),
        "transformer_layer_0/kernel": (1, 0.25),
        "transformer_layer_0/bias": (1, 0.25),
        "logits/kernel": (3, 1.0),
        "logits/bias": (3, 1.0),
    }


def test_decay_report_command_needs_the_layer_count_with_ready_rules(tmp_path, capsys):
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="logits")]).save(tmp_path / "m.keras")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["decay-report", str(tmp_path / "m.keras"), "--layer-depths", "tf1-bert"])
    assert exit_info.value.code == 2
    assert "--layer-depths tf1-bert needs --num-layers" in capsys.readouterr().err
