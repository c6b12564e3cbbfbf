"""The fast path (``fused=True``, the default): the same numbers as the TF1 graph, bit for bit.

The fused path is bit-identical to the op-by-op one, so its bound is 0 ulps
per step: every test compares with ``np.array_equal``. The TF1 graph of
``tests/tf1_reference.py`` is the reference where it has the options; LAMB's
bias correction and trust-ratio bounds, which it lacks, are compared with the
op-by-op path (itself checked against the float64 reference elsewhere).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import harness
import keras
import test_parity

from tf_bertopt import fused_updates, keras3, tf_keras, update_plan, update_rules

KINDS = ["adamw", "lamb"]


def make_optimizer(flavour, kind, config_name="constant_lr", fused=True, **extra):
    config = test_parity.CONFIGS[config_name]
    kwargs = dict(test_parity.OPTIMIZER_ARGS[kind], **test_parity.NAME_ARGS, **extra)
    if config["clip_norm"] is not None:
        kwargs["global_clipnorm"] = config["clip_norm"]
    api = harness.front_end(flavour)
    if "schedule" in config:
        s = config["schedule"]
        kwargs["learning_rate"] = api.WarmupPolynomialDecay(s["init_lr"], s["num_train_steps"], s["num_warmup_steps"])
    else:
        kwargs["learning_rate"] = config["learning_rate"]
    cls = api.AdamWeightDecay if kind == "adamw" else api.LAMB
    return cls(fused=fused, **kwargs)


def run(flavour, optimizer, steps=30, jit_compile=False):
    weights = harness.initial_weights()
    return harness.run(flavour, optimizer, weights, harness.gradient_steps(weights, steps), jit_compile=jit_compile)


def assert_same(ours, reference):
    assert len(ours) == len(reference)
    for step, (mine, theirs) in enumerate(zip(ours, reference)):
        for name in mine:
            for slot, a, b in zip("wmv", mine[name], theirs[name]):
                assert np.array_equal(a, b), (
                    f"step {step}, {name} ({slot}): {harness.max_ulp_difference(a, b)} ulps apart"
                )


def count_every_variable_as_large(monkeypatch):
    """Each variable updated in place by its own compiled call; LAMB's squares
    of those with 5 elements or more written to its reused buffer."""
    monkeypatch.setattr(update_plan, "SMALL_ELEMENTS", 1)
    monkeypatch.setattr(fused_updates, "SCRATCH_MIN_ELEMENTS", 5)


def split_by_size(monkeypatch):
    """Of the test variables, (4, 3), (6, 4) and (3, 3) count as large, the
    others (3 elements) as small; LAMB writes the squares of the first two to
    its reused buffer."""
    monkeypatch.setattr(update_plan, "SMALL_ELEMENTS", 9)
    monkeypatch.setattr(fused_updates, "SCRATCH_MIN_ELEMENTS", 12)


def compiled_calls(optimizer) -> int:
    """How many of the fused path's compiled functions were traced: 0 means it was not used."""
    functions = [f for f in vars(optimizer._fused_updates).values() if hasattr(f, "experimental_get_tracing_count")]
    return sum(f.experimental_get_tracing_count() for f in functions)


@pytest.mark.parametrize("config_name", test_parity.CONFIGS)
@pytest.mark.parametrize("kind", KINDS)
def test_fast_path_equals_tf1_graph_bit_for_bit(flavour, kind, config_name, monkeypatch):
    split_by_size(monkeypatch)  # both routes: compiled in place, and TF's kernels on packed small variables
    optimizer = make_optimizer(flavour, kind, config_name)
    ours = run(flavour, optimizer)
    assert compiled_calls(optimizer) > 0
    assert_same(ours, test_parity.tf1_history(kind, config_name))


