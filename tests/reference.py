"""Plain numpy implementations of the published update rules, written from their papers and
torch's documented pseudo-code, independently of stateopt. Each works on one float64 array
and returns the new parameter and state."""

from __future__ import annotations

import numpy as np


def sgd(p, g, state, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
        maximize=False):
    """torch.optim.SGD."""
    g = -g if maximize else g
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        b = state.get('b')
        b = g.copy() if b is None else momentum * b + (1 - dampening) * g
        state = {**state, 'b': b}
        g = g + momentum * b if nesterov else b
    return p - lr * g, state


def adam(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
         maximize=False, decoupled=False):
    """torch.optim.Adam (decoupled=False) and torch.optim.AdamW (decoupled=True)."""
    b1, b2 = betas
    t = state.get('t', 0) + 1
    m = state.get('m', np.zeros_like(p))
    v = state.get('v', np.zeros_like(p))
    g = -g if maximize else g
    if decoupled:
        p = p * (1 - lr * weight_decay)
    elif weight_decay:
        g = g + weight_decay * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** t)
    new_state = {'t': t, 'm': m, 'v': v}
    if amsgrad:
        v_max = np.maximum(state.get('v_max', np.zeros_like(p)), v)
        new_state['v_max'] = v_max
        v_hat = v_max / (1 - b2 ** t)
    else:
        v_hat = v / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), new_state


def clip_by_global_norm(grads: list, max_norm: float) -> list:
    """optax.clip_by_global_norm over a list of arrays."""
    norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
    return grads if norm < max_norm else [g * (max_norm / norm) for g in grads]


def trajectory(rule, p0, grads, **hyperparams):
    """Parameters after each step of ``rule`` from ``p0`` with the gradient sequence ``grads``."""
    p, state, out = np.asarray(p0, np.float64), {}, []
    for g in grads:
        p, state = rule(p, np.asarray(g, np.float64), state, **hyperparams)
        out.append(p)
    return out
