"""A TF1-graph version of BERT's optimizers, schedule and train op, run under
``tf.compat.v1``: the numbers legacy code produced, to compare bit for bit.

Written for these tests from the update rules in SPEC.md, in the style of the
TF1 code the seeds quote (an ``apply_gradients`` that builds assign ops,
slots made with ``get_variable``, the learning rate as a graph tensor of
``global_step``). It imports nothing from tf_bertopt.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


class TF1BertOptimizer(v1.train.Optimizer):
    """AdamWeightDecay (``lamb=False``) or the seeds' LAMBOptimizer (``lamb=True``)."""

    def __init__(self, learning_rate, lamb, weight_decay_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 exclude_from_weight_decay=None, include_in_weight_decay=None,
                 exclude_from_layer_adaptation=None, name="TF1BertOptimizer"):
        super().__init__(False, name)
        self.learning_rate = learning_rate
        self.lamb = lamb
        self.weight_decay_rate = weight_decay_rate
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.exclude_from_weight_decay = exclude_from_weight_decay or []
        self.include_in_weight_decay = include_in_weight_decay or []
        self.exclude_from_layer_adaptation = exclude_from_layer_adaptation or []
        self.slot_suffix = ("lamb_m", "lamb_v") if lamb else ("adam_m", "adam_v")

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        if not isinstance(self.learning_rate, dict):
            return tf.group(*self._assignments(grads_and_vars, self.learning_rate), name=name)
        # ELECTRA's layer rates: a rate per name substring ("key"); the
        # variables holding each key are updated with that key's rate, a
        # variable holding none is an error.
        by_key = {}
        for grad, var in grads_and_vars:
            keys = [key for key in self.learning_rate if key in var.name]
            if not keys:
                raise ValueError("No learning rate specified for variable", var)
            for key in keys:
                by_key.setdefault(key, []).append((grad, var))
        ops = []
        for key, pairs in by_key.items():
            ops += self._assignments(pairs, self.learning_rate[key])
        return tf.group(*ops, name=name)

    def _assignments(self, grads_and_vars, learning_rate):
        ops = []
        for grad, param in grads_and_vars:
            if grad is None or param is None:
                continue
            param_name = re.sub(r":\d+$", "", param.name)
            m, v = (
                v1.get_variable(param_name + "/" + suffix, shape=param.shape.as_list(), dtype=tf.float32,
                                trainable=False, initializer=v1.zeros_initializer())
                for suffix in self.slot_suffix
            )
            next_m = tf.multiply(self.beta_1, m) + tf.multiply(1.0 - self.beta_1, grad)
            next_v = tf.multiply(self.beta_2, v) + tf.multiply(1.0 - self.beta_2, tf.square(grad))
            update = next_m / (tf.sqrt(next_v) + self.epsilon)
            if self._decays(param_name):
                update += self.weight_decay_rate * param
            if self.lamb and not self._matches(param_name, self.exclude_from_layer_adaptation):
                w_norm = tf.sqrt(tf.reduce_sum(tf.square(param)))
                u_norm = tf.sqrt(tf.reduce_sum(tf.square(update)))
                ratio = v1.where(tf.greater(w_norm, 0.0),
                                 v1.where(tf.greater(u_norm, 0.0), w_norm / u_norm, 1.0), 1.0)
                step_size = learning_rate * ratio
            else:
                step_size = learning_rate
            next_param = param - step_size * update
            ops += [param.assign(next_param), m.assign(next_m), v.assign(next_v)]
        return ops

    @staticmethod
    def _matches(name, patterns):
        return any(re.search(p, name) is not None for p in patterns)

    def _decays(self, name):
        if not self.weight_decay_rate:
            return False
        if self._matches(name, self.include_in_weight_decay):
            return True
        return not self._matches(name, self.exclude_from_weight_decay)


