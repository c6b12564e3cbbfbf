"""Argument types shared by the ``tf-bertopt`` subcommands, and ``UsageError``.

Each type parses one command-line value or raises
``argparse.ArgumentTypeError``, which argparse turns into a one-line usage
error with exit code 2. A value the parser cannot check (a missing file, two
options that go together) is reported by raising ``UsageError`` from the
command: the same one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import pathlib

_PACKAGE = pathlib.Path(__file__).resolve().parents[1]


class UsageError(ValueError):
    """A command-line value is wrong; ``tf-bertopt`` prints the message and exits with code 2.

    Only for mistakes in what the user typed: any other exception raised by
    a command is a bug or an environment problem and shows its traceback.
    """


def int_at_least(minimum: int):
    """An integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def output_file(text: str) -> str:
    """A path to write to, outside the installed ``tf_bertopt`` package."""
    target = pathlib.Path(text).resolve()
    if target == _PACKAGE or _PACKAGE in target.parents:
        raise argparse.ArgumentTypeError(
            f"must not be inside the tf_bertopt package ({_PACKAGE}); got {text!r}. "
            "Write to the working directory or another folder"
        )
    return text


def add_plot_arguments(parser: argparse.ArgumentParser, default_output: str) -> None:
    """``--output`` and ``--no-plot``, the same in every command that draws."""
    parser.add_argument(
        "--output", "-o", metavar="PNG", type=output_file, default=default_output,
        help=f"where to write the figure (default {default_output}, in the working directory)"
    )
    parser.add_argument(
        "--no-plot", action="store_true", help="write no figure (matplotlib, the extra [plots], is then not needed)"
    )
