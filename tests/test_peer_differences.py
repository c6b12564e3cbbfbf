"""What the documentation says about other libraries, each claim measured here.

* TF Model Garden's ``AdamWeightDecay`` (official/modeling/optimization/
  legacy_adamw.py) and Hugging Face's (src/transformers/optimization_tf.py)
  subclass Keras's legacy ``Adam`` and only add a decay step before it, so
  with ``weight_decay_rate=0`` their update is that ``Adam``'s: bias-corrected,
  unlike BERT's. We run tf-keras's legacy ``Adam`` itself.
* Keras 3's ``AdamW`` and ``Lamb`` on the TensorFlow backend match
  ``exclude_from_weight_decay(var_names=...)`` against the full variable name
  (the ``tf.Variable``'s), and lose those names in ``get_config``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_bertopt

BETA_1, BETA_2 = 0.9, 0.999
BERT_EXCLUSIONS = ["LayerNorm", "layer_norm", "bias"]


def displacement_after(updates, optimizer, variable):
    """How far ``updates`` updates with a constant gradient of 1 move ``variable`` from 0."""
    for _ in range(updates):
        optimizer.apply_gradients([(tf.ones_like(variable), variable)])
    return -float(variable.numpy()[0])


@pytest.mark.parametrize("updates", [1, 10])
def test_peers_adam_weight_decay_is_keras_legacy_adam_which_bias_corrects(updates):
    ours = displacement_after(
        updates, tf_bertopt.tf_keras.AdamWeightDecay(learning_rate=1e-3, epsilon=1e-6),
        tf.Variable([0.0]),
    )
    theirs = displacement_after(
        updates, tf_keras.optimizers.legacy.Adam(learning_rate=1e-3, epsilon=1e-7), tf.Variable([0.0])
    )
    # With g = 1 every step, m_t = 1 - b1^t and v_t = 1 - b2^t: BERT's step is
    # lr*m_t/sqrt(v_t); the bias-corrected step is lr, every time.
    steps = np.arange(1, updates + 1)
    expected_ratio = np.mean((1 - BETA_1**steps) / np.sqrt(1 - BETA_2**steps))
    assert ours / theirs == pytest.approx(expected_ratio, rel=1e-3)
    assert ours / theirs == pytest.approx({1: 3.162, 10: 5.53}[updates], rel=1e-3)


def bert_like_model():
    """Keras 3 layers named as keras-hub's BERT names them."""
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="pooled_dense")(inputs)
    x = keras.layers.LayerNormalization(name="embeddings_layer_norm")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, use_bias=False, name="logits")(x))
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:  # nonzero, so that a decay would show
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    return model


def decayed_by(optimizer, model) -> set[str]:
    """Paths of the variables one update with zero gradients changes: those decayed."""
    before = [np.array(v.numpy()) for v in model.trainable_variables]
    optimizer.apply_gradients([(tf.zeros_like(v.value), v) for v in model.trainable_variables])
    return {v.path for v, b in zip(model.trainable_variables, before) if not np.array_equal(v.numpy(), b)}


@pytest.mark.parametrize("keras_class", [keras.optimizers.AdamW, keras.optimizers.Lamb])
def test_keras_exclusions_on_tensorflow_backend_match_the_full_variable_name(keras_class):
    assert keras.backend.backend() == "tensorflow"
    model = bert_like_model()
    theirs = keras_class(learning_rate=1.0, weight_decay=0.5)
    theirs.exclude_from_weight_decay(var_names=BERT_EXCLUSIONS)
    ours = tf_bertopt.keras3.AdamWeightDecay(weight_decay_rate=0.01, exclude_from_weight_decay=BERT_EXCLUSIONS)
    ours.build(model.trainable_variables)
    ours_decayed = {v.path for v in model.trainable_variables if ours.uses_weight_decay(v)}
    # "layer_norm" matches gamma and beta only through the layer's name, in the path.
    assert decayed_by(theirs, model) == ours_decayed == {"pooled_dense/kernel", "logits/kernel"}


def test_keras_adamw_loses_its_exclusion_names_on_reload():
    model = bert_like_model()
    optimizer = keras.optimizers.AdamW(learning_rate=1.0, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=BERT_EXCLUSIONS)
    restored = keras.optimizers.AdamW.from_config(optimizer.get_config())
    assert decayed_by(restored, model) == {v.path for v in model.trainable_variables}


def test_lamb_adapts_every_variable_by_default_and_one_argument_gives_the_addons_mapping():
    """TF Addons' and Model Garden's LAMB (official/modeling/optimization/lamb.py)
    exclude from layer adaptation what is excluded from weight decay when
    ``exclude_from_layer_adaptation`` is unset; the TF1 LAMBOptimizer, and so
    this library, adapts every variable unless told."""
    variables = bert_like_model().trainable_variables
    default = tf_bertopt.keras3.LAMB(exclude_from_weight_decay=BERT_EXCLUSIONS)
    addons_like = tf_bertopt.keras3.LAMB(
        exclude_from_weight_decay=BERT_EXCLUSIONS, exclude_from_layer_adaptation=BERT_EXCLUSIONS
    )
    default.build(variables)
    addons_like.build(variables)
    assert all(default.uses_layer_adaptation(v) for v in variables)
    assert [addons_like.uses_layer_adaptation(v) for v in variables] == [
        addons_like.uses_weight_decay(v) for v in variables
    ]