@pytest.mark.parametrize("kind", KINDS)
def test_fused_large_variable_path_equals_tf1_graph(flavour, kind, monkeypatch):
    # Every variable counts as large: each is updated in place by its own call;
    # LAMB's squares of those with 5 elements or more go through the reused buffer.
    monkeypatch.setattr(update_plan, "SMALL_ELEMENTS", 1)
    monkeypatch.setattr(fused_updates, "SCRATCH_MIN_ELEMENTS", 5)
    optimizer = make_optimizer(flavour, kind, "bert_schedule_clipped")
    ours = run(flavour, optimizer)
    if kind == "lamb":
        assert optimizer._fused_updates._scratch, "no buffer for LAMB's squares"
        assert optimizer._fused_updates._lamb_squares_into.experimental_get_tracing_count() > 0
        assert optimizer._fused_updates._lamb_moments_in_place.experimental_get_tracing_count() > 0
    assert_same(ours, test_parity.tf1_history(kind, "bert_schedule_clipped"))


@pytest.mark.parametrize("kind", KINDS)
def test_small_variables_compiled_in_groups_equal_tf1_graph(flavour, kind, monkeypatch):
    # The test variables' repeated shapes count as coming often: they are compiled GROUP_SIZE at a time.
    monkeypatch.setattr(update_plan, "GROUP_MIN_VARIABLES", 2)
    monkeypatch.setattr(update_plan, "GROUP_SIZE", 2)
    optimizer = make_optimizer(flavour, kind, "bert_schedule_clipped")
    ours = run(flavour, optimizer)
    assert compiled_calls(optimizer) > 0
    assert_same(ours, test_parity.tf1_history(kind, "bert_schedule_clipped"))


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
def test_fused_lamb_options_equal_op_by_op_path(large, monkeypatch):
    if large:
        monkeypatch.setattr(update_plan, "SMALL_ELEMENTS", 1)
        monkeypatch.setattr(fused_updates, "SCRATCH_MIN_ELEMENTS", 5)
    options = dict(bias_correction=True, weight_norm_bounds=(0.1, 0.9), trust_ratio_bounds=(0.0, 4.0))
    fused = run("keras3", make_optimizer("keras3", "lamb", fused=True, **options), steps=20)
    exact = run("keras3", make_optimizer("keras3", "lamb", fused=False, **options), steps=20)
    assert_same(fused, exact)


def test_fused_adamw_under_jit_compile_equals_tf1_graph():
    # The whole step compiled by XLA: only the rounding guard keeps XLA from
    # fusing multiply-adds (clipping and the schedule are left out: their
    # reductions and powers are XLA's own under jit_compile).
    ours = run("keras3", make_optimizer("keras3", "adamw"), jit_compile=True)
    assert_same(ours, test_parity.tf1_history("adamw", "constant_lr"))


@pytest.mark.parametrize("kind", KINDS)
def test_fused_under_jit_compile_with_clipping_within_xla_bound_of_tf1(kind, monkeypatch):
    # Under jit_compile XLA computes clipping's global norm, the schedule and
    # LAMB's norms itself (in its own order): test_xla's bound of 8 ulps of
    # each tensor's largest element applies. Large variables, to check that
    # LAMB leaves its reused buffer aside when XLA compiles the whole step.
    monkeypatch.setattr(update_plan, "SMALL_ELEMENTS", 1)
    monkeypatch.setattr(fused_updates, "SCRATCH_MIN_ELEMENTS", 5)
    optimizer = make_optimizer("keras3", kind, "bert_schedule_clipped")
    ours = run("keras3", optimizer, jit_compile=True)
    assert optimizer._fused_updates._lamb_squares_into.experimental_get_tracing_count() == 0
    reference = test_parity.tf1_history(kind, "bert_schedule_clipped")
    worst = max(
        harness.max_scaled_ulp_difference(a, b)
        for mine, theirs in zip(ours, reference)
        for name in mine
        for a, b in zip(mine[name], theirs[name])
    )
    assert worst <= 8


