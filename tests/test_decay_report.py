"""``tf_bertopt.decay_report`` and the warning optimizers give for patterns that match nothing.

Expected decisions are computed here with ``re.search`` straight from the
rules of SPEC §2, not with the package's name matching.
"""

from __future__ import annotations

import re
import warnings

import keras
import numpy as np
import pytest

import tf_bertopt
from tf_bertopt import decay_reporting
from tf_bertopt.name_matching import NameRules

BERT = ["LayerNorm", "layer_norm", "bias"]


@pytest.fixture(scope="module")
def model():
    inputs = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(10, 6, name="word_embeddings")(inputs)
    x = keras.layers.LayerNormalization(name="attention_layer_norm")(x)
    x = keras.layers.Dense(6, name="intermediate")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="output_dense")(x), name="encoder")


def _expected(name, exclude=(), include=(), adapt_exclude=()):
    decay = any(re.search(p, name) for p in include) or not any(re.search(p, name) for p in exclude)
    return decay, not any(re.search(p, name) for p in adapt_exclude)


def _unmatched_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, tf_bertopt.UnmatchedPatternWarning)]


def test_report_gives_each_variable_the_decisions_of_the_rules(model):
    exclude, include, adapt_exclude = BERT, ["output_dense/bias"], ["embeddings"]
    optimizer = tf_bertopt.LAMB(
        exclude_from_weight_decay=exclude, include_in_weight_decay=include, exclude_from_layer_adaptation=adapt_exclude
    )
    report = tf_bertopt.decay_report(optimizer, model)
    assert [v.name for v in report.variables] == [v.path for v in model.trainable_variables]
    for decision in report.variables:
        assert (decision.weight_decay, decision.layer_adaptation) == _expected(
            decision.name, exclude, include, adapt_exclude
        ), decision.name


def test_report_names_the_patterns_that_matched(model):
    report = tf_bertopt.decay_report(tf_bertopt.AdamWeightDecay(weight_decay_rate=0.1, exclude_from_weight_decay=BERT), model)
    (gamma,) = [v for v in report.variables if v.name.endswith("attention_layer_norm/gamma")]
    assert gamma.matched["exclude_from_weight_decay"] == ("layer_norm",)


def test_adam_weight_decay_report_has_no_layer_adaptation(model):
    report = tf_bertopt.decay_report(tf_bertopt.AdamWeightDecay(weight_decay_rate=0.1), model)
    assert all(v.layer_adaptation is None for v in report.variables)
    assert "adapt" not in str(report)


def test_report_str_is_a_table_with_one_row_per_variable(model):
    report = tf_bertopt.decay_report(tf_bertopt.create_optimizer(1e-3, 10, 1, "lamb"), model)
    text = str(report)
    for variable in model.trainable_variables:
        decay, adapt = _expected(variable.path, BERT)
        row = rf"^\s+{'yes' if decay else 'no'}\s+{'yes' if adapt else 'no'}\s+{re.escape(variable.path)}\s"
        assert re.search(row, text, re.MULTILINE), (variable.path, text)
    decayed = sum(not any(re.search(p, v.path) for p in BERT) for v in model.trainable_variables)
    assert f"weight decay on {decayed} of {len(model.trainable_variables)} variables" in text


def test_report_lists_a_pattern_matching_nothing(model):
    report = tf_bertopt.decay_report(
        tf_bertopt.AdamWeightDecay(weight_decay_rate=0.1, exclude_from_weight_decay=["layer_norm", "Bias", "pooler"]),
        model,
    )
    assert report.unmatched["exclude_from_weight_decay"] == ["Bias", "pooler"]
    assert any("'Bias'" in line and "ignoring case" in line for line in report.warnings)
    assert "WARNING: exclude_from_weight_decay pattern 'pooler' matches none" in str(report)


def test_one_matching_spelling_of_layer_norm_is_enough(model):
    report = tf_bertopt.decay_report(tf_bertopt.create_optimizer(1e-3, 10, 1), model)
    assert report.unmatched["exclude_from_weight_decay"] == []
    assert report.warnings == []


def test_layer_norm_unmatched_in_every_spelling_is_reported():
    rules = NameRules(exclude_from_weight_decay=("LayerNorm", "layer_norm"))
    report = tf_bertopt.decay_report(rules, ["dense/kernel", "dense/bias"])
    assert report.unmatched["exclude_from_weight_decay"] == ["LayerNorm", "layer_norm"]


def test_report_accepts_plain_names_such_as_tf1_checkpoint_names():
    names = ["bert/encoder/layer_0/output/LayerNorm/gamma", "bert/encoder/layer_0/output/dense/kernel"]
    report = tf_bertopt.decay_report(tf_bertopt.create_optimizer(1e-3, 10, 1), names)
    assert report.decayed == ["bert/encoder/layer_0/output/dense/kernel"]
    assert report.not_decayed == ["bert/encoder/layer_0/output/LayerNorm/gamma"]
    assert all(v.shape is None for v in report.variables)


def test_report_uses_tf_keras_names_without_output_suffix():
    import tf_keras

    layer = tf_keras.layers.Dense(2, name="classifier")
    layer(np.zeros((1, 3), "float32"))  # built inside its name scope: classifier/kernel:0
    report = tf_bertopt.decay_report(NameRules(exclude_from_weight_decay=("bias$",)), layer.trainable_variables)
    assert {v.name: v.weight_decay for v in report.variables} == {"classifier/kernel": True, "classifier/bias": False}


