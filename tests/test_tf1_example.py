"""``tf-bertopt make-tf1-example``: a TF1 checkpoint to try ``inspect-tf1`` and the state import on."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_bertopt
from tf_bertopt import cli
from tf_bertopt.migrate import load_tf1_optimizer_state, write_tf1_example_checkpoint
from tf_bertopt.migrate.tf1_example import tf1_variable_shapes


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tf1_example")
    assert cli.main(["make-tf1-example", str(directory), "--steps", "6", "--warmup-steps", "4",
                     "--train-steps", "50", "--init-lr", "0.01"]) == 0
    return directory


def test_the_checkpoint_holds_bert_names_adam_slots_and_global_step(example):
    reader = tf.train.load_checkpoint(str(example))
    shapes = reader.get_variable_to_shape_map()
    expected = tf1_variable_shapes()
    for name, shape in expected.items():
        assert tuple(shapes[name]) == shape, name
        for slot in ("adam_m", "adam_v"):
            assert tuple(shapes[f"{name}/{slot}"]) == shape, (name, slot)
            assert np.any(reader.get_tensor(f"{name}/{slot}") != 0), (name, slot)
    assert set(shapes) == set(expected) | {f"{n}/{s}" for n in expected for s in ("adam_m", "adam_v")} | {
        "global_step"}
    assert int(reader.get_tensor("global_step")) == 6


def test_inspect_tf1_reports_the_example_and_its_learning_rate(example, capsys):
    capsys.readouterr()
    assert cli.main(["inspect-tf1", str(example), "--init-lr", "0.01", "--train-steps", "50",
                     "--warmup-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "24 variables, 24 with optimizer slots." in out
    assert "global_step: 6" in out
    # BERT's rate after warmup decays from step 0: 0.01 * (1 - 6/50).
    (rate,) = re.findall(r"Learning rate at step 6: (\S+)", out)
    assert float(rate) == pytest.approx(0.01 * (1 - 6 / 50), rel=1e-6)


def test_the_example_imports_into_a_tf_bertopt_optimizer(example):
    reader = tf.train.load_checkpoint(str(example))
    # Keras 3 variable names cannot hold "/": map each variable's path to its TF1 name.
    variables, to_tf1 = [], {}
    for name, shape in tf1_variable_shapes().items():
        variable = keras.Variable(np.zeros(shape, np.float32), name=name.replace("/", "__"))
        variables.append(variable)
        to_tf1[variable.path] = name
    optimizer = tf_bertopt.keras3.create_optimizer(0.01, 50, 4)
    report = load_tf1_optimizer_state(optimizer, str(example), variables, to_tf1, load_variables=True)
    assert report.complete, report
    assert int(optimizer.iterations) == 6
    assert float(optimizer.learning_rate) == pytest.approx(0.01 * (1 - 6 / 50), rel=1e-6)
    for variable in variables:
        name = to_tf1[variable.path]
        np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(name))
        m, v = optimizer.get_slots(variable)
        np.testing.assert_array_equal(np.asarray(m), reader.get_tensor(f"{name}/adam_m"))
        np.testing.assert_array_equal(np.asarray(v), reader.get_tensor(f"{name}/adam_v"))


def test_out_of_range_arguments_are_errors_naming_the_argument(tmp_path):
    with pytest.raises(ValueError, match=r"`steps` must be an integer >= 1; received steps=0"):
        write_tf1_example_checkpoint(tmp_path, steps=0)
