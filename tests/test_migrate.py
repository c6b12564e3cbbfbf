"""Importing TF1 optimizer state (SPEC §7): continuing from an imported TF1
checkpoint gives TF1's numbers bit for bit; bad checkpoints are clear errors;
``tf-bertopt inspect-tf1``.

The end-to-end reference is a TF1 graph-mode training script
(``tf1_bert_script``) that trains, saves with a ``Saver`` and keeps training;
expected values elsewhere are read back with ``tf.train.load_checkpoint``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import harness
import tf1_bert_script as script
import tf1_reference
from tf_bertopt import cli
from tf_bertopt.name_matching import variable_name
from tf_bertopt.migrate import load_tf1_optimizer_state, rename_rules

v1 = tf.compat.v1
SCHEDULE = dict(init_lr=0.05, num_train_steps=12, num_warmup_steps=3)
SAVED_AT, CONTINUED = 2, 5  # the continuation crosses the end of warmup
SLOTS = {"adamw": ("adam_m", "adam_v"), "lamb": ("lamb_m", "lamb_v")}

# The Keras model's paths lack BERT's "bert/" scope and "attention/self".
TO_TF1 = rename_rules([
    (r"^(embeddings|encoder|pooler)/", r"bert/\1/"),
    (r"/attention/(query|key|value)/", r"/attention/self/\1/"),
])


def keras_name(tf1_name: str) -> str:
    return tf1_name.replace("bert/", "").replace("attention/self/", "attention/")


@pytest.fixture(scope="module")
def tf1_runs(tmp_path_factory):
    """TF1 trains SAVED_AT + CONTINUED steps, saving after SAVED_AT; cached per optimizer."""
    runs = {}

    def get(kind):
        if kind not in runs:
            runs[kind] = script.train(
                kind == "lamb", script.initial_weights(), script.batches(SAVED_AT + CONTINUED),
                schedule=SCHEDULE, checkpoint_dir=str(tmp_path_factory.mktemp(kind)), save_after=SAVED_AT,
                weight_decay_rate=0.01, exclude_from_weight_decay=script.EXCLUSIONS,
            )
        return runs[kind]

    return get


def create_optimizer(flavour, kind, **kwargs):
    return harness.front_end(flavour).create_optimizer(
        SCHEDULE["init_lr"], SCHEDULE["num_train_steps"], SCHEDULE["num_warmup_steps"], kind, **kwargs
    )


def continue_in_keras(prefix, kind, flavour="keras3", *, accumulation=None, import_state=True):
    """Loads the checkpoint into variables of ``flavour`` and trains CONTINUED steps in a tf.function."""
    shapes = {keras_name(n): np.zeros_like(w) for n, w in script.initial_weights().items()}
    variables = list(harness.make_variables(flavour, shapes).values())
    extra = {"gradient_accumulation_steps": accumulation} if accumulation else {}
    optimizer = create_optimizer(flavour, kind, **extra)
    report = None
    if import_state:
        report = load_tf1_optimizer_state(optimizer, prefix, variables, TO_TF1, load_variables=True)
    else:
        reader = tf.train.load_checkpoint(prefix)
        for variable in variables:
            variable.assign(reader.get_tensor(TO_TF1(variable_name(variable))))
    params = {TO_TF1(variable_name(v)): v for v in variables}

    @tf.function
    def step(ids, labels):
        with tf.GradientTape() as tape:
            loss = script.forward(params, ids, labels)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))

    for ids, labels in script.batches(SAVED_AT + CONTINUED)[SAVED_AT:]:
        for _ in range(accumulation or 1):  # identical micro-batches average to the batch's gradient exactly
            step(ids, labels)
    return params, optimizer, report


def assert_state_equals_tf1(params, optimizer, final, kind):
    for name, variable in params.items():
        m, v = optimizer.get_slots(variable)
        for label, ours, entry in (("w", variable, name), ("m", m, f"{name}/{SLOTS[kind][0]}"),
                                   ("v", v, f"{name}/{SLOTS[kind][1]}")):
            theirs = final[entry]
            assert np.array_equal(ours.numpy(), theirs), (
                f"{name} ({label}): {harness.max_ulp_difference(ours.numpy(), theirs)} ulp from TF1"
            )


# ------------------------------------------------------------------ end to end


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_continuing_from_imported_tf1_state_equals_continuing_in_tf1_bit_for_bit(tf1_runs, kind, flavour):
    prefix, final = tf1_runs(kind)
    params, optimizer, report = continue_in_keras(prefix, kind, flavour)
    assert report.global_step == SAVED_AT and len(report.matched) == len(params)
    assert int(optimizer.iterations) == final["global_step"] == SAVED_AT + CONTINUED
    assert_state_equals_tf1(params, optimizer, final, kind)


def test_without_the_imported_state_the_continuation_differs_from_tf1(tf1_runs):
    """Guards the test above: fresh moments and step 0 give other numbers."""
    prefix, final = tf1_runs("adamw")
    params, optimizer, _ = continue_in_keras(prefix, "adamw", import_state=False)
    with pytest.raises(AssertionError):
        assert_state_equals_tf1(params, optimizer, final, "adamw")


def test_keras3_with_gradient_accumulation_the_counter_is_global_step_times_steps_and_tf1_numbers_follow(tf1_runs):
    prefix, final = tf1_runs("adamw")
    params, optimizer, report = continue_in_keras(prefix, "adamw", accumulation=2)
    assert report.iterations == 2 * SAVED_AT
    assert int(optimizer.iterations) == SAVED_AT + CONTINUED
    assert_state_equals_tf1(params, optimizer, final, "adamw")


def test_imported_step_gives_the_tf1_learning_rate(tf1_runs, flavour):
    prefix, _ = tf1_runs("lamb")
    weights = {keras_name(n): w for n, w in script.initial_weights().items()}
    variables = list(harness.make_variables(flavour, weights).values())
    api = harness.front_end(flavour)
    schedule = api.WarmupPolynomialDecay(SCHEDULE["init_lr"], SCHEDULE["num_train_steps"], SCHEDULE["num_warmup_steps"])
    optimizer = api.LAMB(schedule)
    load_tf1_optimizer_state(optimizer, prefix, variables, TO_TF1)
    expected = tf1_reference.schedule_values([SAVED_AT], **SCHEDULE)[0]
    assert np.float32(schedule(optimizer.iterations)) == expected


# ------------------------------------------------------------------ small checkpoints

RNG = np.random.default_rng(3)
KERNEL = RNG.normal(size=(2, 3)).astype(np.float32)
BIAS = RNG.normal(size=3).astype(np.float32)


def state(suffixes=("adam_m", "adam_v"), step=7, **overrides):
    """TF1 tensors for variables dense/kernel and dense/bias (``None`` in overrides drops an entry)."""
    tensors = {"dense/kernel": KERNEL, "dense/bias": BIAS}
    for name, value in [("dense/kernel", KERNEL), ("dense/bias", BIAS)]:
        for i, suffix in enumerate(suffixes):
            tensors[f"{name}/{suffix}"] = (value * (i + 2)).astype(np.float32)
    if step is not None:
        tensors["global_step"] = np.int64(step)
    for name, value in overrides.items():
        name = name.replace("__", "/")
        if value is None:
            tensors.pop(name)
        else:
            tensors[name] = value
    return tensors


def checkpoint(tmp_path, tensors):
    return script.write_checkpoint(str(tmp_path), tensors)


def dense_variables(kernel_shape=(2, 3), flavour="keras3"):
    return list(harness.make_variables(flavour, {"dense/kernel": np.zeros(kernel_shape, np.float32),
                                                 "dense/bias": np.zeros(3, np.float32)}).values())


def optimizer_of(name="AdamWeightDecay", flavour="keras3", **kwargs):
    return getattr(harness.front_end(flavour), name)(**kwargs)


def slot_values(optimizer, variables):
    return [[s.numpy() for s in optimizer.get_slots(v)] for v in variables]


def test_slots_and_step_load_from_the_checkpoint(tmp_path, flavour):
    prefix = checkpoint(tmp_path, state())
    variables, optimizer = dense_variables(flavour=flavour), optimizer_of(flavour=flavour)
    report = load_tf1_optimizer_state(optimizer, prefix, variables)
    reader = tf.train.load_checkpoint(prefix)
    for variable, (m, v) in zip(variables, slot_values(optimizer, variables)):
        assert np.array_equal(m, reader.get_tensor(variable_name(variable) + "/adam_m"))
        assert np.array_equal(v, reader.get_tensor(variable_name(variable) + "/adam_v"))
    assert int(optimizer.iterations) == 7 and report.complete and report.loaded
    assert not np.any(variables[0].numpy())  # load_variables=False leaves the weights alone


def test_albert_lamb_adam_slots_load_into_lamb(tmp_path):
    prefix = checkpoint(tmp_path, state(("adam_m", "adam_v")))
    variables, optimizer = dense_variables(), optimizer_of("LAMB")
    report = load_tf1_optimizer_state(optimizer, prefix, variables)
    assert report.slot_names == ("adam_m", "adam_v")
    expected = tf.train.load_checkpoint(prefix).get_tensor("dense/kernel/adam_v")
    assert np.array_equal(slot_values(optimizer, variables)[0][1], expected)


def test_missing_slot_is_an_error_naming_the_entry(tmp_path, flavour):
    prefix = checkpoint(tmp_path, state(dense__bias__adam_v=None))
    optimizer, variables = optimizer_of(flavour=flavour), dense_variables(flavour=flavour)
    with pytest.raises(ValueError, match="dense/bias/adam_v` is not in the checkpoint"):
        load_tf1_optimizer_state(optimizer, prefix, variables)
    assert not any(np.any(s) for pair in slot_values(optimizer, variables) for s in pair)  # nothing assigned
    assert int(optimizer.iterations) == 0


def test_wrong_shape_is_an_error_with_both_shapes(tmp_path):
    prefix = checkpoint(tmp_path, state())
    with pytest.raises(ValueError, match=r"dense/kernel/adam_m` has shape \(2, 3\); the variable's is \(3, 2\)"):
        load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables((3, 2)))


def test_wrong_dtype_is_an_error(tmp_path):
    prefix = checkpoint(tmp_path, state(dense__bias__adam_m=BIAS.astype(np.float64)))
    with pytest.raises(ValueError, match="dense/bias/adam_m` has dtype float64; the variable's is float32"):
        load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables())


def test_allow_partial_loads_what_fits_and_reports_the_rest(tmp_path, flavour):
    extra = {"cls/predictions/output_bias": BIAS, "cls/predictions/output_bias/adam_m": BIAS}
    prefix = checkpoint(tmp_path, dict(state(dense__bias__adam_v=None), **extra))
    head = harness.make_variables(flavour, {"head/kernel": KERNEL})
    variables = dense_variables(flavour=flavour) + list(head.values())
    optimizer = optimizer_of(flavour=flavour)
    report = load_tf1_optimizer_state(optimizer, prefix, variables, {"head/kernel": None}, allow_partial=True)
    assert report.matched == [("dense/kernel", "dense/kernel")]
    assert [(p.variable, p.entry) for p in report.missing] == [("dense/bias", "dense/bias/adam_v")]
    assert report.skipped == ["head/kernel"] and not report.complete
    assert report.unused == ["cls/predictions/output_bias", "cls/predictions/output_bias/adam_m"]
    (kernel_m, _), (bias_m, bias_v), _ = slot_values(optimizer, variables)
    assert np.array_equal(kernel_m, 2 * KERNEL)
    assert not np.any(bias_m) and not np.any(bias_v)  # a variable loads whole or not at all
    text = str(report)
    for fragment in ("1 of 2 variables", "1 skipped", "missing (1)", "dense/bias/adam_v",
                     "cls/predictions/output_bias (+ adam_m)"):
        assert fragment in text


def test_allow_partial_reports_a_shape_mismatch(tmp_path):
    prefix = checkpoint(tmp_path, state())
    report = load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables((3, 2)), allow_partial=True)
    assert {p.entry for p in report.mismatched} == {"dense/kernel/adam_m", "dense/kernel/adam_v"}
    assert report.matched == [("dense/bias", "dense/bias")]


def test_a_name_with_no_entries_at_all_suggests_the_closest_checkpoint_name(tmp_path):
    prefix = checkpoint(tmp_path, state())
    with pytest.raises(ValueError, match="closest checkpoint variable: `dense/kernel`"):
        load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables(), {"dense/kernel": "dense/kernal"})


def test_tf_train_adam_checkpoint_is_refused_saying_what_it_holds(tmp_path):
    with tf.Graph().as_default():
        weight = v1.get_variable("dense/kernel", initializer=tf.constant(KERNEL))
        train = v1.train.AdamOptimizer(0.1).minimize(tf.reduce_sum(weight ** 2), v1.train.get_or_create_global_step())
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            session.run(train)
            prefix = v1.train.Saver().save(session, str(tmp_path / "adam.ckpt"))
    found = r"no BERT-family optimizer slots.*Adam/Adam_1 on 1 variable, written by tf.train.AdamOptimizer"
    with pytest.raises(ValueError, match=found):
        load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables()[:1])
    optimizer, variables = optimizer_of(), dense_variables()[:1]
    load_tf1_optimizer_state(optimizer, prefix, variables, slot_names=("Adam", "Adam_1"))
    expected = tf.train.load_checkpoint(prefix).get_tensor("dense/kernel/Adam_1")
    assert np.array_equal(optimizer.get_slots(variables[0])[1].numpy(), expected)


def test_checkpoint_without_optimizer_slots_is_refused(tmp_path):
    prefix = checkpoint(tmp_path, {"dense/kernel": KERNEL, "dense/bias": BIAS})
    found = r"no BERT-family optimizer slots.*no optimizer slots \(only model variables\)"
    with pytest.raises(ValueError, match=found):
        load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables())


def test_checkpoint_with_both_slot_families_needs_slot_names(tmp_path):
    prefix = checkpoint(tmp_path, dict(state(("adam_m", "adam_v")), **state(("lamb_m", "lamb_v"))))
    with pytest.raises(ValueError, match="both adam_m/adam_v and lamb_m/lamb_v"):
        load_tf1_optimizer_state(optimizer_of("LAMB"), prefix, dense_variables())
    report = load_tf1_optimizer_state(optimizer_of("LAMB"), prefix, dense_variables(), slot_names=("lamb_m", "lamb_v"))
    assert report.complete and "dense/kernel/adam_m" in report.unused


@pytest.mark.parametrize("where", ["no_such_prefix", "empty_directory", "not_a_checkpoint"])
def test_unreadable_path_is_a_clear_error(tmp_path, where):
    paths = {"no_such_prefix": tmp_path / "model.ckpt-5", "empty_directory": tmp_path,
             "not_a_checkpoint": tmp_path / "notes.txt"}
    path = paths[where]
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read a TF1 checkpoint at checkpoint_path='.*'"):
        load_tf1_optimizer_state(optimizer_of(), str(path), dense_variables())


def test_tf2_object_based_checkpoint_is_refused_with_the_tf2_way(tmp_path):
    prefix = tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(tmp_path / "tf2"))
    with pytest.raises(ValueError, match="TF2 object-based checkpoint"):
        load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables())


def test_missing_global_step_is_an_error_unless_partial(tmp_path):
    prefix = checkpoint(tmp_path, state(step=None))
    with pytest.raises(ValueError, match="`global_step` is not in the checkpoint"):
        load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables())
    optimizer = optimizer_of()
    report = load_tf1_optimizer_state(optimizer, prefix, dense_variables(), allow_partial=True)
    assert report.iterations is None and int(optimizer.iterations) == 0 and len(report.matched) == 2


def test_name_map_dict_renames_and_keys_must_name_variables(tmp_path):
    tensors = {k.replace("dense/", "bert/pooler/dense/"): v for k, v in state().items()}
    prefix = checkpoint(tmp_path, tensors)
    name_map = {"dense/kernel": "bert/pooler/dense/kernel", "dense/bias": "bert/pooler/dense/bias"}
    assert load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables(), name_map).complete
    with pytest.raises(ValueError, match=r"`name_map` has keys that name none of the variables: \['dense/kernal'\]"):
        load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables(), {"dense/kernal": "x"})


def test_reshape_accepts_same_size_tensors_only_when_asked(tmp_path):
    flat = KERNEL.reshape(6)
    prefix = checkpoint(tmp_path, state(dense__kernel__adam_m=flat, dense__kernel__adam_v=flat))
    with pytest.raises(ValueError, match="has shape"):
        load_tf1_optimizer_state(optimizer_of(), prefix, dense_variables())
    optimizer, variables = optimizer_of(), dense_variables()
    report = load_tf1_optimizer_state(optimizer, prefix, variables, reshape=True)
    assert report.reshaped == [("dense/kernel", "dense/kernel")]
    assert np.array_equal(optimizer.get_slots(variables[0])[0].numpy(), KERNEL)


def test_ema_averages_start_from_the_weights_not_zero(tmp_path, flavour):
    prefix = checkpoint(tmp_path, state())
    optimizer, variables = optimizer_of(flavour=flavour, use_ema=True), dense_variables(flavour=flavour)
    report = load_tf1_optimizer_state(optimizer, prefix, variables, load_variables=True)
    assert report.ema == "variables"
    for variable, average in zip(variables, optimizer._model_variables_moving_average):
        assert np.array_equal(average.numpy(), tf.train.load_checkpoint(prefix).get_tensor(variable_name(variable)))


def test_ema_averages_come_from_the_checkpoint_when_it_has_them(tmp_path, flavour):
    prefix = checkpoint(tmp_path, state(dense__kernel__ExponentialMovingAverage=KERNEL / 2,
                                        dense__bias__ExponentialMovingAverage=BIAS / 2))
    optimizer, variables = optimizer_of("LAMB", flavour, use_ema=True), dense_variables(flavour=flavour)
    assert load_tf1_optimizer_state(optimizer, prefix, variables).ema == "checkpoint"
    assert np.array_equal(optimizer._model_variables_moving_average[0].numpy(), KERNEL / 2)


def test_loss_scale_optimizer_is_unwrapped(tmp_path, flavour):
    prefix = checkpoint(tmp_path, state())
    wrapper = {"keras3": keras.optimizers.LossScaleOptimizer, "tf_keras": tf_keras.mixed_precision.LossScaleOptimizer}
    optimizer, variables = wrapper[flavour](optimizer_of(flavour=flavour)), dense_variables(flavour=flavour)
    load_tf1_optimizer_state(optimizer, prefix, variables)
    assert int(optimizer.iterations) == 7
    assert np.array_equal(optimizer.inner_optimizer.get_slots(variables[1])[0].numpy(), 2 * BIAS)


def test_import_outside_the_strategy_scope_builds_and_loads_in_it(tmp_path, flavour):
    """An optimizer made under a tf.distribute strategy cannot build outside its scope."""
    prefix = checkpoint(tmp_path, state())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        variables, optimizer = dense_variables(flavour=flavour), optimizer_of(flavour=flavour)
    load_tf1_optimizer_state(optimizer, prefix, variables)
    m, v = optimizer.get_slots(variables[0])
    assert isinstance(v.value if flavour == "keras3" else v, tf.distribute.DistributedValues)
    assert np.array_equal(v.numpy(), 3 * KERNEL) and int(optimizer.iterations.numpy()) == 7


def test_optimizer_without_get_slots_is_a_type_error(tmp_path):
    prefix = checkpoint(tmp_path, state())
    with pytest.raises(TypeError, match="must be a tf_bertopt AdamWeightDecay or LAMB"):
        load_tf1_optimizer_state(keras.optimizers.Adam(), prefix, dense_variables())


def test_variables_the_built_optimizer_does_not_train_are_an_error(tmp_path):
    prefix = checkpoint(tmp_path, state())
    variables, optimizer = dense_variables(), optimizer_of()
    optimizer.build(variables[:1])
    with pytest.raises(ValueError, match="'dense/bias' is not one the optimizer was built for"):
        load_tf1_optimizer_state(optimizer, prefix, variables)


def test_rename_rules_turn_keras_paths_into_tf1_bert_names():
    to_tf1 = rename_rules([(r"^", "bert/"), (r"/attention/(query|key|value)/", r"/attention/self/\1/")])
    assert to_tf1("encoder/layer_0/attention/query/kernel") == "bert/encoder/layer_0/attention/self/query/kernel"
    assert to_tf1("embeddings/LayerNorm/gamma") == "bert/embeddings/LayerNorm/gamma"


@pytest.mark.parametrize("rules", [[("(", "x")], [("a",)], "a->b"])
def test_rename_rules_reject_bad_rules(rules):
    with pytest.raises(ValueError, match="rename_rules"):
        rename_rules(rules)


# ------------------------------------------------------------------ the CLI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "tf_bertopt", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_inspect_tf1_lists_variables_slots_global_step_and_learning_rate(tf1_runs):
    prefix, _ = tf1_runs("lamb")
    result = run_cli("inspect-tf1", prefix, "--init-lr", "0.05", "--train-steps", "12", "--warmup-steps", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "bert/encoder/layer_0/attention/self/query/kernel  [4, 4]  float32  lamb_m lamb_v" in out
    assert "lamb_m/lamb_v on 11 variables" in out and f"global_step: {SAVED_AT}" in out
    expected = tf1_reference.schedule_values([SAVED_AT], **SCHEDULE)[0]
    assert f"Learning rate at step {SAVED_AT}: {expected:.6g}" in out


def test_inspect_tf1_bad_path_exits_2_with_a_one_line_error(tmp_path):
    result = run_cli("inspect-tf1", str(tmp_path / "missing.ckpt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # Ours is the last line; TensorFlow's native start-up log lines may precede it.
    ours = [line for line in result.stderr.splitlines() if line.startswith("tf-bertopt")]
    assert ours == [result.stderr.strip().splitlines()[-1]]
    assert ours[0].startswith("tf-bertopt inspect-tf1: error: cannot read a TF1 checkpoint at checkpoint_path=")


def test_inspect_tf1_needs_init_lr_and_train_steps_together(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["inspect-tf1", str(tmp_path), "--init-lr", "1e-4"])
    assert exit_.value.code == 2
    assert "--init-lr and --train-steps go together" in capsys.readouterr().err
