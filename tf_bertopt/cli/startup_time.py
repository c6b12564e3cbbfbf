"""``tf-bertopt startup-time``: how long ``--help`` takes, and what it imports.

Each ``tf-bertopt [COMMAND] --help`` runs in a fresh interpreter, several
times; the table gives the median wall time and the heavy modules
(TensorFlow, Keras, tf-keras, matplotlib) its parser imported. ``--help``
should answer in well under a second and import none of them: commands
import TensorFlow only when they run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from tf_bertopt.cli import arguments

HEAVY_MODULES = ("tensorflow", "keras", "tf_keras", "matplotlib")

# Builds the parser and prints help as `tf-bertopt ARGV` does, then names the heavy modules imported.
_PROBE = """
import sys
from tf_bertopt.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY", *[m for m in {heavy!r} if m in sys.modules])
"""


def command_names() -> list[str]:
    """The registered subcommands, in ``--help`` order."""
    from tf_bertopt.cli.main import build_parser

    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def help_seconds(argv: list[str], repeats: int) -> list[float]:
    """Wall seconds of ``python -m tf_bertopt ARGV``, once per repeat, each in a fresh interpreter."""
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tf_bertopt", *argv], capture_output=True, check=True)
        seconds.append(time.perf_counter() - began)
    return seconds


def heavy_imports(argv: list[str]) -> list[str]:
    """The modules of ``HEAVY_MODULES`` that ``tf-bertopt ARGV`` imports."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY_MODULES), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("HEAVY")]
    return line.split()[1:]


def run(args: argparse.Namespace) -> int:
    interpreter = statistics.median(
        _timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True)) for _ in range(args.repeats)
    )
    print(
        f"tf-bertopt start-up: median wall seconds of {args.repeats} runs, each in a fresh interpreter "
        f"(python -c pass alone: {interpreter:.3f} s)"
    )
    rows, slow_or_heavy = [], 0
    print(f"  {'command':28} {'seconds':>8}  heavy modules imported")
    for argv in [["--help"]] + [[name, "--help"] for name in command_names()]:
        seconds = statistics.median(help_seconds(argv, args.repeats))
        heavy = heavy_imports(argv)
        slow_or_heavy += seconds > args.max_seconds or bool(heavy)
        rows.append({"argv": argv, "median_seconds": seconds, "heavy_modules": heavy})
        print(f"  {' '.join(argv):28} {seconds:8.3f}  {', '.join(heavy) or 'none'}")
    if slow_or_heavy:
        print(f"WARNING: {slow_or_heavy} of {len(rows)} took over {args.max_seconds:g} s or imported a heavy module.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"python_seconds": interpreter, "repeats": args.repeats, "commands": rows}, handle, indent=1)
        print(f"Wrote {args.json}")
    return 1 if args.strict and slow_or_heavy else 0


def _timed(function) -> float:
    began = time.perf_counter()
    function()
    return time.perf_counter() - began


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "startup-time",
        help="time `tf-bertopt --help` and each `tf-bertopt COMMAND --help`, and list what they import",
        description=(
            "Runs `tf-bertopt --help` and each `tf-bertopt COMMAND --help` in fresh interpreters, several times "
            "each, and prints the median wall time and the heavy modules (TensorFlow, Keras, tf-keras, "
            "matplotlib) the parser imported. --help should answer in well under a second and import none of "
            "them: commands import TensorFlow only when they run."
        ),
    )
    parser.add_argument("--repeats", type=arguments.positive_int, default=5,
                        help="runs per command; the median is shown (default 5)")
    parser.add_argument("--max-seconds", type=arguments.positive_float, default=1.0,
                        help="warn about a --help slower than this (default 1)")
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    parser.add_argument("--strict", action="store_true",
                        help="exit with code 1 if a --help is slower than --max-seconds or imports a heavy module")
    parser.set_defaults(func=run, uses_tensorflow=False)
