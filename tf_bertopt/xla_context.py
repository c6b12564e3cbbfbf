"""Whether the graph being built will be compiled by XLA as a whole, and for what device."""

from __future__ import annotations

import functools

import tensorflow as tf


def inside_xla() -> bool:
    """True while tracing a ``tf.function(jit_compile=True)`` (or a TPU computation)."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - TensorFlow moved it
        return False
    return not tf.executing_eagerly() and control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


@functools.lru_cache(maxsize=None)
def _has_accelerator() -> bool:
    return any(tf.config.list_logical_devices(kind) for kind in ("GPU", "TPU"))


def inside_xla_on_cpu() -> bool:
    """True while tracing code XLA compiles for a CPU: a ``jit_compile`` step on a machine without GPU or TPU."""
    return inside_xla() and not _has_accelerator()
