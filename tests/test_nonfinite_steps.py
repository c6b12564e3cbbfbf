"""Non-finite gradients: applied as TF1 BERT did by default; ``skip_nonfinite_steps=True`` skips the update whole.

A run with a bad step (one ``inf`` or ``NaN`` element) skipped must end bit for
bit where the same run without that step ends: weights, every optimizer
variable (slots, EMA averages, accumulators, ``iterations``) and the
scheduled learning rate; the skip is counted in ``nonfinite_step_count``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import harness
from tf_bertopt import nonfinite_steps

KINDS = ["AdamWeightDecay", "LAMB"]
STEPS = 6
BAD_STEP = 2
DENSE = "layer_0/dense/kernel"
SPARSE = "embeddings/word_embeddings"


def make_optimizer(flavour, kind, **kwargs):
    api = harness.front_end(flavour)
    schedule = api.WarmupPolynomialDecay(0.02, decay_steps=8, warmup_steps=2)
    return getattr(api, kind)(
        learning_rate=schedule,
        weight_decay_rate=0.01,
        exclude_from_weight_decay=harness.EXCLUSIONS,
        global_clipnorm=1.0,
        **kwargs,
    )


def stream_with_bad_step(bad_value, where=DENSE):
    weights = harness.initial_weights()
    stream = harness.gradient_steps(weights, steps=STEPS, seed=3)
    bad = {name: None if g is None else g.copy() for name, g in stream[BAD_STEP].items()}
    bad[where].flat[1] = bad_value
    return weights, stream[:BAD_STEP] + [bad] + stream[BAD_STEP + 1 :], stream[:BAD_STEP] + stream[BAD_STEP + 1 :]


def sparse_stream(stream):
    """The embedding gradient as (values, indices) rows, with a repeated row."""
    out = []
    for step in stream:
        step = dict(step)
        dense = step[SPARSE]
        step[SPARSE] = (np.concatenate([dense[:3], dense[2:3]]), np.array([0, 1, 2, 2], np.int64))
        out.append(step)
    return out


def train(flavour, optimizer, weights, stream, **run_args):
    """The final state: every model and optimizer variable but the skip counter, and the next learning rate."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    history = harness.run(flavour, optimizer, weights, stream, **run_args)
    counter = inner.nonfinite_step_count
    others = [v for v in inner.variables if v is not counter]
    state = {f"optimizer/{i}": np.array(v.numpy()) for i, v in enumerate(others)}
    state.update({f"model/{name}": w for name, (w, _, _) in history[-1].items()})
    state["learning_rate"] = np.array(inner.learning_rate, np.float32)
    return state, None if counter is None else int(counter.numpy())


def assert_bit_identical(a, b):
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k].tobytes() != b[k].tobytes()] == []


@pytest.mark.parametrize("kind", ["AdamWeightDecay"])
def test_default_applies_a_nonfinite_gradient_as_tf1_did(flavour, kind):
    weights, with_bad, _ = stream_with_bad_step(np.inf)
    optimizer = make_optimizer(flavour, kind)
    history = harness.run(flavour, optimizer, weights, with_bad)
    assert not np.all(np.isfinite(history[-1][DENSE][0]))
    assert optimizer.nonfinite_step_count is None
    assert int(optimizer.iterations.numpy()) == STEPS


@pytest.mark.parametrize(
    "kind, bad_value, fused, jit_compile",
    [
        ("AdamWeightDecay", np.inf, False, False),
        ("AdamWeightDecay", -np.inf, True, False),
        ("LAMB", np.nan, True, True),  # decided inside an XLA-compiled step
    ],
)
def test_skipped_dense_step_ends_where_the_run_without_it_ends(flavour, kind, bad_value, fused, jit_compile):
    weights, with_bad, without = stream_with_bad_step(bad_value)
    args = dict(use_ema=True, fused=fused)
    guarded_optimizer = make_optimizer(flavour, kind, skip_nonfinite_steps=True, **args)
    skipped, count = train(flavour, guarded_optimizer, weights, with_bad, jit_compile=jit_compile)
    expected, _ = train(flavour, make_optimizer(flavour, kind, **args), weights, without, jit_compile=jit_compile)
    assert_bit_identical(skipped, expected)
    assert count == 1


@pytest.mark.parametrize("kind, bad_value", [("AdamWeightDecay", np.nan), ("LAMB", np.inf)])
def test_skipped_sparse_step_ends_where_the_run_without_it_ends(flavour, kind, bad_value):
    weights, with_bad, without = stream_with_bad_step(bad_value, where=SPARSE)
    run_args = dict(sparse=(SPARSE,))
    skipped, count = train(
        flavour, make_optimizer(flavour, kind, skip_nonfinite_steps=True), weights, sparse_stream(with_bad), **run_args
    )
    expected, _ = train(flavour, make_optimizer(flavour, kind), weights, sparse_stream(without), **run_args)
    assert_bit_identical(skipped, expected)
    assert count == 1


@pytest.mark.parametrize("kind, jit_compile", [("AdamWeightDecay", False), ("LAMB", True)])
def test_no_number_changes_when_no_step_is_skipped(flavour, kind, jit_compile):
    weights = harness.initial_weights()
    stream = harness.gradient_steps(weights, steps=STEPS, seed=4)
    guarded_optimizer = make_optimizer(flavour, kind, skip_nonfinite_steps=True)
    guarded, count = train(flavour, guarded_optimizer, weights, stream, jit_compile=jit_compile)
    plain, _ = train(flavour, make_optimizer(flavour, kind), weights, stream, jit_compile=jit_compile)
    assert_bit_identical(guarded, plain)
    assert count == 0