def bert_learning_rate(global_step, init_lr, num_train_steps, num_warmup_steps, end_lr=0.0, power=1.0,
                       cycle=False):
    """BERT's create_optimizer schedule: polynomial_decay, then linear warmup blended in."""
    learning_rate = tf.constant(value=init_lr, shape=[], dtype=tf.float32)
    learning_rate = v1.train.polynomial_decay(learning_rate, global_step, num_train_steps,
                                              end_learning_rate=end_lr, power=power, cycle=cycle)
    if num_warmup_steps:
        steps_int = tf.cast(global_step, tf.int32)
        warmup_int = tf.constant(num_warmup_steps, dtype=tf.int32)
        done = tf.cast(steps_int, tf.float32) / tf.cast(warmup_int, tf.float32)
        warmup_lr = init_lr * done
        is_warmup = tf.cast(steps_int < warmup_int, tf.float32)
        learning_rate = (1.0 - is_warmup) * learning_rate + is_warmup * warmup_lr
    return learning_rate


def schedule_values(steps, **schedule_kwargs):
    """The TF1 schedule evaluated at each of ``steps`` in a session."""
    with tf.Graph().as_default():
        step = v1.placeholder(tf.int64, [])
        lr = bert_learning_rate(step, **schedule_kwargs)
        with v1.Session() as session:
            return np.array([session.run(lr, {step: s}) for s in steps], np.float32)


def run(lamb, weights, gradient_steps, *, schedule=None, learning_rate=None, clip_norm=None, sparse=(),
        learning_rate_fn=None, **optimizer_kwargs):
    """Trains with fed gradients; returns ``[{name: (w, m, v)}]`` after each step (float32).

    ``schedule`` holds ``bert_learning_rate`` keywords, else ``learning_rate``
    is a constant. Gradients named in ``sparse`` are fed as
    ``(values, indices)`` pairs and enter as ``tf.IndexedSlices``.
    ``learning_rate_fn(global_step)``, if given, makes the learning rate: a
    tensor, or a dict of rates by name substring (ELECTRA's layer rates).
    """
    with tf.Graph().as_default():
        global_step = v1.train.get_or_create_global_step()
        params = {name: v1.get_variable(name, initializer=tf.constant(value, tf.float32))
                  for name, value in weights.items()}
        feeds, grads = {}, []
        for name, param in params.items():
            if name in sparse:
                values = v1.placeholder(tf.float32, [None] + param.shape.as_list()[1:])
                indices = v1.placeholder(tf.int64, [None])
                feeds[name] = (values, indices)
                grads.append(tf.IndexedSlices(values, indices, tf.shape(param, out_type=tf.int64)))
            else:
                feeds[name] = v1.placeholder(tf.float32, param.shape)
                grads.append(feeds[name])
        if learning_rate_fn is not None:
            lr = learning_rate_fn(global_step)
        elif schedule:
            lr = bert_learning_rate(global_step, **schedule)
        else:
            lr = tf.constant(learning_rate, tf.float32)
        # None gradients are decided per step, so build one train op per pattern of Nones.
        train_ops = {}

        def train_op(present):
            if present not in train_ops:
                chosen = [g if keep else None for g, keep in zip(grads, present)]
                if clip_norm is not None:
                    chosen, _ = tf.clip_by_global_norm(chosen, clip_norm=clip_norm)
                with v1.variable_scope("", reuse=v1.AUTO_REUSE):
                    optimizer = TF1BertOptimizer(lr, lamb, **optimizer_kwargs)
                    apply = optimizer.apply_gradients(zip(chosen, params.values()), global_step=global_step)
                with tf.control_dependencies([apply]):
                    train_ops[present] = global_step.assign_add(1)
            return train_ops[present]

        for present in {tuple(g is not None for g in step.values()) for step in gradient_steps}:
            train_op(present)
        history = []
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            by_name = {v.op.name: v for v in v1.global_variables()}
            suffix = ("lamb_m", "lamb_v") if lamb else ("adam_m", "adam_v")
            for step in gradient_steps:
                feed = {}
                for name, g in step.items():
                    if g is None:
                        continue
                    if name in sparse:
                        feed[feeds[name][0]], feed[feeds[name][1]] = g
                    else:
                        feed[feeds[name]] = g
                session.run(train_op(tuple(g is not None for g in step.values())), feed)
                state = {}
                for name in weights:
                    m, v = (by_name.get(f"{name}/{s}") for s in suffix)
                    zeros = np.zeros(np.shape(weights[name]), np.float32)
                    state[name] = tuple(session.run(x) if x is not None else zeros for x in (params[name], m, v))
                history.append(state)
        return history
