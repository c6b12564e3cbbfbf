"""Reading TF1 name-based checkpoints.

A TF1 ``tf.compat.v1.train.Saver`` checkpoint is a flat map from graph
variable names to tensors. An optimizer's slots are saved under the name of
their variable plus a suffix:

* ``<var>/adam_m``, ``<var>/adam_v``: BERT's ``AdamWeightDecayOptimizer``,
  and ALBERT's and ELECTRA's optimizers, which kept its slot names;
* ``<var>/lamb_m``, ``<var>/lamb_v``: the ``LAMBOptimizer`` built on BERT's
  code;
* ``<var>/Adam``, ``<var>/Adam_1``, ``<var>/Momentum``, ...: TF1's own
  ``tf.train`` optimizers (recognised only to say what a checkpoint holds).

The step count is the ``global_step`` entry.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

# Slot suffix pairs (first moment, second moment) written by BERT-family optimizers.
BERT_SLOT_FAMILIES: dict[tuple[str, str], str] = {
    ("adam_m", "adam_v"): "BERT's AdamWeightDecayOptimizer, ALBERT's LAMB or ELECTRA's optimizer",
    ("lamb_m", "lamb_v"): "the LAMBOptimizer built on BERT's AdamWeightDecayOptimizer",
}

# Slots of other TF1 optimizers and averages, named only to describe a checkpoint.
OTHER_SLOTS: dict[str, str] = {
    "Adam": "tf.train.AdamOptimizer",
    "Adam_1": "tf.train.AdamOptimizer",
    "Momentum": "tf.train.MomentumOptimizer",
    "Adagrad": "tf.train.AdagradOptimizer",
    "RMSProp": "tf.train.RMSPropOptimizer",
    "RMSProp_1": "tf.train.RMSPropOptimizer",
    "Adadelta": "tf.train.AdadeltaOptimizer",
    "Adadelta_1": "tf.train.AdadeltaOptimizer",
    "Ftrl": "tf.train.FtrlOptimizer",
    "Ftrl_1": "tf.train.FtrlOptimizer",
    "LAMB": "a LAMB optimizer with TF1-style slot names",
    "LAMB_1": "a LAMB optimizer with TF1-style slot names",
    "ExponentialMovingAverage": "tf.train.ExponentialMovingAverage (weight averages, not optimizer state)",
}
EMA_SUFFIX = "ExponentialMovingAverage"
KNOWN_SLOT_SUFFIXES = frozenset(s for family in BERT_SLOT_FAMILIES for s in family) | frozenset(OTHER_SLOTS)
GLOBAL_STEP = "global_step"


@dataclasses.dataclass(frozen=True)
class Entry:
    """Shape and dtype name of one checkpoint tensor."""

    shape: tuple[int, ...]
    dtype: str


class TF1Checkpoint:
    """The entries of a TF1 checkpoint, sorted into variables, slots and the rest.

    Args:
        path: a checkpoint prefix (``.../model.ckpt-1000``) or a directory
            holding a ``checkpoint`` file (its latest checkpoint is read).
        owner: the function named in error messages (None: none).

    Raises:
        ValueError: the path holds no readable TF1 checkpoint (missing, not a
            checkpoint, or a TF2 object-based checkpoint).
    """

    def __init__(self, path: str | os.PathLike, owner: str | None = "TF1Checkpoint"):
        import tensorflow as tf

        owner = f"{owner}: " if owner else ""

        self.requested_path = os.fspath(path)
        try:
            self._reader = tf.train.load_checkpoint(self.requested_path)
        except (tf.errors.OpError, ValueError) as error:
            reason = str(getattr(error, "message", error)).strip().splitlines()[0]
            raise ValueError(
                f"{owner}cannot read a TF1 checkpoint at checkpoint_path={self.requested_path!r}: {reason}"
            ) from None
        shapes = self._reader.get_variable_to_shape_map()
        dtypes = self._reader.get_variable_to_dtype_map()
        if any(name.endswith(".ATTRIBUTES/VARIABLE_VALUE") for name in shapes):
            raise ValueError(
                f"{owner}checkpoint_path={self.requested_path!r} is a TF2 object-based checkpoint "
                "(written by tf.train.Checkpoint or Keras), not a TF1 name-based one; restore it with "
                "tf.train.Checkpoint(model=..., optimizer=...).restore(path) instead."
            )
        self.path = _resolved_prefix(tf, self.requested_path)
        self.entries: dict[str, Entry] = {
            name: Entry(tuple(int(d) for d in shapes[name]), dtypes[name].name) for name in sorted(shapes)
        }
        # variable name -> {slot suffix: entry name}
        self.slots: dict[str, dict[str, str]] = collections.defaultdict(dict)
        for name in self.entries:
            parent, _, suffix = name.rpartition("/")
            if parent and (suffix in KNOWN_SLOT_SUFFIXES or parent in self.entries):
                self.slots[parent][suffix] = name
        self.slots = dict(self.slots)
        slot_entries = {entry for owned in self.slots.values() for entry in owned.values()}
        self.variables: list[str] = [n for n in self.entries if n not in slot_entries and n != GLOBAL_STEP]

    def tensor(self, name: str) -> np.ndarray:
        return np.asarray(self._reader.get_tensor(name))

    def global_step(self, name: str = GLOBAL_STEP) -> int | None:
        """The saved step count, or None when the checkpoint has no ``name`` entry."""
        return int(self.tensor(name)) if name in self.entries else None

    def slot_counts(self) -> collections.Counter:
        """How many variables carry each slot suffix."""
        return collections.Counter(suffix for owned in self.slots.values() for suffix in owned)

    def bert_families(self) -> list[tuple[str, str]]:
        """The BERT-family slot pairs present, e.g. ``[("adam_m", "adam_v")]``."""
        counts = self.slot_counts()
        return [family for family in BERT_SLOT_FAMILIES if any(counts[s] for s in family)]

    def describe_slots(self) -> str:
        """Which slot suffixes the checkpoint holds, on how many variables, written by whom."""
        counts = self.slot_counts()
        if not counts:
            return "no optimizer slots (only model variables)"
        by_writer: dict[str, list[str]] = {}
        for suffix in sorted(counts):
            writer = next((w for f, w in BERT_SLOT_FAMILIES.items() if suffix in f), OTHER_SLOTS.get(suffix, ""))
            by_writer.setdefault(writer, []).append(suffix)
        parts = []
        for writer, suffixes in by_writer.items():
            numbers = sorted({counts[s] for s in suffixes})
            if len(numbers) == 1:
                text = f"{'/'.join(suffixes)} on {_variables(numbers[0])}"
            else:
                text = ", ".join(f"{s} on {_variables(counts[s])}" for s in suffixes)
            parts.append(text + (f", written by {writer}" if writer else ""))
        return "; ".join(parts)


def _variables(count: int) -> str:
    return f"{count} variable{'s' * (count != 1)}"


def _resolved_prefix(tf, path: str) -> str:
    if os.path.isdir(path):
        return tf.train.latest_checkpoint(path) or path
    return path
