"""``tf-bertopt schedule``: print and plot a learning-rate schedule before training.

Evaluates ``tf_bertopt.WarmupPolynomialDecay`` with the given options at
chosen steps and draws it, optionally next to the variants other libraries
use, which are options of the same class:

* Hugging Face ``create_optimizer``: the decay starts at the end of warmup
  (``decay_start="warmup_end"``), so the rate peaks at ``init`` instead of
  dropping to ``init*(1 - W/T)`` when warmup ends.
* warmup following ``(t/W)^p`` (``warmup_power``);
* warmup starting from a rate above 0 (``warmup_initial_learning_rate``);
* on request, TF Model Garden's ``LinearWarmup`` and ``PolynomialWarmUp``
  (``warmup_style``), which ramp to the decayed rate at the end of warmup.

The two warmup options ramp to the peak rate, unlike Model Garden's, and are
labelled for what they do.

With ``--electra`` it also draws ELECTRA's schedule (``tf_bertopt.ElectraSchedule``:
the decay times a linear warmup factor ``min(1, t/W)``).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from tf_bertopt.cli import arguments
from tf_bertopt.cli.arguments import UsageError

VARIANTS = ("huggingface", "warmup-power", "warmup-start", "model-garden-linear", "model-garden-polynomial")
DEFAULT_VARIANTS = VARIANTS[:3]  # what a bare --compare overlays
# What each variant's curve is called: another library's name only where its
# schedule is reproduced value for value.
VARIANT_LABELS = {
    "huggingface": "Hugging Face",
    "warmup-power": "Power warmup",
    "warmup-start": "Warmup from a start rate",
    "model-garden-linear": "Model Garden LinearWarmup",
    "model-garden-polynomial": "Model Garden PolynomialWarmUp",
}


@dataclasses.dataclass(frozen=True)
class Curve:
    """One schedule: its label and constructor keywords."""

    label: str
    options: dict
    schedule_class: str = "WarmupPolynomialDecay"

    def schedule(self):
        """The ``tf_bertopt`` schedule; ``UsageError`` if the options do not fit together."""
        import tf_bertopt

        try:
            return getattr(tf_bertopt, self.schedule_class)(**self.options)
        except ValueError as error:  # e.g. decay_steps <= warmup_steps with decay_start="warmup_end"
            raise UsageError(str(error)) from None

    def rates(self, steps: np.ndarray) -> np.ndarray:
        """The float32 learning rate at each of ``steps``."""
        import tensorflow as tf

        return self.schedule()(tf.constant(steps, tf.int64)).numpy()


def schedule_options(args: argparse.Namespace) -> dict:
    """``WarmupPolynomialDecay`` keywords from the command line."""
    return {
        "initial_learning_rate": args.init_lr,
        "decay_steps": args.train_steps,
        "warmup_steps": args.warmup_steps,
        "end_learning_rate": args.end_lr,
        "power": args.power,
        "cycle": args.cycle,
        "decay_start": args.decay_start,
        "warmup_power": args.warmup_power,
        "warmup_initial_learning_rate": args.warmup_initial_lr,
    }


def curves(args: argparse.Namespace) -> list[Curve]:
    """The requested schedule, then each variant asked for with ``--compare``."""
    options = schedule_options(args)
    differences = [f"{key}={value!r}" for key, value in options.items() if key not in _POSITIONAL and value != _DEFAULTS[key]]
    label = f"WarmupPolynomialDecay({args.init_lr:g}, {args.train_steps}, {args.warmup_steps}"
    label += "".join(f", {d}" for d in differences) + ")"
    result = [Curve(("BERT: " if not differences else "") + label, options)]
    warmup_start = args.compare_warmup_initial_lr
    if warmup_start is None:
        warmup_start = args.init_lr / 10
    power, start = args.compare_warmup_power, warmup_start
    # (the option shown in the label, other options the variant needs)
    variants = {
        "huggingface": ({"decay_start": "warmup_end"}, {}),
        "warmup-power": ({"warmup_power": power}, {}),
        "warmup-start": ({"warmup_initial_learning_rate": start}, {}),
        "model-garden-linear": (
            {"warmup_initial_learning_rate": start},
            {"warmup_style": "model_garden_linear", "warmup_power": 1.0},
        ),
        "model-garden-polynomial": (
            {"warmup_power": power},
            {"warmup_style": "model_garden_polynomial", "warmup_initial_learning_rate": 0.0},
        ),
    }
    for name in args.compare or ():
        shown, needed = variants[name]
        (key, value), = shown.items()
        text = f"{value:g}" if isinstance(value, float) else repr(value)
        result.append(Curve(f"{VARIANT_LABELS[name]}: {key}={text}", {**options, **needed, **shown}))
    if getattr(args, "electra", False):
        result.append(electra_curve(args))
    return result


def electra_curve(args: argparse.Namespace) -> Curve:
    """ELECTRA's schedule with the same peak, horizon, warmup and power (it has no end rate or cycle)."""
    warmup = max(args.train_steps * args.electra_warmup_proportion, args.warmup_steps)
    options = {
        "initial_learning_rate": args.init_lr,
        "decay_steps": args.train_steps,
        "warmup_steps": warmup,
        "power": args.power,
    }
    return Curve(f"ELECTRA: ElectraSchedule({args.init_lr:g}, {args.train_steps}, {warmup:g}, power={args.power:g})",
                 options, "ElectraSchedule")


