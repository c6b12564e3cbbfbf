"""What ``import tf_bertopt`` and ``tf-bertopt --help`` import, TensorFlow's log, exit codes.

Start-up time itself is measured by ``tf-bertopt startup-time``, not asserted
here; these tests pin what makes it short: no TensorFlow, Keras or matplotlib
until a command runs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cli_helpers import REPO, error_lines, run_python
from tf_bertopt import cli
from tf_bertopt.cli import tensorflow_log

HEAVY = ("tensorflow", "keras", "tf_keras", "matplotlib")


def _imported_after(code: str) -> list[str]:
    """The heavy modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = code + f"\nimport sys\nprint('HEAVY', *[m for m in {HEAVY!r} if m in sys.modules])"
    result = run_python("-c", probe)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("HEAVY")]
    return line.split()[1:]


def test_building_the_parser_imports_no_tensorflow_keras_or_matplotlib():
    assert _imported_after("import tf_bertopt.cli\ntf_bertopt.cli.build_parser()") == []


def test_help_of_every_command_imports_no_tensorflow_keras_or_matplotlib():
    code = """
from tf_bertopt.cli import main
from tf_bertopt.cli.startup_time import command_names
for argv in [["--help"]] + [[name, "--help"] for name in command_names()]:
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == 0, (argv, exit.code)
"""
    assert _imported_after(code) == []


def test_import_tf_bertopt_imports_neither_tensorflow_nor_matplotlib_nor_the_cli():
    code = "import sys, tf_bertopt\nassert 'tf_bertopt.cli' not in sys.modules, 'the CLI was imported'"
    assert _imported_after(code) == []


def test_flavour_and_top_level_classes_are_resolved_on_first_use():
    code = """
import sys
import tf_bertopt
assert "tensorflow" not in sys.modules
from tf_bertopt import LAMB
assert tf_bertopt.FLAVOUR == "keras3"
import tf_bertopt.keras3
assert LAMB is tf_bertopt.keras3.LAMB and tf_bertopt.create_optimizer is tf_bertopt.keras3.create_optimizer
assert {"LAMB", "FLAVOUR", "keras3"} <= set(dir(tf_bertopt))
"""
    assert "tf_keras" not in _imported_after(code)


def _quiet_environment(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["CUDA_VISIBLE_DEVICES"] = ""
    return {**env, **extra}


def _schedule_stderr(*options: str, **env) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tf_bertopt", *options, "schedule", "--init-lr", "1e-4", "--train-steps", "10",
         "--no-plot"],
        env=_quiet_environment(**env), capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_tensorflow_cpp_log_is_hidden_by_default():
    # TensorFlow's C++ log lines start "I0000 00:00:..." / "W0000 ..." / "E0000 ...".
    stderr = _schedule_stderr()
    assert not [line for line in stderr.splitlines() if line[:1] in "IWE" and line[1:5].isdigit()], stderr


@pytest.mark.parametrize(
    "environment, verbose, expected",
    [({}, False, "3"), ({}, True, None), ({"TF_CPP_MIN_LOG_LEVEL": "0"}, False, "0")],
    ids=["default-quiet", "verbose-leaves-it-unset", "user-setting-kept"],
)
def test_tensorflow_log_level_is_set_only_when_neither_verbose_nor_set_by_the_user(
    environment, verbose, expected, monkeypatch
):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert tensorflow_log.quiet_tensorflow_log(verbose) == (expected == "3" and not environment)
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == expected


def test_verbose_is_accepted_before_and_after_the_command():
    parser = cli.build_parser()
    assert parser.parse_args(["--verbose", "schedule", "--init-lr", "1", "--train-steps", "2"]).verbose
    assert parser.parse_args(["schedule", "--init-lr", "1", "--train-steps", "2", "-v"]).verbose
    assert not parser.parse_args(["schedule", "--init-lr", "1", "--train-steps", "2"]).verbose


def test_an_unexpected_exception_propagates_instead_of_becoming_a_usage_error(monkeypatch):
    from tf_bertopt.cli import inspect_tf1

    def broken(args):
        raise ValueError("a bug, not a usage error")

    monkeypatch.setattr(inspect_tf1, "inspect", broken)
    with pytest.raises(ValueError, match="a bug, not a usage error"):
        cli.main(["inspect-tf1", "anything"])


def test_a_missing_tf1_checkpoint_is_a_one_line_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["inspect-tf1", str(tmp_path / "no_such.ckpt")])
    assert exit_info.value.code == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "cannot read a TF1 checkpoint" in line and "no_such.ckpt" in line


def test_figures_are_never_written_into_the_package(capsys):
    target = REPO / "tf_bertopt" / "cli" / "figure.png"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["schedule", "--init-lr", "1", "--train-steps", "2", "-o", str(target)])
    assert exit_info.value.code == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "must not be inside the tf_bertopt package" in line
    assert not target.exists()


@pytest.mark.parametrize(
    "line, level, hidden",
    [
        ("I0000 00:00:1796327642.834171   12776 port.cc:153] oneDNN custom operations are on.\n", 1, True),
        ("I0000 00:00:1796327642.834171   12776 port.cc:153] oneDNN custom operations are on.\n", 0, False),
        ("W0000 00:00:1796327642.834171   12776 gpu.cc:9] slow\n", 1, False),
        ("E0000 00:00:1796327650.809553   12776 cuda_platform.cc:52] failed call to cuInit\n", 3, True),
        ("E0000 00:00:1796327650.809553   12776 cuda_platform.cc:52] failed call to cuInit\n", 2, False),
        ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n", 1, True),
        ("UserWarning: something from Python\n", 3, False),
    ],
)
def test_only_tensorflow_log_lines_below_the_level_are_dropped(line, level, hidden):
    assert tensorflow_log.is_hidden_log_line(line, level) is hidden


_LOAD_AFTER_IMPORTING = """
import sys
{first}
{second}
model = keras.models.load_model(sys.argv[1])
print("LOADED", type(model.optimizer).__module__, type(model.optimizer).__name__)
"""


@pytest.mark.parametrize(
    "order",
    [
        ("import tf_bertopt", "import keras"),
        ("import keras", "import tf_bertopt"),
        # Our own modules imported first import TensorFlow, and so Keras, halfway through.
        ("from tf_bertopt import tf_keras", "import keras"),
        ("from tf_bertopt.tf_keras import LAMB", "import keras"),
        ("import tf_bertopt.update_rules", "import keras"),
        ("from tf_bertopt.algorithms.lamb import LambMixin", "import keras"),
    ],
    ids=["tf_bertopt-first", "keras-first", "tf_keras-front-end-first", "tf_keras-class-first", "update-rules-first",
         "algorithm-first"],
)
def test_saved_models_load_without_custom_objects_after_import_tf_bertopt_in_either_order(order, tmp_path):
    import keras

    import tf_bertopt

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="hidden")])
    model.compile(optimizer=tf_bertopt.keras3.LAMB(exclude_from_weight_decay=["bias"]), loss="mse")
    model.save(tmp_path / "m.keras")
    result = run_python("-c", _LOAD_AFTER_IMPORTING.format(first=order[0], second=order[1]), str(tmp_path / "m.keras"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED tf_bertopt.keras3.lamb LAMB" in result.stdout