def test_skipped_micro_batch_leaves_keras3_gradient_accumulation_untouched():
    weights, with_bad, without = stream_with_bad_step(np.inf)
    args = dict(gradient_accumulation_steps=2)
    guarded_optimizer = make_optimizer("keras3", "LAMB", skip_nonfinite_steps=True, **args)
    skipped, count = train("keras3", guarded_optimizer, weights, with_bad)
    expected, _ = train("keras3", make_optimizer("keras3", "LAMB", **args), weights, without)
    assert_bit_identical(skipped, expected)
    assert count == 1


def test_skip_count_is_saved_and_restored_by_a_checkpoint(flavour, tmp_path):
    weights, with_bad, _ = stream_with_bad_step(np.nan)
    optimizer = make_optimizer(flavour, "LAMB", skip_nonfinite_steps=True)
    harness.run(flavour, optimizer, weights, with_bad)
    path = tf.train.Checkpoint(optimizer=optimizer).write(str(tmp_path / "ckpt"))
    restored = make_optimizer(flavour, "LAMB", skip_nonfinite_steps=True)
    restored.build(list(harness.make_variables(flavour, weights).values()))
    tf.train.Checkpoint(optimizer=restored).read(path).assert_existing_objects_matched()
    assert int(restored.nonfinite_step_count.numpy()) == 1
    assert nonfinite_steps.COUNTER_NAME in restored.nonfinite_step_count.name


def loss_scale_optimizer(flavour, inner):
    if flavour == "keras3":
        return keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0**4)
    return tf_keras.mixed_precision.LossScaleOptimizer(inner, initial_scale=2.0**4)


@pytest.mark.parametrize("kind", ["LAMB"])
def test_under_loss_scaling_the_wrapper_skips_and_the_inner_optimizer_never_sees_the_step(flavour, kind):
    weights, with_bad, _ = stream_with_bad_step(np.inf)
    guarded = loss_scale_optimizer(flavour, make_optimizer(flavour, kind, skip_nonfinite_steps=True))
    plain = loss_scale_optimizer(flavour, make_optimizer(flavour, kind))
    guarded_state, count = train(flavour, guarded, weights, with_bad)
    plain_state, _ = train(flavour, plain, weights, with_bad)
    assert_bit_identical(guarded_state, plain_state)
    assert count == 0  # the wrapper skipped the step before the inner optimizer was called
    # Keras 3's wrapper leaves the skipped step uncounted; tf-keras's counts it in `iterations`.
    assert int(guarded.inner_optimizer.iterations.numpy()) == (STEPS - 1 if flavour == "keras3" else STEPS)
    assert float(guarded.dynamic_scale if flavour == "keras3" else guarded.loss_scale) == 2.0**3


def test_skip_nonfinite_steps_is_in_get_config_and_round_trips(flavour):
    for kind in KINDS:
        optimizer = make_optimizer(flavour, kind, skip_nonfinite_steps=True)
        config = optimizer.get_config()
        assert config["skip_nonfinite_steps"] is True
        assert type(optimizer).from_config(config).skip_nonfinite_steps is True
        assert make_optimizer(flavour, kind).get_config()["skip_nonfinite_steps"] is False


def test_create_optimizer_passes_skip_nonfinite_steps_through(flavour):
    api = harness.front_end(flavour)
    for kind in ("adamw", "lamb"):
        assert api.create_optimizer(1e-3, 10, 1, kind, skip_nonfinite_steps=True).skip_nonfinite_steps is True


@pytest.mark.parametrize("value", [1, "yes", None])
def test_skip_nonfinite_steps_must_be_a_boolean(flavour, value):
    message = r"LAMB: `skip_nonfinite_steps` must be True or False; received skip_nonfinite_steps="
    with pytest.raises(ValueError, match=message):
        make_optimizer(flavour, "LAMB", skip_nonfinite_steps=value)


@pytest.mark.parametrize("kind", ["LAMB"])
def test_model_fit_skips_a_batch_whose_loss_is_not_finite(flavour, kind):
    library = keras if flavour == "keras3" else tf_keras
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    y = rng.normal(size=(12, 1)).astype(np.float32)
    y_bad = y.copy()
    y_bad[4] = np.inf  # the second batch of 4

    def fit(x, y):
        layers = [library.layers.Dense(units, kernel_initializer="ones") for units in (2, 1)]
        model = library.Sequential([library.Input((3,)), *layers])
        optimizer = make_optimizer(flavour, kind, skip_nonfinite_steps=True)
        model.compile(optimizer=optimizer, loss="mse")  # Keras 3 compiles the step with XLA where it can
        model.fit(x, y, batch_size=4, shuffle=False, verbose=0)
        return [w.numpy() for w in model.weights], optimizer

    weights, optimizer = fit(x, y_bad)
    expected, _ = fit(np.delete(x, slice(4, 8), axis=0), np.delete(y, slice(4, 8), axis=0))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(weights, expected))
    assert int(optimizer.nonfinite_step_count.numpy()) == 1 and int(optimizer.iterations.numpy()) == 2
