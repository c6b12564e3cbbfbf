"""``tf-bertopt demo``: pretrain a tiny BERT-like masked LM with both optimizers.

Synthetic sequences (arithmetic progressions modulo the vocabulary) make the
masked tokens predictable from their context, so the loss visibly falls in a
few hundred steps on a CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

MASK_ID = 0


def synthetic_mlm_batch(rng, batch_size: int, seq_len: int, vocab_size: int, mask_rate: float = 0.15):
    """Token ids, masked inputs and a 0/1 weight on the masked positions."""
    start = rng.integers(1, vocab_size, (batch_size, 1))
    stride = rng.integers(1, 4, (batch_size, 1))
    tokens = 1 + (start + stride * np.arange(seq_len)) % (vocab_size - 1)
    masked = rng.random((batch_size, seq_len)) < mask_rate
    masked[:, 0] |= ~masked.any(axis=1)
    inputs = np.where(masked, MASK_ID, tokens)
    return inputs.astype("int32"), tokens.astype("int32"), masked.astype("float32")


def tiny_bert(vocab_size: int, seq_len: int, hidden: int = 64, layers: int = 2, heads: int = 4):
    import keras

    inputs = keras.Input((seq_len,), dtype="int32")
    x = keras.layers.Embedding(vocab_size, hidden, name="word_embeddings")(inputs)
    x = x + keras.layers.Embedding(seq_len, hidden, name="position_embeddings")(keras.ops.arange(seq_len))
    x = keras.layers.LayerNormalization(name="embeddings_layer_norm")(x)
    for i in range(layers):
        attention = keras.layers.MultiHeadAttention(heads, hidden // heads, name=f"layer_{i}_attention")(x, x)
        x = keras.layers.LayerNormalization(name=f"layer_{i}_attention_layer_norm")(x + attention)
        feed_forward = keras.layers.Dense(hidden * 4, activation="gelu", name=f"layer_{i}_intermediate")(x)
        feed_forward = keras.layers.Dense(hidden, name=f"layer_{i}_output")(feed_forward)
        x = keras.layers.LayerNormalization(name=f"layer_{i}_output_layer_norm")(x + feed_forward)
    logits = keras.layers.Dense(vocab_size, name="mlm_logits")(x)
    return keras.Model(inputs, logits, name="tiny_bert")


def train(optimizer_type: str, steps: int, batch_size: int, seed: int = 0, log_every: int = 25, printer=print):
    """Trains one tiny BERT; returns the list of (step, loss, learning rate)."""
    import keras

    import tf_bertopt

    keras.utils.set_random_seed(seed)
    vocab_size, seq_len = 48, 24
    model = tiny_bert(vocab_size, seq_len)
    init_lr = 2e-3 if optimizer_type == "adamw" else 1e-2
    optimizer = tf_bertopt.create_optimizer(init_lr, steps, max(1, steps // 10), optimizer_type)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    curve = []
    for step in range(steps):
        inputs, targets, weights = synthetic_mlm_batch(rng, batch_size, seq_len, vocab_size)
        lr = float(optimizer.learning_rate)
        loss = float(model.train_on_batch(inputs, targets, sample_weight=weights))
        curve.append((step, loss, lr))
        if step % log_every == 0 or step == steps - 1:
            printer(f"  {optimizer_type:>5}  step {step:4d}  loss {loss:7.4f}  lr {lr:.2e}")
    return curve


def run(args: argparse.Namespace) -> int:
    for optimizer_type in args.optimizers:
        print(f"Pretraining a 2-layer BERT-like masked LM with create_optimizer(optimizer_type={optimizer_type!r})")
        began = time.perf_counter()
        curve = train(optimizer_type, args.steps, args.batch_size, seed=args.seed)
        first = np.mean([loss for _, loss, _ in curve[:10]])
        last = np.mean([loss for _, loss, _ in curve[-10:]])
        print(f"  {optimizer_type}: loss {first:.3f} -> {last:.3f} in {time.perf_counter() - began:.1f}s\n")
    return 0


def add_command(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="pretrain a tiny BERT-like masked LM with both optimizers")
    parser.add_argument("--steps", type=_positive_int, default=200, help="optimizer updates per run (default 200)")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="sequences per batch (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--optimizers", nargs="+", choices=("adamw", "lamb"), default=["adamw", "lamb"], help="which to train"
    )
    parser.set_defaults(func=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