def test_zero_weight_decay_rate_decays_nothing_and_says_so(model):
    report = tf_bertopt.decay_report(tf_bertopt.AdamWeightDecay(exclude_from_weight_decay=BERT), model)
    assert report.decayed == []
    assert report.selected_by_patterns == sum(_expected(v.path, BERT)[0] for v in model.trainable_variables)
    assert any("weight_decay_rate is 0.0" in line for line in report.warnings)


def test_built_optimizer_reports_variables_excluded_by_var_list(model):
    optimizer = tf_bertopt.LAMB()
    kernel = model.get_layer("intermediate").kernel
    optimizer.exclude_from_weight_decay(var_list=[kernel])
    optimizer.build(model.trainable_variables)
    decisions = {v.name: v.weight_decay for v in tf_bertopt.decay_report(optimizer, model).variables}
    assert decisions[kernel.path] is False
    assert decisions[model.get_layer("output_dense").kernel.path] is True


def test_report_sees_through_a_loss_scale_optimizer(model):
    wrapped = keras.optimizers.LossScaleOptimizer(tf_bertopt.LAMB(exclude_from_weight_decay=["bias"]))
    report = tf_bertopt.decay_report(wrapped, model)
    assert report.owner == "LAMB"
    assert report.not_decayed == [v.path for v in model.trainable_variables if re.search("bias", v.path)]


@pytest.mark.parametrize(
    "optimizer, variables, message",
    [
        (keras.optimizers.AdamW(), ["dense/kernel"], "`optimizer` must be a tf_bertopt optimizer"),
        (NameRules(), "dense/kernel", "`variables` must be a Keras model or layer"),
        (NameRules(), [3.0], "every entry of `variables` must be a variable or a name"),
    ],
)
def test_report_rejects_what_it_cannot_read(optimizer, variables, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        tf_bertopt.decay_report(optimizer, variables)


@pytest.mark.parametrize("optimizer_class", [tf_bertopt.AdamWeightDecay, tf_bertopt.LAMB])
def test_build_warns_once_per_pattern_that_matches_no_variable(optimizer_class, model):
    optimizer = optimizer_class(exclude_from_weight_decay=["layer_norm", "Bias"], include_in_weight_decay=["pooler"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer.build(model.trainable_variables)
    messages = _unmatched_warnings(caught)
    assert len(messages) == 2
    assert messages[0].startswith(f"{optimizer_class.__name__}: exclude_from_weight_decay pattern 'Bias'")
    assert "ignoring case it would match 2" in messages[0]
    assert messages[1].startswith(f"{optimizer_class.__name__}: include_in_weight_decay pattern 'pooler'")


def test_build_warns_about_layer_adaptation_patterns_too(model):
    optimizer = tf_bertopt.LAMB(exclude_from_layer_adaptation=["LayerNorm"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer.build(model.trainable_variables)
    (message,) = _unmatched_warnings(caught)
    assert "exclude_from_layer_adaptation pattern 'LayerNorm'" in message


def test_bert_recipe_builds_without_a_warning_on_keras_names(model):
    optimizer = tf_bertopt.create_optimizer(1e-3, 10, 1, "lamb")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer.build(model.trainable_variables)
    assert _unmatched_warnings(caught) == []


def test_fit_warns_about_an_unmatched_pattern(model):
    clone = keras.models.clone_model(model)
    clone.compile(optimizer=tf_bertopt.AdamWeightDecay(exclude_from_weight_decay=["LayerNorm"]), loss="mse")
    with pytest.warns(tf_bertopt.UnmatchedPatternWarning, match="'LayerNorm' matches none"):
        clone.fit(np.zeros((2, 4), "int32"), np.zeros((2, 4, 3)), verbose=0)


def test_warning_helper_is_silent_without_variables():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decay_reporting.warn_unmatched_patterns("X", NameRules(("nothing",)), []) == []


@pytest.mark.parametrize(
    "pattern, names, hint",
    [
        ("LayerNorm", ["encoder/attention_layer_norm/gamma", "encoder/dense/kernel"],
         "spelled 'layer_norm' it would match 1, e.g. 'encoder/attention_layer_norm/gamma'"),
        ("layer_norm", ["bert/embeddings/LayerNorm/gamma", "bert/pooler/dense/kernel"],
         "spelled 'LayerNorm' it would match 1, e.g. 'bert/embeddings/LayerNorm/gamma'"),
        ("OutputBias", ["mlm_head/output_bias", "mlm_head/kernel"],
         "spelled 'output_bias' it would match 1, e.g. 'mlm_head/output_bias'"),
    ],
)
def test_unmatched_warning_suggests_the_other_naming_convention_when_it_matches(pattern, names, hint):
    from tf_bertopt.decay_reporting import unmatched_message

    assert hint in unmatched_message("exclude_from_weight_decay", pattern, names)


def test_unmatched_warning_suggests_no_spelling_that_would_match_nothing():
    from tf_bertopt.decay_reporting import unmatched_message

    message = unmatched_message("exclude_from_weight_decay", "LayerNorm", ["dense/kernel"])
    assert "spelled" not in message and "names look like 'dense/kernel'" in message