def test_xla_without_the_rounding_guard_differs_from_tf():
    # What the guard is for: the same math compiled without it rounds differently.
    rng = np.random.default_rng(3)
    weight, grad, m, v = (tf.constant(rng.normal(0, s, 4096).astype(np.float32)) for s in (0.5, 0.01, 0.01, 0.01))
    v = tf.abs(v)

    def update(rounded):
        return update_rules.adam_weight_decay_update(
            weight, grad, m, v, tf.constant(1e-3), beta_1=0.9, beta_2=0.999, epsilon=1e-6,
            weight_decay_rate=0.01, rounded=rounded,
        )

    step = tf.constant(5, tf.int64)
    by_tf = tf.function(lambda: update(lambda x: x))()
    unguarded = tf.function(lambda: update(lambda x: x), jit_compile=True)()
    guarded = tf.function(lambda: update(fused_updates.separately_rounded(step)), jit_compile=True)()
    assert any(not np.array_equal(a, b) for a, b in zip(by_tf, unguarded))
    for a, b in zip(by_tf, guarded):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_sparse_gradient_equals_dense(kind):
    embeddings, indices = "embeddings/word_embeddings", np.array([2, 0, 2, 5], np.int64)
    weights = harness.initial_weights()
    rng = np.random.default_rng(7)
    sparse, dense = [], []
    for step in harness.gradient_steps(weights, 10):
        values = rng.normal(0.0, 0.4, (len(indices), 4)).astype(np.float32)
        summed = np.zeros_like(weights[embeddings])
        np.add.at(summed, indices, values)
        sparse.append(dict(step, **{embeddings: (values, indices)}))
        dense.append(dict(step, **{embeddings: summed}))
    from_sparse = harness.run("keras3", make_optimizer("keras3", kind), weights, sparse, sparse=[embeddings])
    from_dense = harness.run("keras3", make_optimizer("keras3", kind, fused=False), weights, dense)
    assert_same(from_sparse, from_dense)


