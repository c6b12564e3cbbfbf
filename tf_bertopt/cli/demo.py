"""``tf-bertopt demo``: pretrain a tiny BERT-like masked LM with both optimizers.

The model (2 transformer layers, hidden size 64) learns to fill in masked
words of a small generated corpus (``tf_bertopt.demo_corpus``) or of a text
file you give it. Each optimizer comes from ``tf_bertopt.create_optimizer``,
the TF1 BERT recipe, and trains from the same initial weights on the same
batches with ``model.fit``. The loss is BERT's masked-LM loss: cross-entropy
averaged over the masked positions only.

The functions here are also what the notebooks use: ``tiny_bert``,
``masked_lm_batches`` and ``pretrain``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from tf_bertopt.cli import arguments
from tf_bertopt.cli.arguments import UsageError
from tf_bertopt.cli import demo_corpus

DEFAULT_LEARNING_RATES = {"adamw": 1.5e-3, "lamb": 1.5e-2}
OPTIMIZER_LABELS = {"adamw": "AdamWeightDecay", "lamb": "LAMB"}


def _keras_classes() -> tuple[type, type]:
    """``PositionEmbedding`` and ``StepRecorder``, defined on first use.

    They subclass Keras classes, and the command line imports this module
    to build its ``--help`` without importing Keras (nor TensorFlow).
    """
    if "PositionEmbedding" in globals():
        return globals()["PositionEmbedding"], globals()["StepRecorder"]
    import keras

    @keras.saving.register_keras_serializable(package="tf_bertopt.demo")
    class PositionEmbedding(keras.layers.Layer):
        """Adds a learned vector per position: ``x[:, i] + embeddings[i]``."""

        def build(self, input_shape):
            self.embeddings = self.add_weight(
                shape=tuple(input_shape[1:]), initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="embeddings"
            )

        def call(self, inputs):
            return inputs + keras.ops.cast(self.embeddings, inputs.dtype)

    class StepRecorder(keras.callbacks.Callback):
        """Records the learning rate applied at each step and each batch's loss.

        Keras 3 logs the running mean of the loss over the epoch so far; with
        equal batches, batch ``k``'s own loss is ``(k+1)*mean_k - k*mean_(k-1)``.
        """

        def __init__(self, optimizer):
            super().__init__()
            self._optimizer = optimizer
            self.learning_rate: list[float] = []
            self.loss: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._previous_mean = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self.learning_rate.append(float(self._optimizer.learning_rate))

        def on_train_batch_end(self, batch, logs=None):
            mean = float(logs["loss"])
            self.loss.append((batch + 1) * mean - batch * self._previous_mean)
            self._previous_mean = mean

    # In the module's globals, where Keras looks a class up when it loads a saved model.
    globals().update(PositionEmbedding=PositionEmbedding, StepRecorder=StepRecorder)
    return PositionEmbedding, StepRecorder


def __getattr__(name: str):
    if name in ("PositionEmbedding", "StepRecorder"):
        _keras_classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tiny_bert(vocab_size: int, seq_len: int, hidden: int = 64, layers: int = 2, heads: int = 4):
    """A BERT-shaped Keras 3 encoder with a masked-LM head (logits per position).

    Layer names follow the TF1 BERT layout closely enough for BERT's
    exclusions to apply: LayerNormalization layers are ``*_layer_norm`` and
    every Dense has a ``bias``.
    """
    import keras

    position_embedding, _ = _keras_classes()
    tokens = keras.Input((seq_len,), dtype="int32", name="input_ids")
    x = keras.layers.Embedding(vocab_size, hidden, name="word_embeddings")(tokens)
    # [PAD] (id 0) is hidden from attention, as BERT's input_mask does.
    attention_mask = keras.ops.expand_dims(keras.ops.not_equal(tokens, 0), 1)
    x = position_embedding(name="position_embeddings")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-12, name="embeddings_layer_norm")(x)
    for i in range(layers):
        attention = keras.layers.MultiHeadAttention(heads, hidden // heads, name=f"layer_{i}_attention")(
            x, x, attention_mask=attention_mask
        )
        x = keras.layers.LayerNormalization(epsilon=1e-12, name=f"layer_{i}_attention_layer_norm")(x + attention)
        feed_forward = keras.layers.Dense(hidden * 4, activation="gelu", name=f"layer_{i}_intermediate")(x)
        feed_forward = keras.layers.Dense(hidden, name=f"layer_{i}_output")(feed_forward)
        x = keras.layers.LayerNormalization(epsilon=1e-12, name=f"layer_{i}_output_layer_norm")(x + feed_forward)
    x = keras.layers.Dense(hidden, activation="gelu", name="mlm_transform")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-12, name="mlm_layer_norm")(x)
    logits = keras.layers.Dense(vocab_size, name="mlm_logits")(x)
    return keras.Model(tokens, logits, name="tiny_bert")


def masked_lm_loss():
    """Cross-entropy averaged over the masked positions (labels -1 elsewhere)."""
    import keras

    # With ignore_class, Keras's mean divides by the number of labelled
    # positions, not by batch * seq_len.
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)


@dataclasses.dataclass
class Corpus:
    """BERT's ``[CLS] A [SEP] B [SEP] [PAD]...`` rows of token ids, and their vocabulary."""

    rows: np.ndarray
    vocabulary: demo_corpus.Vocabulary

    @classmethod
    def from_text(cls, text: str, seq_len: int) -> "Corpus":
        vocabulary = demo_corpus.Vocabulary.from_text(text)
        return cls(demo_corpus.sentence_pairs(text, seq_len, vocabulary), vocabulary)

    @classmethod
    def generated(cls, seq_len: int, sentences: int = 4000, seed: int = 0) -> "Corpus":
        return cls.from_text(demo_corpus.generate_text(sentences, seed), seq_len)


