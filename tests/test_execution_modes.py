"""The fast path across execution modes: the same bits as the op-by-op reference path.

An optimizer stepped eagerly, then in a ``tf.function`` (or the other way),
by two ``tf.function`` objects in turn, by one ``tf.function`` retraced for a
different set of variables, or beside a second optimizer in one program,
must give the numbers the op-by-op path (``fused=False``) gives for the same
calls. The thresholds are lowered so that the test variables fall on both
sides of them: some updated by their own compiled call (LAMB's squares of
some of those through its reused buffer), the others with the small ones.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import harness
from test_fast_path import assert_same, make_optimizer, split_by_size

KINDS = ["adamw", "lamb"]
SCENARIOS = ["eager_then_function", "function_then_eager", "two_functions", "retrace_for_other_variables"]
STEPS = 4


@pytest.fixture
def sizes(monkeypatch):
    """Variables on both sides of the size thresholds (see ``split_by_size``)."""
    split_by_size(monkeypatch)


def _callers(scenario, apply):
    """For each step, the callable that applies it: ``apply`` itself (eager) or a ``tf.function`` of it."""
    first, second = tf.function(apply), tf.function(apply)
    eager = apply
    if scenario == "eager_then_function":
        return [eager] + [first] * (STEPS - 1)
    if scenario == "function_then_eager":
        return [first] * 2 + [eager] * (STEPS - 2)
    if scenario == "two_functions":
        return [first, second] * (STEPS // 2)
    if scenario == "retrace_for_other_variables":
        return [first] * STEPS
    raise AssertionError(scenario)


def run_scenario(flavour, kind, fused, scenario):
    weights = harness.initial_weights()
    names = list(weights)
    stream = harness.gradient_steps(weights, STEPS)
    variables = harness.make_variables(flavour, weights)
    optimizer = make_optimizer(flavour, kind, "bert_schedule_clipped", fused=fused)

    def apply(grads, subset):
        optimizer.apply_gradients(
            [(grad, variables[name]) for name, grad in zip(names, grads) if name in subset and grad is not None]
        )

    history = []
    for index, (call, step) in enumerate(zip(_callers(scenario, apply), stream)):
        subset = tuple(names)
        if scenario == "retrace_for_other_variables" and index % 2:
            subset = tuple(names[::2])  # a Python argument: a new trace with other variables
        call([step[name] for name in names], subset)
        history.append(_state(optimizer, variables))
    return history


def _state(optimizer, variables):
    return {
        name: tuple(np.array(x.numpy()) for x in (variable, *optimizer.get_slots(variable)))
        for name, variable in variables.items()
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("kind", KINDS)
def test_fast_path_equals_op_by_op_path_across_execution_modes(flavour, kind, scenario, sizes):
    assert_same(run_scenario(flavour, kind, True, scenario), run_scenario(flavour, kind, False, scenario))


def _two_optimizers_history(flavour, fused):
    weights = harness.initial_weights()
    names = list(weights)
    halves = (names[::2], names[1::2])
    variables = harness.make_variables(flavour, weights)
    optimizers = (
        make_optimizer(flavour, "adamw", "bert_schedule_clipped", fused=fused),
        make_optimizer(flavour, "lamb", "constant_lr", fused=fused),
    )

    def apply(grads):
        for optimizer, half in zip(optimizers, halves):
            optimizer.apply_gradients([(grads[name], variables[name]) for name in half if grads[name] is not None])

    in_function = tf.function(apply)
    history = []
    for index, step in enumerate(harness.gradient_steps(weights, STEPS)):
        (apply if index == 0 else in_function)(step)
        state = {}
        for optimizer, half in zip(optimizers, halves):
            state.update(_state(optimizer, {name: variables[name] for name in half}))
        history.append(state)
    return history


def test_two_optimizers_in_one_program_equal_op_by_op_path(flavour, sizes):
    assert_same(_two_optimizers_history(flavour, True), _two_optimizers_history(flavour, False))


@pytest.mark.parametrize("kind", KINDS)
def test_eager_step_then_function_step_with_embedding_sized_variable(flavour, kind):
    # A variable of 2^23 elements or more (BERT's word embeddings) used to
    # break LAMB's second step: an eager tensor kept from the first was
    # inspected while the tf.function was traced.
    rng = np.random.default_rng(0)
    values = [rng.normal(0, 0.02, (30522, 768)).astype(np.float32), np.ones(768, np.float32)]
    grads = [[rng.normal(0, 0.01, value.shape).astype(np.float32) for value in values] for _ in range(2)]
    results = []
    for fused in (True, False):
        variables = list(harness.make_variables(flavour, {"embeddings/word": values[0], "LayerNorm/gamma": values[1]}).values())
        optimizer = make_optimizer(flavour, kind, fused=fused)

        def apply(step):
            optimizer.apply_gradients(zip(step, variables))

        apply(grads[0])
        tf.function(apply)(grads[1])
        results.append([variable.numpy() for variable in variables])
    for ours, reference in zip(*results):
        assert np.array_equal(ours, reference)


def test_mirrored_strategy_takes_the_fast_path_with_the_reference_bits():
    # Two logical CPUs need a process of their own (see mirrored_fast_path_case.py).
    case = pathlib.Path(__file__).with_name("mirrored_fast_path_case.py")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(case.parent.parent), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.run([sys.executable, str(case)], capture_output=True, text=True, timeout=300, env=environment)
    assert child.returncode == 0, child.stderr[-3000:]
    results = json.loads(child.stdout.strip().splitlines()[-1])
    assert len(results) == 4
    for name, result in results.items():
        assert result == {"compiled": True, "planned_together": 10, "identical": True}, name
