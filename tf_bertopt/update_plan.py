"""Which variables one optimizer step updates together, and how.

The planning half of the fast path (``tf_bertopt.fused_updates`` runs the
plan). Every route gives the same bits; they differ in what they cost:

* ``"compiled"``: a variable of ``SMALL_ELEMENTS`` or more, updated in place
  by its own XLA-compiled call. A step over such a variable is memory-bound:
  run op by op it reads and writes a dozen variable-sized temporaries, compiled
  it streams through the variable and its slots once. Compiling costs about a
  second per distinct shape, once.
  Small variables of a shape that comes ``GROUP_MIN_VARIABLES`` times or
  more (with the same dtype and treatment) are compiled too, ``GROUP_SIZE``
  per call: one compilation per shape serves a whole deep model.
* ``"packed"``: small variables (``PACK_MAX_ELEMENTS`` or fewer) of one
  dtype, device and treatment, concatenated, updated by TensorFlow's kernels one after the other, split
  and assigned back. For a small variable the cost is per operation, not per
  byte: one pass of the math over all of them replaces one pass per variable.
  LAMB's trust ratio is then taken per variable, over its segment of the
  packed tensor.
* ``"op_by_op"``: a small variable too large to pack, or one that shares its
  treatment with no other, updated by TensorFlow's kernels as the reference
  path does.

Few small variables are compiled: XLA's compilation (about a second per
distinct program) costs more than a small model's step saves in hundreds of
steps, and a compiled call costs more than the few kernels it replaces.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Hashable, Sequence

import tensorflow as tf

# Variables with this many elements or more are compiled (see the module docstring).
SMALL_ELEMENTS = 2**16
# Small variables of one shape and treatment that come this many times or more
# (a deep model's repeated layers) are compiled, GROUP_SIZE per call: tracing a
# call per GROUP_SIZE variables is much cheaper than tracing a dozen operations
# per variable, and one compilation serves every group of that shape.
GROUP_MIN_VARIABLES = 32
GROUP_SIZE = 8
# Small variables are packed only where there are this many alike: packing one costs more than it saves.
PACK_MIN_VARIABLES = 2
# Nor above this many elements: packing copies each variable, slot and gradient
# about seven times, which costs more than the dozen operations it saves.
PACK_MAX_ELEMENTS = 2**12

ROUTES = ("compiled", "packed", "op_by_op")

# The ``fused`` argument, as both optimizers' docstrings give it (continuing their ``Args:``).
FUSED_ARGUMENT_DOC = """    fused: True (default) for the fast path: each large variable and
            its slots updated in place by one XLA-compiled pass, small
            variables several at a time with TensorFlow's own kernels (see
            ``tf_bertopt.update_plan``). False for the reference path:
            TensorFlow's operations one by one, each variable on its own, as
            the TF1 graph ran them. Both give the same bits (float32 results
            identical to TF1); the reference path is several times slower on
            large variables and allocates several variable-sized temporaries
            per step. Both hold outside a ``jit_compile=True`` step; inside
            one XLA also compiles what surrounds the update (clipping,
            schedule), so neither path is bit-identical to TF1 there and the
            two differ by a few 1e-7 of a tensor's largest value. Where a
            context cannot take the fast path (the shards of a
            ``ShardedVariable`` under LAMB), the optimizer uses the reference
            path there and logs it once.
    """


@dataclasses.dataclass(frozen=True)
class Batch:
    """Variables updated together: their positions in the step's lists, and the route."""

    route: str
    indices: tuple[int, ...]


def plan(
    variables: Sequence, options: Sequence[Hashable], pack: bool = True
) -> list[Batch]:
    """The batches that update ``variables`` (each with its hashable ``options``), in order.

    Large variables come first, each alone; then the small variables
    compiled ``GROUP_SIZE`` at a time; then the packed groups and the
    small variables of a treatment no other shares, in the order of their
    first variable; then the small variables too large to pack.
    ``pack=False`` packs nothing: where XLA
    compiles the whole step, it fuses the small updates itself and packing
    would only add copies.
    """
    large, same_shape = [], collections.defaultdict(list)
    for index, (variable, option) in enumerate(zip(variables, options)):
        if variable.shape.num_elements() >= SMALL_ELEMENTS:
            large.append(Batch("compiled", (index,)))
        else:
            same_shape[(tuple(variable.shape), tf.as_dtype(variable.dtype), variable.device, option)].append(index)
    grouped, rest = [], []
    for indices in same_shape.values():
        if len(indices) >= GROUP_MIN_VARIABLES:
            grouped += [Batch("compiled", tuple(indices[i : i + GROUP_SIZE])) for i in range(0, len(indices), GROUP_SIZE)]
        else:
            rest += indices
    alike, alone = collections.defaultdict(list), []
    for index in sorted(rest):
        variable, option = variables[index], options[index]
        if not pack or variable.shape.num_elements() > PACK_MAX_ELEMENTS:
            alone.append(Batch("op_by_op", (index,)))
        else:
            alike[(tf.as_dtype(variable.dtype), variable.device, option)].append(index)
    small = []
    for indices in alike.values():
        if len(indices) >= PACK_MIN_VARIABLES:
            small.append(Batch("packed", tuple(indices)))
        else:
            small += [Batch("op_by_op", (index,)) for index in indices]
    return large + grouped + small + alone