def masked_lm_batches(corpus: Corpus, steps: int, batch_size: int, seed: int = 0):
    """``steps`` batches of ``(inputs, labels)``, rows drawn at random, masked afresh."""
    rng = np.random.default_rng(seed)
    rows = corpus.rows[rng.integers(0, len(corpus.rows), steps * batch_size)]
    inputs, labels = demo_corpus.mask_tokens(rng, rows, corpus.vocabulary)
    return inputs.reshape(steps, batch_size, -1), labels.reshape(steps, batch_size, -1)


@dataclasses.dataclass
class TrainingRun:
    """What ``pretrain`` returns: per-step curves and the trained model."""

    learning_rate: list[float]
    loss: list[float]
    model: "keras.Model"


def pretrain(
    optimizer,
    batches,
    vocab_size: int,
    *,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    log_every: int | None = None,
    verbose: int | str = "auto",
    jit_compile: bool | str = False,
) -> TrainingRun:
    """Trains a fresh ``tiny_bert`` on ``batches`` with ``model.fit``.

    Args:
        optimizer: any Keras 3 optimizer (e.g. from ``create_optimizer``).
        batches: ``(inputs, labels)`` arrays of shape ``(steps, batch, seq_len)``.
        vocab_size: size of the vocabulary the ids come from.
        hidden, layers: model size.
        seed: initial weights; equal seeds give equal weights.
        log_every: steps per Keras "epoch" (one progress-bar line each);
            defaults to a tenth of the run.
        verbose: passed to ``fit``.
        jit_compile: passed to ``compile``; off by default because on a CPU
            XLA compiles this tiny model for longer than it saves.

    Returns:
        A ``TrainingRun``: ``learning_rate`` and ``loss`` hold one value per
        step (the rate applied at that step, the masked-token loss of its batch).
    """
    import keras

    inputs, labels = batches
    steps, batch_size, seq_len = inputs.shape
    keras.utils.set_random_seed(seed)
    model = tiny_bert(vocab_size, seq_len, hidden=hidden, layers=layers)
    model.compile(optimizer=optimizer, loss=masked_lm_loss(), jit_compile=jit_compile)
    # Built now, the optimizer creates no variable inside the first traced
    # step, which TensorFlow would otherwise trace twice.
    optimizer.build(model.trainable_variables)
    log_every = log_every or max(1, steps // 10)
    recorder = _keras_classes()[1](optimizer)
    model.fit(
        inputs.reshape(steps * batch_size, seq_len),
        labels.reshape(steps * batch_size, seq_len),
        batch_size=batch_size,
        epochs=-(-steps // log_every),
        steps_per_epoch=log_every,
        shuffle=False,
        callbacks=[recorder],
        verbose=verbose,
    )
    return TrainingRun(recorder.learning_rate[:steps], recorder.loss[:steps], model)


# Sentences of the generated corpus with one word hidden, and that word.
# Grammar and counting come first; facts (which animal is red) take more steps.
PROBES = (
    ("we count three four [MASK] six .", "five"),
    ("the fox [MASK] red .", "is"),
    ("two green [MASK] live in the pond .", "frogs"),
    ("the red [MASK] lives in the forest and eats berries .", "fox"),
)


def masked_accuracy(model, corpus: Corpus, sequences: int = 512, seed: int = 1) -> float:
    """Share of masked tokens the model predicts exactly, on freshly masked sequences."""
    inputs, labels = masked_lm_batches(corpus, 1, sequences, seed=seed)
    predicted = np.argmax(model(inputs[0], training=False), axis=-1)
    target = labels[0] >= 0
    return float(np.mean(predicted[target] == labels[0][target]))


def fill_in(model, vocabulary: demo_corpus.Vocabulary, sentence: str) -> str:
    """The model's most likely word for the ``[MASK]`` in ``sentence``."""
    words = sentence.split()
    seq_len = model.inputs[0].shape[1]
    ids = np.zeros((1, seq_len), np.int32)
    row = [vocabulary.ids["[CLS]"], *vocabulary.encode(words), vocabulary.ids["[SEP]"]][:seq_len]
    ids[0, : len(row)] = row
    logits = np.array(model(ids, training=False)[0, 1 + words.index("[MASK]")])
    logits[: len(demo_corpus.SPECIAL_TOKENS)] = -np.inf
    return vocabulary.words[int(np.argmax(logits))]


def run(args: argparse.Namespace) -> int:
    import sys

    import tf_bertopt
    from tf_bertopt import keras3
    from tf_bertopt.cli import plotting  # the demo's model is a Keras 3 model, whatever tf.keras is

    if args.hidden % 4:
        raise UsageError(f"--hidden must be a multiple of 4 (the number of attention heads); received {args.hidden}.")
    if not args.no_plot:
        plotting.require_matplotlib()  # fail now, not after training
    if args.corpus:
        try:
            with open(args.corpus, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise UsageError(f"--corpus: cannot read {args.corpus!r}: {error.strerror}") from None
        try:
            corpus, source = Corpus.from_text(text, args.seq_len), args.corpus
        except ValueError as error:  # too little text
            raise UsageError(f"--corpus {args.corpus!r}: {error}") from None
    else:
        corpus = Corpus.generated(args.seq_len, seed=args.seed)
        source = "the generated demo corpus (tf_bertopt.demo_corpus)"
    batches = masked_lm_batches(corpus, args.steps, args.batch_size, seed=args.seed)
    warmup = args.warmup_steps if args.warmup_steps is not None else args.steps // 10
    vocab_size = len(corpus.vocabulary)
    print(
        f"Pretraining a {args.layers}-layer BERT-like masked LM (hidden {args.hidden}) on {source}:\n"
        f"  {len(corpus.rows)} sentence pairs of {args.seq_len} tokens, vocabulary {vocab_size}; "
        f"{args.steps} steps of {args.batch_size} sequences, {warmup} warmup steps.\n"
        f"  Loss: cross-entropy over the masked tokens; guessing uniformly scores ln({vocab_size}) "
        f"= {np.log(vocab_size):.2f}."
    )
    report = tf_bertopt.decay_report(
        keras3.create_optimizer(1.0, args.steps, warmup, "lamb"),
        tiny_bert(vocab_size, args.seq_len, hidden=args.hidden, layers=args.layers),
    )
    print(f"  create_optimizer's exclusions {list(report.rules.exclude_from_weight_decay)}: {report.summary()}.\n")
    verbose = 1 if sys.stdout.isatty() else 2  # one line per "epoch" in logs and pipes
    runs, results = {}, {}
    for optimizer_type in args.optimizers:
        learning_rate = getattr(args, f"{optimizer_type}_lr")
        optimizer = keras3.create_optimizer(learning_rate, args.steps, warmup, optimizer_type)
        label = f"{OPTIMIZER_LABELS[optimizer_type]}, peak lr {learning_rate:g}"
        print(f"{OPTIMIZER_LABELS[optimizer_type]}: "
              f"tf_bertopt.create_optimizer({learning_rate:g}, {args.steps}, {warmup}, {optimizer_type!r})")
        began = time.perf_counter()
        result = pretrain(
            optimizer, batches, vocab_size, hidden=args.hidden, layers=args.layers, seed=args.seed, verbose=verbose
        )
        runs[label] = {"learning_rate": result.learning_rate, "loss": result.loss}
        window = max(1, args.steps // 10)
        first, last = np.mean(result.loss[:window]), np.mean(result.loss[-window:])
        results[optimizer_type] = result
        seconds = time.perf_counter() - began
        print(
            f"{OPTIMIZER_LABELS[optimizer_type]}: masked-token loss {first:.3f} (mean of the first {window} steps) "
            f"-> {last:.3f} (last {window}); masked-token accuracy "
            f"{masked_accuracy(result.model, corpus, seed=args.seed + 1):.0%}; {seconds:.1f}s\n"
        )
    if not args.corpus:
        print("Filling in the blanks (expected word in brackets):")
        for sentence, answer in PROBES:
            guesses = ", ".join(
                f"{OPTIMIZER_LABELS[name]}: {fill_in(result.model, corpus.vocabulary, sentence)}"
                for name, result in results.items()
            )
            print(f"  {sentence:55} [{answer}]  {guesses}")
        print("  (grammar and counting come first; facts, like the last one, take more steps: try --steps 1000)")
    if not args.no_plot:
        figure = plotting.training_figure(
            runs, f"tiny BERT masked LM, batch {args.batch_size}, {args.steps} steps: tf_bertopt.create_optimizer"
        )
        plotting.save(figure, args.output)
        print(f"\nWrote {args.output}")
    return 0


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="pretrain a tiny BERT-like masked LM with LAMB and AdamWeightDecay; plot loss and learning rate",
        description=(
            "Pretrains a tiny BERT-like masked language model (2 layers, hidden 64 by default) twice, "
            "with tf_bertopt.create_optimizer(..., 'adamw') and (..., 'lamb'), from the same initial weights "
            "on the same batches, prints Keras progress bars and plots learning rate and masked-token loss "
            "against step. About a minute on 2 CPU cores with the defaults."
        ),
    )
    parser.add_argument("--steps", type=arguments.positive_int, default=300,
                        help="optimizer updates per run (default 300)")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=32,
                        help="sequences per batch (default 32)")
    parser.add_argument("--warmup-steps", type=arguments.non_negative_int, default=None,
                        help="linear-warmup steps (default: a tenth of --steps)")
    for optimizer_type in ("adamw", "lamb"):
        parser.add_argument(f"--{optimizer_type}-lr", type=arguments.positive_float,
                            default=DEFAULT_LEARNING_RATES[optimizer_type],
                            help=f"peak learning rate of {OPTIMIZER_LABELS[optimizer_type]} "
                                 f"(default {DEFAULT_LEARNING_RATES[optimizer_type]:g})")
    parser.add_argument("--optimizers", nargs="+", choices=("adamw", "lamb"), default=["adamw", "lamb"],
                        help="which optimizers to train with (default: both)")
    parser.add_argument("--seq-len", type=arguments.int_at_least(8), default=32,
                        help="tokens per sequence (default 32)")
    parser.add_argument("--hidden", type=arguments.int_at_least(4), default=64,
                        help="hidden size, a multiple of 4, the number of heads (default 64)")
    parser.add_argument("--layers", type=arguments.positive_int, default=2, help="transformer layers (default 2)")
    parser.add_argument("--corpus", metavar="TEXT_FILE",
                        help="train on this UTF-8 text, one sentence per line, instead of the generated corpus")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, masking and weights (default 0)")
    arguments.add_plot_arguments(parser, "tf_bertopt_demo.png")
    parser.set_defaults(func=run)
