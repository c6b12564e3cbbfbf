"""Keras's ``clipnorm``, ``global_clipnorm`` and ``clipvalue``, computed as TF1 BERT did.

TF1 BERT clipped ``tf.gradients(loss, tvars)`` with ``tf.clip_by_global_norm``
before its optimizer saw them. An embedding looked up with ``tf.gather`` has a
``tf.IndexedSlices`` gradient: one row of ``values`` per lookup, so a row of
the table looked up k times appears k times. TF's clip ops measure such a
gradient over its ``values`` as they come and scale those values; only the
optimizer's dense math then sums the repeated rows. For the 4x3 table looked
up with ids ``[1, 1, 1, 2]`` and upstream gradients of ones, TF1's global norm
is ``sqrt(4*3) = 3.46``, whereas the summed (dense) gradient has norm
``sqrt(9*3 + 3) = 5.48``: the two clip the step by different factors.

Both front ends call ``clipped_gradients`` on the gradients summed over
replicas (a ``tf.IndexedSlices`` summed over replicas is the concatenation of
the replicas' slices, as one device would see the global batch), then make
them dense with ``update_rules.dense_gradient``.
"""

from __future__ import annotations

import tensorflow as tf


def clipped_gradients(grads, *, clipnorm=None, global_clipnorm=None, clipvalue=None) -> list:
    """``grads`` clipped by TF's own ops, ``tf.IndexedSlices`` by their values.

    Keras's precedence: ``clipnorm`` (per gradient, ``tf.clip_by_norm``), else
    ``global_clipnorm`` (``tf.clip_by_global_norm``: the norm over every
    gradient's values, ``sqrt(2 * sum(l2_loss(values)))``, bit for bit as in
    TF1), else ``clipvalue`` (``tf.clip_by_value`` on each value). A ``None``
    gradient stays ``None``; a ``tf.IndexedSlices`` stays one, with the same
    indices.

    Args:
        grads: list of gradients: tensors, ``tf.IndexedSlices`` or ``None``.
        clipnorm: the largest norm of each gradient, or ``None``.
        global_clipnorm: the largest norm of all gradients together, or ``None``.
        clipvalue: the largest magnitude of each element, or ``None``.
    """
    grads = list(grads)
    if clipnorm:
        return [None if g is None else tf.clip_by_norm(g, clipnorm) for g in grads]
    if global_clipnorm:
        return tf.clip_by_global_norm(grads, global_clipnorm)[0]
    if clipvalue:
        return [None if g is None else tf.clip_by_value(g, -clipvalue, clipvalue) for g in grads]
    return grads
