"""``tf-bertopt make-tf1-example``: write a small TF1 BERT checkpoint with optimizer state."""

from __future__ import annotations

import argparse

from tf_bertopt.cli import arguments
from tf_bertopt.cli.arguments import UsageError


def run(args: argparse.Namespace) -> int:
    from tf_bertopt.migrate.tf1_example import write_tf1_example_checkpoint

    if args.warmup_steps >= args.train_steps:
        raise UsageError(
            f"--warmup-steps must be smaller than --train-steps; received {args.warmup_steps} and {args.train_steps}"
        )
    prefix = write_tf1_example_checkpoint(
        args.directory, steps=args.steps, init_lr=args.init_lr, train_steps=args.train_steps,
        warmup_steps=args.warmup_steps, layers=args.layers, seed=args.seed,
    )
    print(f"Wrote a TF1 checkpoint after {args.steps} AdamWeightDecay steps: {prefix}")
    print("Inspect it with:")
    print(f"  tf-bertopt inspect-tf1 {prefix} --init-lr {args.init_lr:g} --train-steps {args.train_steps} "
          f"--warmup-steps {args.warmup_steps}")
    return 0


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-tf1-example",
        help="write a small TF1 BERT checkpoint with optimizer state (adam_m/adam_v, global_step) to try inspect-tf1 on",
        description=(
            "Trains a tiny BERT-shaped classifier (TF1 BERT's variable names, hidden size 8) for a few steps "
            "the way TF1 BERT did, in a tf.compat.v1 graph with BERT's AdamWeightDecayOptimizer and learning "
            "rate schedule, and saves a tf.compat.v1.train.Saver checkpoint holding the weights, their "
            "adam_m/adam_v slots and global_step: something to try inspect-tf1 and "
            "tf_bertopt.migrate.load_tf1_optimizer_state on. A few seconds."
        ),
        epilog="example: tf-bertopt make-tf1-example tf1_example && tf-bertopt inspect-tf1 tf1_example",
    )
    parser.add_argument("directory", metavar="DIR", type=arguments.output_file,
                        help="folder to write model.ckpt-STEPS.* and its checkpoint file into (created if missing)")
    parser.add_argument("--steps", type=arguments.positive_int, default=20,
                        help="updates before saving: the checkpoint's global_step (default 20)")
    parser.add_argument("--init-lr", type=arguments.positive_float, default=1e-3,
                        help="BERT's peak learning rate, init_lr (default 0.001)")
    parser.add_argument("--train-steps", type=arguments.positive_int, default=100,
                        help="BERT's num_train_steps, the decay horizon (default 100)")
    parser.add_argument("--warmup-steps", type=arguments.non_negative_int, default=10,
                        help="BERT's num_warmup_steps (default 10)")
    parser.add_argument("--layers", type=arguments.positive_int, default=1, help="encoder layers (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and data (default 0)")
    parser.set_defaults(func=run)
