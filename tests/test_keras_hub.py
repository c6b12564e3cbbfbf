"""keras-hub's BERT with tf_bertopt: which variables are decayed, and resuming from a ``.keras`` file.

keras-hub's tasks override ``compile()``, so ``keras.models.load_model``
gives them back with keras-hub's default ``Adam``; ``tf_bertopt.load_model``
restores the saved optimizer. The model is a tiny ``BertMaskedLM`` built from
its config (no downloads), without dropout: Keras saves no random-generator
state, so dropout masks after a reload differ whatever the optimizer.
"""

from __future__ import annotations

import re

import keras
import keras_hub
import numpy as np
import pytest

import tf_bertopt
from tf_bertopt import cli

VOCAB, SEQUENCE, MASKED, BATCH = 1000, 16, 3, 4
SAVED_AT, CONTINUED = 2, 3


def tiny_bert_masked_lm():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=128,
        max_sequence_length=SEQUENCE, dropout=0.0,
    )
    return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)


def masked_lm_batches(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [
        (
            {
                "token_ids": rng.integers(1, VOCAB, (BATCH, SEQUENCE)).astype("int32"),
                "segment_ids": np.zeros((BATCH, SEQUENCE), "int32"),
                "padding_mask": np.ones((BATCH, SEQUENCE), bool),
                "mask_positions": rng.integers(0, SEQUENCE, (BATCH, MASKED)).astype("int32"),
            },
            rng.integers(1, VOCAB, (BATCH, MASKED)).astype("int32"),
        )
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A model trained SAVED_AT steps, saved, then trained CONTINUED more steps in the same process."""
    model = tiny_bert_masked_lm()
    model.compile(
        optimizer=tf_bertopt.keras3.create_optimizer(1e-3, 100, 2, "lamb"),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    batches = masked_lm_batches(SAVED_AT + CONTINUED)
    for inputs, labels in batches[:SAVED_AT]:
        model.train_on_batch(inputs, labels)
    path = tmp_path_factory.mktemp("keras_hub") / "bert_mlm.keras"
    model.save(path)
    saved_config = model.optimizer.get_config()
    for inputs, labels in batches[SAVED_AT:]:
        model.train_on_batch(inputs, labels)
    return path, model, saved_config, batches[SAVED_AT:]


def test_default_exclusions_leave_keras_hub_layer_norms_and_biases_undecayed(saved_run):
    _, model, _, _ = saved_run
    report = tf_bertopt.decay_report(model.optimizer, model)
    expected_undecayed = [v.path for v in model.trainable_variables if re.search("layer_norm|bias", v.path)]
    assert report.not_decayed == expected_undecayed
    assert len(report.decayed) == len(model.trainable_variables) - len(expected_undecayed) > 0
    assert any("mlm_head/output_bias" == name for name in report.not_decayed)
    assert report.warnings == []  # "LayerNorm" is BERT's TF1 spelling; "layer_norm" matches here


def test_load_model_restores_the_saved_optimizer_of_a_keras_hub_task(saved_run):
    path, model, saved_config, _ = saved_run
    reloaded = tf_bertopt.load_model(path)
    assert type(reloaded.optimizer) is type(model.optimizer)
    assert reloaded.optimizer.get_config() == saved_config
    assert int(reloaded.optimizer.iterations) == SAVED_AT


def test_training_continues_bit_identically_after_load_model(saved_run):
    path, model, _, rest = saved_run
    reloaded = tf_bertopt.load_model(path)
    for inputs, labels in rest:
        reloaded.train_on_batch(inputs, labels)
    for original, restored in zip(model.trainable_variables, reloaded.trainable_variables):
        np.testing.assert_array_equal(restored.numpy(), original.numpy(), err_msg=original.path)
    for original, restored in zip(model.optimizer.variables, reloaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(original), err_msg=original.path)


@pytest.mark.filterwarnings("ignore:`compile\\(\\)` was not called as part of model loading")
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_restore_optimizer_recompiles_a_model_loaded_by_keras(saved_run):
    path, model, saved_config, _ = saved_run
    loaded = keras.models.load_model(path)
    optimizer = tf_bertopt.restore_optimizer(loaded, path)
    assert loaded.optimizer is optimizer and optimizer.get_config() == saved_config
    first_moment = optimizer.get_slots(loaded.trainable_variables[0])[0]
    assert np.any(np.asarray(first_moment) != 0)


def test_decay_report_saved_optimizer_reads_the_compile_config_of_a_keras_hub_file(saved_run, capsys):
    path, model, _, _ = saved_run
    assert cli.main(["decay-report", str(path), "--saved-optimizer"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("LAMB (weight_decay_rate=0.01)")
    rows = dict((name, decay) for decay, name in re.findall(r"^\s+(yes|no)\s+(?:yes|no)\s+(\S+)", out, re.MULTILINE))
    assert rows == {v.path: "no" if re.search("layer_norm|bias", v.path) else "yes" for v in model.trainable_variables}


def test_restore_optimizer_refuses_a_file_saved_uncompiled(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.save(tmp_path / "plain.keras")
    with pytest.raises(ValueError, match="was saved without a compiled optimizer"):
        tf_bertopt.restore_optimizer(model, tmp_path / "plain.keras")
