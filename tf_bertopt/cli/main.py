"""The ``tf-bertopt`` command (also ``python -m tf_bertopt``).

Each subcommand lives in the module named for what it does; that module
exposes ``add_command(subparsers)``, which adds its parser and sets
``func`` (taking the parsed arguments, returning an exit code).
Usage errors exit with code 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tf_bertopt.cli import plotting

# Modules providing subcommands, in the order `--help` lists them.
COMMAND_MODULES = (
    "tf_bertopt.cli.demo",
    "tf_bertopt.cli.schedule_preview",
    "tf_bertopt.cli.decay_report",
    "tf_bertopt.cli.inspect_tf1",
    "tf_bertopt.cli.benchmark",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf-bertopt",
        description="BERT's AdamWeightDecay / LAMB optimizers and learning-rate schedule for TF2 / Keras.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as error:  # bad values the parser could not see
        parser.exit(2, f"tf-bertopt {args.command}: error: {error}\n")
    except plotting.MissingPlotDependency as error:
        parser.exit(1, f"tf-bertopt {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