@pytest.mark.parametrize("kind", KINDS)
def test_fast_path_is_the_default(flavour, kind):
    api = harness.front_end(flavour)
    optimizer = (api.AdamWeightDecay if kind == "adamw" else api.LAMB)()
    assert optimizer.fused is True
    assert optimizer.get_config()["fused"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_configs_with_and_without_fused_load(flavour, kind):
    api = harness.front_end(flavour)
    cls = api.AdamWeightDecay if kind == "adamw" else api.LAMB
    config = cls().get_config()
    for value in (True, False):
        assert cls.from_config(dict(config, fused=value)).fused is value
    del config["fused"]  # a config written before the option existed
    assert cls.from_config(config).fused is True


@pytest.mark.parametrize("kind", KINDS)
def test_fused_is_in_config_and_restored(flavour, kind):
    optimizer = make_optimizer(flavour, kind)
    config = optimizer.get_config()
    assert config["fused"] is True
    assert type(optimizer).from_config(config).fused is True
    assert make_optimizer(flavour, kind, fused=False).get_config()["fused"] is False


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_fused_must_be_a_boolean(flavour, value):
    with pytest.raises(ValueError, match=r"`fused` must be True or False; received fused="):
        harness.front_end(flavour).AdamWeightDecay(fused=value)


def test_plan_compiles_large_variables_and_packs_small_ones_alike(monkeypatch):
    monkeypatch.setattr(update_plan, "SMALL_ELEMENTS", 100)
    shapes = [(10, 10), (3,), (4, 2), (3,), (3,), (5,), (20, 5), (7,)]
    variables = [tf.Variable(tf.zeros(shape)) for shape in shapes]
    variables.append(tf.Variable(tf.zeros((9,), tf.float16)))  # another dtype: not packed with the others
    options = [0.0] * len(variables)
    options[7] = 0.5  # other options: not packed with the others
    assert update_plan.plan(variables, options) == [
        update_plan.Batch("compiled", (0,)),  # large, each alone
        update_plan.Batch("compiled", (6,)),
        update_plan.Batch("packed", (1, 2, 3, 4, 5)),  # small, same dtype and options, any shape
        update_plan.Batch("op_by_op", (7,)),
        update_plan.Batch("op_by_op", (8,)),
    ]


def test_plan_packs_neither_above_the_pack_limit_nor_when_told_not_to(monkeypatch):
    monkeypatch.setattr(update_plan, "PACK_MAX_ELEMENTS", 4)
    variables = [tf.Variable(tf.zeros(shape)) for shape in [(3,), (5,), (4,), (5,)]]
    assert update_plan.plan(variables, [0.0] * 4) == [
        update_plan.Batch("packed", (0, 2)),
        update_plan.Batch("op_by_op", (1,)),
        update_plan.Batch("op_by_op", (3,)),
    ]
    assert {batch.route for batch in update_plan.plan(variables, [0.0] * 4, pack=False)} == {"op_by_op"}


def test_plan_compiles_small_variables_of_a_shape_that_comes_often_in_groups(monkeypatch):
    monkeypatch.setattr(update_plan, "GROUP_MIN_VARIABLES", 3)
    monkeypatch.setattr(update_plan, "GROUP_SIZE", 2)
    variables = [tf.Variable(tf.zeros(shape)) for shape in [(2,), (3,), (2,), (5,), (2,)]]
    assert update_plan.plan(variables, [0.0] * 5) == [
        update_plan.Batch("compiled", (0, 2)),
        update_plan.Batch("compiled", (4,)),
        update_plan.Batch("packed", (1, 3)),
    ]


def test_plan_packs_variables_lamb_adapts_apart_from_those_it_does_not():
    variables = [tf.Variable(tf.zeros((3,))) for _ in range(4)]
    options = [(0.0, True), (0.0, False), (0.0, True), (0.0, False)]
    assert update_plan.plan(variables, options) == [
        update_plan.Batch("packed", (0, 2)),
        update_plan.Batch("packed", (1, 3)),
    ]


@pytest.mark.parametrize("api", [keras3, tf_keras], ids=["keras3", "tf_keras"])
def test_packed_lamb_takes_each_variables_own_trust_ratio_bit_for_bit(api):
    # Small adapted variables of odd sizes share one pack; each segment's norms
    # and lr*r must be the reference path's own, step after step.
    rng = np.random.default_rng(3)
    shapes = [(3,), (7, 5), (64,), (17,), (8, 8), (1,), (33, 3), (2, 2, 2)]
    initial = [rng.normal(0, 0.5, shape).astype(np.float32) for shape in shapes]
    steps = [[rng.normal(0, 0.3 * (i + 1), shape).astype(np.float32) for i, shape in enumerate(shapes)] for _ in range(5)]
    results, routes = [], []
    for fused in (True, False):
        make = keras.Variable if api is keras3 else tf.Variable
        variables = [make(value, name=f"kernel_{i}") for i, value in enumerate(initial)]
        optimizer = api.LAMB(1e-2, weight_decay_rate=0.01, trust_ratio_bounds=(0.0, 8.0), fused=fused)
        optimizer.build(variables)
        if fused:
            weights = [v.value if isinstance(v, keras.Variable) else v for v in variables]
            routes = [batch.route for batch in update_plan.plan(weights, [(0.01, True)] * len(weights))]

        @tf.function
        def step(grads):
            optimizer.apply_gradients(zip(grads, variables))

        for grads in steps:
            step(grads)
        results.append([np.asarray(v.numpy()) for v in variables])
    assert routes == ["packed"]
    for fast, reference in zip(*results):
        assert np.array_equal(fast, reference)


def test_a_fallback_is_logged_once(caplog):
    from tf_bertopt import front_end

    message = "LAMB: a fallback that only this test reports"
    with caplog.at_level("INFO", logger="tf_bertopt"):
        front_end.log_once(message)
        front_end.log_once(message)
    assert [record.getMessage() for record in caplog.records] == [message]
