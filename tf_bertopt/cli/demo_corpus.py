"""The text the demo pretrains on, generated from a tiny grammar (no downloads).

Sentences describe a small made-up world: a dozen animals, each with a fixed
colour, home, food and call, plus counting, weekdays and months in order.
Most masked words are predictable from their context (the fox is always
red, Tuesday follows Monday, ``foxes`` takes ``live`` and ``fox`` takes
``lives``), a few are not (names, moods), so a masked LM's loss falls
steadily from ``ln(vocabulary size)`` without ever reaching zero.

The text is the same for a given seed on every platform, and is public
domain: the word lists below are all it is made of.
"""

from __future__ import annotations

import collections
import re
from typing import Iterable

import numpy as np

# animal: (plural, colour, home, food, call)
ANIMALS = {
    "fox": ("foxes", "red", "forest", "berries", "yips"),
    "owl": ("owls", "brown", "barn", "mice", "hoots"),
    "cat": ("cats", "black", "house", "fish", "purrs"),
    "dog": ("dogs", "golden", "garden", "bones", "barks"),
    "bear": ("bears", "grey", "cave", "honey", "growls"),
    "wolf": ("wolves", "white", "mountain", "meat", "howls"),
    "hare": ("hares", "sandy", "meadow", "clover", "thumps"),
    "crow": ("crows", "dark", "tower", "seeds", "caws"),
    "frog": ("frogs", "green", "pond", "flies", "croaks"),
    "deer": ("deer", "tawny", "valley", "leaves", "bells"),
    "mole": ("moles", "velvet", "tunnel", "worms", "digs"),
    "swan": ("swans", "snowy", "lake", "weeds", "hisses"),
}
NUMBERS = (
    "one two three four five six seven eight nine ten eleven twelve "
    "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"
).split()
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
MONTHS = "january february march april may june july august september october november december".split()
NAMES = "ada ben cleo dara eli fay gus hana ivo jun kai lena milo nora otto pia".split()
MOODS = "happy sleepy hungry curious afraid proud".split()
TIMES = "at dawn|at noon|at dusk|at night|in spring|in winter".split("|")


def _sentence(rng: np.random.Generator) -> str:
    animal = str(rng.choice(list(ANIMALS)))
    plural, colour, home, food, call = ANIMALS[animal]
    kind = rng.integers(9)
    if kind == 0:
        return f"the {animal} is {colour} ."
    if kind == 1:
        return f"the {colour} {animal} lives in the {home} and eats {food} ."
    if kind == 2:
        count = int(rng.integers(2, 13))
        return f"{NUMBERS[count - 1]} {colour} {plural} live in the {home} ."
    if kind == 3:
        return f"{rng.choice(TIMES)} the {animal} {call} because it is {rng.choice(MOODS)} ."
    if kind == 4:
        start = int(rng.integers(0, len(NUMBERS) - 4))
        return "we count " + " ".join(NUMBERS[start : start + 4]) + " ."
    if kind == 5:
        day = int(rng.integers(len(WEEKDAYS)))
        return f"after {WEEKDAYS[day]} comes {WEEKDAYS[(day + 1) % 7]} ."
    if kind == 6:
        month = int(rng.integers(len(MONTHS)))
        return f"{MONTHS[month]} comes before {MONTHS[(month + 1) % 12]} ."
    if kind == 7:
        other = str(rng.choice([a for a in ANIMALS if a != animal]))
        return f"{rng.choice(NAMES)} saw a {colour} {animal} and a {ANIMALS[other][1]} {other} ."
    return f"every {animal} eats {food} and all {plural} like the {home} ."


def generate_text(sentences: int = 4000, seed: int = 0) -> str:
    """``sentences`` lines of the demo corpus (about 45 bytes per line)."""
    rng = np.random.default_rng(seed)
    return "\n".join(_sentence(rng) for _ in range(sentences)) + "\n"


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class Vocabulary:
    """Whitespace word pieces to ids; ids 0-4 are the special tokens."""

    def __init__(self, words: Iterable[str]):
        self.words = list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]
        self.ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def from_text(cls, text: str, max_size: int = 2000) -> "Vocabulary":
        """The ``max_size - 5`` most frequent words of ``text`` (ties by first appearance)."""
        counts = collections.Counter(tokenize(text))
        return cls(word for word, _ in counts.most_common(max_size - len(SPECIAL_TOKENS)))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def mask_id(self) -> int:
        return self.ids["[MASK]"]

    def encode(self, words: Iterable[str]) -> np.ndarray:
        unknown = self.ids["[UNK]"]
        return np.array([self.ids.get(w, unknown) for w in words], dtype=np.int32)


def tokenize(text: str) -> list[str]:
    """Lower-cased words, with punctuation split off."""
    return re.findall(r"[a-z0-9']+|[^\sa-z0-9']", text.lower())


def sentence_pairs(text: str, seq_len: int, vocabulary: Vocabulary) -> np.ndarray:
    """BERT's input rows: ``[CLS] A [SEP] B [SEP]`` for consecutive lines A, B, padded with ``[PAD]``.

    Pairs longer than ``seq_len`` are cut at the end. Empty lines are skipped.
    """
    lines = [vocabulary.encode(tokenize(line)) for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError(f"the corpus must hold at least 2 non-empty lines; it holds {len(lines)}.")
    special = vocabulary.ids
    rows = np.full((len(lines) // 2, seq_len), special["[PAD]"], np.int32)
    for row, (first, second) in zip(rows, zip(lines[0::2], lines[1::2])):
        ids = np.concatenate([[special["[CLS]"]], first, [special["[SEP]"]], second, [special["[SEP]"]]])
        row[: min(len(ids), seq_len)] = ids[:seq_len]
    return rows


def mask_tokens(rng: np.random.Generator, rows: np.ndarray, vocabulary: Vocabulary, rate: float = 0.15):
    """BERT's masking: ``rate`` of the word positions become targets, of which
    80% are replaced by ``[MASK]``, 10% by a random word and 10% left as is.

    Returns ``(inputs, labels)``; ``labels`` is -1 where there is nothing to predict.
    """
    words = rows >= len(SPECIAL_TOKENS)
    chosen = words & (rng.random(rows.shape) < rate)
    # At least one target per row, so no row contributes an empty average.
    none = ~chosen.any(axis=1)
    chosen[none, 1] = True
    draw = rng.random(rows.shape)
    inputs = rows.copy()
    inputs[chosen & (draw < 0.8)] = vocabulary.mask_id
    randomized = chosen & (draw >= 0.8) & (draw < 0.9)
    inputs[randomized] = rng.integers(len(SPECIAL_TOKENS), len(vocabulary), randomized.sum())
    labels = np.where(chosen, rows, -1).astype(np.int32)
    return inputs.astype(np.int32), labels