_POSITIONAL = ("initial_learning_rate", "decay_steps", "warmup_steps")
_DEFAULTS = {
    "end_learning_rate": 0.0,
    "power": 1.0,
    "cycle": False,
    "decay_start": "step_0",
    "warmup_power": 1.0,
    "warmup_initial_learning_rate": 0.0,
}


def default_steps(warmup: int, total: int, cycle: bool) -> list[int]:
    """Steps worth printing: around the end of warmup, midway, the end (and a cycle on)."""
    candidates = [0, warmup // 2, warmup - 1, warmup, (warmup + total) // 2, total - 1, total, total + total // 10]
    if cycle:
        candidates += [total + 1, total + total // 2, 2 * total]
    return sorted({step for step in candidates if step >= 0})


def run(args: argparse.Namespace) -> int:
    from tf_bertopt.cli import plotting

    if args.compare is not None and not args.compare:
        args.compare = list(DEFAULT_VARIANTS)
    if not args.no_plot:
        plotting.require_matplotlib()
    chosen = curves(args)
    at = np.array(args.at if args.at else default_steps(args.warmup_steps, args.train_steps, args.cycle))
    table = [curve.rates(at) for curve in chosen]
    for index, curve in enumerate(chosen):
        print(f"[{index}] {curve.label}")
    header = "step".rjust(10) + "".join(f"[{index}]".rjust(15) for index in range(len(chosen)))
    print(header)
    for row, step in enumerate(at):
        print(f"{step:10d}" + "".join(f"{values[row]:15.7g}" for values in table))
    if not args.no_plot:
        horizon = args.train_steps * (3 if args.cycle else 1)
        horizon += max(1, horizon // 20)
        steps = np.unique(np.concatenate([np.linspace(0, horizon, 1001).astype(np.int64),
                                          [max(args.warmup_steps - 1, 0), args.warmup_steps]]))
        figure = plotting.learning_rate_figure(
            {curve.label: (steps, curve.rates(steps)) for curve in chosen},
            args.warmup_steps,
            "tf_bertopt.WarmupPolynomialDecay",
        )
        plotting.save(figure, args.output)
        print(f"Wrote {args.output}")
    return 0


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="print and plot the warmup + polynomial-decay learning rate, and its variants",
        description=(
            "Prints tf_bertopt.WarmupPolynomialDecay at chosen steps and plots it. With --compare, "
            "overlays variants: Hugging Face's (decay starts at the end of warmup), a warmup following "
            "(t/W)^p and a warmup from a start rate; on request TF Model Garden's LinearWarmup and "
            "PolynomialWarmUp (warmup to the decayed rate). Each is an option of the same class."
        ),
        epilog="example: tf-bertopt schedule --init-lr 1e-4 --train-steps 10000 --warmup-steps 1000 --compare",
    )
    parser.add_argument("--init-lr", type=arguments.non_negative_float, required=True,
                        help="peak learning rate (initial_learning_rate)")
    parser.add_argument("--train-steps", type=arguments.positive_int, required=True,
                        help="optimizer updates until the rate reaches --end-lr (decay_steps)")
    parser.add_argument("--warmup-steps", type=arguments.non_negative_int, default=0,
                        help="linear-warmup steps (default 0: no warmup)")
    parser.add_argument("--end-lr", type=arguments.non_negative_float, default=0.0,
                        help="rate at the end of the decay (default 0)")
    parser.add_argument("--power", type=arguments.positive_float, default=1.0,
                        help="power of the polynomial decay (default 1: linear)")
    parser.add_argument("--cycle", action="store_true", help="restart the decay every --train-steps steps")
    parser.add_argument("--decay-start", choices=("step_0", "warmup_end"), default="step_0",
                        help="step_0: BERT, the decay counts from step 0 (default); warmup_end: Hugging Face")
    parser.add_argument("--warmup-power", type=arguments.positive_float, default=1.0,
                        help="warmup follows (t/W)^power (default 1: linear)")
    parser.add_argument("--warmup-initial-lr", type=arguments.non_negative_float, default=0.0,
                        help="warmup starts from this rate (default 0)")
    parser.add_argument("--compare", nargs="*", choices=VARIANTS, metavar="VARIANT",
                        help=f"overlay variants of the schedule: any of {', '.join(VARIANTS)} "
                        f"(default: {', '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--compare-warmup-power", type=arguments.positive_float, default=2.0,
                        help="warmup_power of the warmup-power and model-garden-polynomial variants (default 2)")
    parser.add_argument("--compare-warmup-initial-lr", type=arguments.non_negative_float, default=None,
                        help="warmup_initial_learning_rate of the warmup-start and model-garden-linear variants "
                        "(default: a tenth of --init-lr)")
    parser.add_argument("--electra", action="store_true",
                        help="also draw ELECTRA's schedule (decay times min(1, t/W); end rate 0, no cycle)")
    parser.add_argument("--electra-warmup-proportion", type=arguments.non_negative_float, default=0.0,
                        help="ELECTRA's warmup_proportion: W = max(train_steps * proportion, --warmup-steps)")
    parser.add_argument("--at", nargs="+", type=arguments.non_negative_int, metavar="STEP",
                        help="steps to print (default: around the end of warmup, midway and the end)")
    arguments.add_plot_arguments(parser, "tf_bertopt_schedule.png")
    parser.set_defaults(func=run)
