"""An independent float64 reference, written straight from SPEC.md §2–3.

Deliberately naive: plain loops over variables, Python control flow, numpy
float64. It shares no code with the package.
"""

from __future__ import annotations

import math
import re

import numpy as np


def bert_learning_rate(step, init, decay_steps, warmup_steps=0, end=0.0, power=1.0, cycle=False,
                       decay_start="step_0", warmup_power=1.0, warmup_init=0.0):
    if warmup_steps and step < warmup_steps:
        fraction = (step / warmup_steps) ** warmup_power
        return warmup_init + (init - warmup_init) * fraction
    t, horizon = float(step), float(decay_steps)
    if decay_start == "warmup_end":
        t, horizon = max(step - warmup_steps, 0), float(decay_steps - warmup_steps)
    if cycle:
        horizon = horizon * (1.0 if t == 0 else math.ceil(t / horizon))
    else:
        t = min(t, horizon)
    return (init - end) * (1.0 - t / horizon) ** power + end


def _decayed(name, rate, exclude, include):
    if not rate:
        return False
    if any(re.search(p, name) for p in include or ()):
        return True
    return not any(re.search(p, name) for p in exclude or ())


def _global_clip(grads, clip_norm):
    present = [g for g in grads.values() if g is not None]
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in present))
    scale = clip_norm / max(norm, clip_norm)
    return {k: None if g is None else g * scale for k, g in grads.items()}


def run(kind, weights, gradient_steps, learning_rate, *, weight_decay_rate, beta_1=0.9, beta_2=0.999,
        epsilon=1e-6, exclude_from_weight_decay=None, include_in_weight_decay=None,
        exclude_from_layer_adaptation=None, clip_norm=None, bias_correction=False):
    """Runs ``len(gradient_steps)`` updates; returns the list of states after each one.

    ``learning_rate`` is a function of the step. A state is
    ``{name: (w, m, v)}`` in float64.
    """
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    history = []
    for t, grads in enumerate(gradient_steps):
        grads = {k: None if g is None else np.asarray(g, np.float64) for k, g in grads.items()}
        if clip_norm is not None:
            grads = _global_clip(grads, clip_norm)
        lr = learning_rate(t)
        for name, g in grads.items():
            if g is None:
                continue
            m[name] = beta_1 * m[name] + (1 - beta_1) * g
            v[name] = beta_2 * v[name] + (1 - beta_2) * g * g
            m_use, v_use = m[name], v[name]
            if bias_correction:
                m_use, v_use = m_use / (1 - beta_1 ** (t + 1)), v_use / (1 - beta_2 ** (t + 1))
            u = m_use / (np.sqrt(v_use) + epsilon)
            if _decayed(name, weight_decay_rate, exclude_from_weight_decay, include_in_weight_decay):
                u = u + weight_decay_rate * w[name]
            ratio = 1.0
            adapted = not any(re.search(p, name) for p in exclude_from_layer_adaptation or ())
            if kind == "lamb" and adapted:
                r1, r2 = np.linalg.norm(w[name].ravel()), np.linalg.norm(u.ravel())
                ratio = r1 / r2 if r1 > 0 and r2 > 0 else 1.0
            w[name] = w[name] - lr * ratio * u
        history.append({k: (w[k].copy(), m[k].copy(), v[k].copy()) for k in w})
    return history
