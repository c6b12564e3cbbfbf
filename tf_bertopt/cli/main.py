"""The ``tf-bertopt`` command (also ``python -m tf_bertopt``).

Each subcommand lives in the module named for what it does; that module
exposes ``add_command(subparsers)``, which adds its parser and sets
``func`` (taking the parsed arguments, returning an exit code). Command
modules import TensorFlow and Keras inside ``func`` only, so that
``--help`` answers at once, and TensorFlow's C++ log can be kept quiet
(``tensorflow_log``); a command that never needs TensorFlow sets
``uses_tensorflow=False`` in its defaults.

Exit codes: 0 success; 1 findings (``--strict``) or a missing optional
dependency; 2 usage errors (argparse's, and ``arguments.UsageError`` raised by
a command), printed as one line. Any other exception shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tf_bertopt.cli import plotting, tensorflow_log
from tf_bertopt.cli.arguments import UsageError

# Modules providing subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "tf_bertopt.cli.demo",
    "tf_bertopt.cli.schedule_preview",
    "tf_bertopt.cli.decay_report",
    "tf_bertopt.cli.inspect_tf1",
    "tf_bertopt.cli.tf1_example",
    "tf_bertopt.cli.benchmark",
    "tf_bertopt.cli.startup_time",
)

_VERBOSE_HELP = "show TensorFlow's C++ log (hidden unless TF_CPP_MIN_LOG_LEVEL is set)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-bertopt",
        description="BERT's AdamWeightDecay / LAMB optimizers and learning-rate schedule for TF2 / Keras.",
        epilog="exit codes: 0 success, 1 findings with --strict (or matplotlib missing), 2 usage error",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help=_VERBOSE_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_command(subparsers)
    for command_parser in subparsers.choices.values():
        # Also after the command; SUPPRESS keeps a --verbose given before it.
        command_parser.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                                    help=_VERBOSE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tensorflow_log.quiet_tensorflow_log(args.verbose)
    if not args.verbose and getattr(args, "uses_tensorflow", True):
        tensorflow_log.import_tensorflow_quietly()
    try:
        return int(args.func(args) or 0)
    except UsageError as error:  # bad values the parser could not see
        parser.exit(2, f"tf-bertopt {args.command}: error: {error}\n")
    except plotting.MissingPlotDependency as error:
        parser.exit(1, f"tf-bertopt {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
