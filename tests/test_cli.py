"""The ``tf-bertopt`` command: each subcommand run as a user runs it, and its errors.

Subprocess tests run ``python -m tf_bertopt`` with this checkout first on
the path; usage-error tests call ``tf_bertopt.cli.main`` in-process (argparse
exits the same way in both).
"""

from __future__ import annotations

import configparser
import importlib
import re

import numpy as np
import pytest

import reference_numpy
from cli_helpers import REPO, error_lines, png_size, run_cli, run_python
from tf_bertopt import cli


def _subcommands() -> list[str]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return list(action.choices)


def test_console_script_is_declared_for_cli_main():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    scripts = {name.strip(): target.strip() for name, target in (line.split("=", 1) for line in lines)}
    module, function = scripts["tf-bertopt"].split(":")
    assert getattr(importlib.import_module(module), function) is cli.main


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("demo", "schedule", "decay-report"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.parametrize("command", _subcommands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tf-bertopt {command}")
    assert "--" in out  # documents its options


def test_demo_trains_both_optimizers_and_writes_the_figure(tmp_path):
    result = run_cli(
        "demo", "--steps", "20", "--batch-size", "8", "--layers", "1", "--hidden", "16", "-o", "curves.png",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    losses = dict(
        (name, (float(first), float(last)))
        for name, first, last in re.findall(
            r"^(AdamWeightDecay|LAMB): masked-token loss ([\d.]+) .*?-> ([\d.]+)", result.stdout, re.MULTILINE
        )
    )
    assert set(losses) == {"AdamWeightDecay", "LAMB"}, result.stdout
    for name, (first, last) in losses.items():
        assert last < first, f"{name}: loss did not fall ({first} -> {last})"
    assert re.search(r"\d+/\d+ - .*step - loss: [\d.]+", result.stdout), "no Keras progress lines"
    width, height = png_size(tmp_path / "curves.png")
    assert width > 400 and height > 200


def _parse_schedule_table(stdout: str) -> tuple[list[str], dict[int, list[float]]]:
    labels = re.findall(r"^\[\d+\] (.*)$", stdout, re.MULTILINE)
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and re.fullmatch(r"\d+", cells[0]) and len(cells) == len(labels) + 1:
            rows[int(cells[0])] = [float(c) for c in cells[1:]]
    return labels, rows


def test_schedule_prints_each_variant_as_the_reference_and_plots_them(tmp_path):
    result = run_cli(
        "schedule", "--init-lr", "1e-3", "--train-steps", "100", "--warmup-steps", "10", "--power", "2",
        "--end-lr", "1e-5", "--cycle", "--compare", "--compare-warmup-power", "3",
        "--compare-warmup-initial-lr", "2e-4", "-o", "schedule.png",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    labels, rows = _parse_schedule_table(result.stdout)
    assert len(labels) == 4, result.stdout
    assert {0, 9, 10, 99, 100, 101, 150, 200} <= set(rows), result.stdout
    common = dict(init=1e-3, decay_steps=100, warmup_steps=10, end=1e-5, power=2.0, cycle=True)
    variants = [{}, {"decay_start": "warmup_end"}, {"warmup_power": 3.0}, {"warmup_init": 2e-4}]
    for step, printed in rows.items():
        expected = [reference_numpy.bert_learning_rate(step, **common, **variant) for variant in variants]
        np.testing.assert_allclose(printed, expected, rtol=1e-6, atol=1e-12, err_msg=f"step {step}")
    assert png_size(tmp_path / "schedule.png")[0] > 400


def test_schedule_compare_names_a_library_only_for_a_schedule_it_reproduces(capsys):
    """Hugging Face's and Model Garden's schedules are options value for value;
    the two warmup options, which ramp to the peak rate unlike Model Garden's,
    are labelled for what they do."""
    from tf_bertopt.cli import schedule_preview

    parser = importlib.import_module("tf_bertopt.cli.main").build_parser()
    args = parser.parse_args(
        ["schedule", "--init-lr", "1e-4", "--train-steps", "10000", "--warmup-steps", "1000", "--compare",
         *schedule_preview.VARIANTS, "--compare-warmup-initial-lr", "1e-5"]
    )
    curves = schedule_preview.curves(args)
    assert [curve.label for curve in curves] == [
        "BERT: WarmupPolynomialDecay(0.0001, 10000, 1000)",
        "Hugging Face: decay_start='warmup_end'",
        "Power warmup: warmup_power=2",
        "Warmup from a start rate: warmup_initial_learning_rate=1e-05",
        "Model Garden LinearWarmup: warmup_initial_learning_rate=1e-05",
        "Model Garden PolynomialWarmUp: warmup_power=2",
    ]
    at_999 = [float(curve.rates(np.array([999]))[0]) for curve in curves]
    assert at_999[3] == pytest.approx(9.991e-5, rel=1e-6) and at_999[4] == pytest.approx(8.992e-5, rel=1e-6)
    with pytest.raises(SystemExit):
        parser.parse_args(["schedule", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "on request TF Model Garden's LinearWarmup and PolynomialWarmUp" in help_text


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    import keras

    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embeddings")(inputs)
    x = keras.layers.LayerNormalization(name="embeddings_layer_norm")(x)
    x = keras.layers.Dense(8, name="dense")(x)
    model = keras.Model(inputs, keras.layers.Dense(20, name="logits", use_bias=False)(x))
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path, [v.path for v in model.trainable_variables]


def test_decay_report_lists_decisions_of_every_variable_and_warns_about_unmatched(saved_model):
    path, names = saved_model
    patterns = ["layer_norm", "bias", "Bias", "LayerNorm"]
    result = run_cli(
        "decay-report", str(path), "--exclude-from-weight-decay", *patterns,
        "--exclude-from-layer-adaptation", "embeddings$",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    decisions = {
        name: (decay, adapt)
        for decay, adapt, name in re.findall(r"^\s+(yes|no)\s+(yes|no)\s+(\S+)", result.stdout, re.MULTILINE)
    }
    expected = {
        name: (
            "no" if any(re.search(p, name) for p in patterns) else "yes",
            "no" if re.search("embeddings$", name) else "yes",
        )
        for name in names
    }
    assert decisions == expected
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING")]
    # "Bias" matches nothing; "LayerNorm" neither, but its other spelling "layer_norm" does.
    assert len(warnings) == 1 and "'Bias'" in warnings[0] and "ignoring case" in warnings[0], result.stdout


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_decay_report_reads_tf_keras_models(suffix, tmp_path, capsys):
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Dense(3, input_shape=(4,)), tf_keras.layers.LayerNormalization()])
    model.save(tmp_path / f"legacy{suffix}")
    names = [v.name.rsplit(":", 1)[0] for v in model.trainable_variables]
    assert cli.main(["decay-report", str(tmp_path / f"legacy{suffix}"), "--optimizer", "adamw"]) == 0
    rows = dict(
        (name, decay) for decay, name in re.findall(r"^\s+(yes|no)\s+(\S+/\S+)", capsys.readouterr().out, re.MULTILINE)
    )
    assert rows == {name: "no" if re.search("LayerNorm|layer_norm|bias", name) else "yes" for name in names}


def test_decay_report_strict_exits_1_on_unmatched_pattern(saved_model, capsys):
    path, _ = saved_model
    assert cli.main(["decay-report", str(path), "--exclude-from-weight-decay", "nothing_like_this", "--strict"]) == 1
    assert "'nothing_like_this' matches none" in capsys.readouterr().out


def test_decay_report_reads_patterns_of_the_saved_optimizer(tmp_path, capsys):
    import keras

    import tf_bertopt

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="head")])
    model.compile(optimizer=tf_bertopt.LAMB(exclude_from_weight_decay=["kernel"]), loss="mse")
    model.fit(np.ones((2, 3)), np.ones((2, 2)), verbose=0)
    model.save(tmp_path / "compiled.keras")
    assert cli.main(["decay-report", str(tmp_path / "compiled.keras"), "--saved-optimizer"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+no\s+yes\s+head/kernel", out, re.MULTILINE), out
    assert re.search(r"^\s+yes\s+yes\s+head/bias", out, re.MULTILINE), out


def test_bad_arguments_exit_2_with_one_error_line_and_no_traceback():
    result = run_cli("schedule", "--init-lr", "1e-4", "--train-steps", "zero")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        "tf-bertopt schedule: error: argument --train-steps: must be an integer >= 1, got 'zero'"
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no-such-command"], "invalid choice: 'no-such-command'"),
        (["demo", "--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
        (["demo", "--lamb-lr", "nan"], "argument --lamb-lr: must be a finite number"),
        (["demo", "--optimizers", "sgd"], "argument --optimizers: invalid choice: 'sgd'"),
        (["demo", "--hidden", "18"], "--hidden must be a multiple of 4"),
        (["demo", "--corpus", "/no/such/file.txt", "--no-plot"], "--corpus: cannot read '/no/such/file.txt'"),
        (["schedule", "--train-steps", "10"], "the following arguments are required: --init-lr"),
        (["schedule", "--init-lr", "-1", "--train-steps", "10"], "argument --init-lr: must be a number >= 0"),
        (["schedule", "--init-lr", "1", "--train-steps", "10", "--power", "0"], "argument --power: must be a number > 0"),
        (["schedule", "--init-lr", "1", "--train-steps", "5", "--warmup-steps", "5", "--decay-start", "warmup_end",
          "--no-plot"], "`decay_steps` must be > warmup_steps"),
        (["schedule", "--init-lr", "1", "--train-steps", "5", "--compare", "keras"], "invalid choice: 'keras'"),
        (["decay-report", "/no/such/model.keras"], "no such model file or folder"),
        (["decay-report", str(REPO / "setup.cfg")], "is not a saved Keras model"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0], lines


def test_decay_report_invalid_pattern_is_a_usage_error(saved_model, capsys):
    path, _ = saved_model
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["decay-report", str(path), "--exclude-from-weight-decay", "(unclosed"])
    assert exit_info.value.code == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "invalid regular expression '(unclosed'" in line


_WITHOUT_MATPLOTLIB = """
import sys
sys.modules["matplotlib"] = None  # any `import matplotlib...` now raises ImportError
from tf_bertopt.cli import main
for argv in (["schedule", "--init-lr", "1e-4", "--train-steps", "10", "-o", "never.png"],
             ["demo", "--steps", "1", "-o", "never.png"]):
    try:
        main(argv)
    except SystemExit as exit:
        print("EXIT", argv[0], exit.code)
print("NO-PLOT", main(["schedule", "--init-lr", "1e-4", "--train-steps", "10", "--no-plot"]))
"""


def test_missing_matplotlib_says_how_to_install_it_and_no_plot_still_works(tmp_path):
    result = run_python("-c", _WITHOUT_MATPLOTLIB, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "EXIT schedule 1" in result.stdout and "EXIT demo 1" in result.stdout
    assert "Pretraining" not in result.stdout  # the demo stops before training
    assert "NO-PLOT 0" in result.stdout
    lines = error_lines(result.stderr)
    assert len(lines) == 2 and all("pip install 'tf-bertopt[plots]'" in line for line in lines), lines
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "never.png").exists()


def test_decay_report_of_a_saved_sequential_says_its_names_lack_the_model_prefix(tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="hidden")], name="tiny")
    assert model.trainable_variables[1].path == "tiny/hidden/bias"  # in this process
    model.save(tmp_path / "tiny.keras")
    assert cli.main(["decay-report", str(tmp_path / "tiny.keras"), "--optimizer", "adamw"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+no\s+hidden/bias", out, re.MULTILINE), out
    assert "(tiny/hidden/kernel for hidden/kernel)" in out
