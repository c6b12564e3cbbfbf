"""``tf-bertopt inspect-tf1``: what a TF1 checkpoint holds, and the learning rate at its step."""

from __future__ import annotations

import argparse

from tf_bertopt.cli.arguments import UsageError
from tf_bertopt.migrate.tf1_checkpoint import TF1Checkpoint

def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect-tf1",
        help="list a TF1 checkpoint's variables, optimizer slots, global step and learning rate",
        description=(
            "List the variables of a TF1 checkpoint (name, shape, dtype), the optimizer slots each "
            "carries and its global_step; with --init-lr and --train-steps, also the learning rate "
            "BERT's warmup + polynomial-decay schedule gives at that step."
        ),
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint prefix or directory")
    parser.add_argument("--init-lr", type=float, help="BERT's peak learning rate (init_lr)")
    parser.add_argument("--train-steps", type=int, help="BERT's num_train_steps (decay horizon)")
    parser.add_argument("--warmup-steps", type=int, default=0, help="BERT's num_warmup_steps (default 0)")
    parser.set_defaults(func=inspect)


def _global_step(checkpoint):
    """The checkpoint's global_step, read before anything is printed: a
    damaged data file fails here, in one line, not halfway through the listing."""
    try:
        return checkpoint.global_step()
    except Exception as error:  # noqa: BLE001 - TF raises IndexError, DataLossError, ... on damaged files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"cannot read the TF1 checkpoint {checkpoint.path!r}, its data is damaged: {first_line}") from None


def inspect(args: argparse.Namespace) -> int:
    if (args.init_lr is None) != (args.train_steps is None):
        raise UsageError(
            "--init-lr and --train-steps go together (both are needed for the learning rate); "
            f"received --init-lr={args.init_lr}, --train-steps={args.train_steps}"
        )
    spec = None
    if args.init_lr is not None:
        from tf_bertopt.schedules import WarmupPolynomialDecaySpec

        spec = WarmupPolynomialDecaySpec(args.init_lr, args.train_steps, args.warmup_steps)
    try:
        checkpoint = TF1Checkpoint(args.checkpoint, owner=None)
    except ValueError as error:  # no readable TF1 checkpoint there
        raise UsageError(str(error)) from None
    step = _global_step(checkpoint)
    print(f"TF1 checkpoint {checkpoint.path}")
    rows = [("variable", "shape", "dtype", "slots")]
    for name in checkpoint.variables:
        entry = checkpoint.entries[name]
        slots = " ".join(sorted(checkpoint.slots.get(name, {})))
        rows.append((name, str(list(entry.shape)), entry.dtype, slots or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    with_slots = sum(1 for name in checkpoint.variables if checkpoint.slots.get(name))
    print(f"\n{len(checkpoint.variables)} variables, {with_slots} with optimizer slots.")
    print(f"Optimizer slots: {checkpoint.describe_slots()}.")
    families = checkpoint.bert_families()
    if families:
        importable = ", ".join("/".join(family) for family in families)
        print(f"Importable with tf_bertopt.migrate.load_tf1_optimizer_state: {importable}")
    print(f"global_step: {step if step is not None else 'none saved'}")
    if spec is not None:
        if step is None:
            print("Learning rate: unknown (the checkpoint has no global_step).")
        else:
            rate = float(spec(step))
            print(
                f"Learning rate at step {step}: {rate:.6g} (BERT schedule: init_lr={spec.initial_learning_rate:g}, "
                f"train_steps={spec.decay_steps}, warmup_steps={spec.warmup_steps})"
            )
    return 0
