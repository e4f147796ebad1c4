"""Plain numpy float64 references of the paper optimizers and the newer ones, written from their
papers' update rules (and the conventions their stateopt docstrings state), independently of
stateopt and optax. Each works on one array and returns the new parameter and state; ``lbfgs``
and ``prodigy`` work on a whole param group, as one flat vector."""

from __future__ import annotations

import numpy as np


def _sign(g, maximize):
    return -g if maximize else g


def _norm(x):
    return float(np.sqrt(np.sum(x * x)))


def _moments(state, g, b1, b2):
    """Adam's moments and step count, and their bias corrections."""
    t = state.get('t', 0) + 1
    m = b1 * state.get('m', np.zeros_like(g)) + (1 - b1) * g
    v = b2 * state.get('v', np.zeros_like(g)) + (1 - b2) * g * g
    return t, m, v, m / (1 - b1 ** t), v / (1 - b2 ** t)


def lamb(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, maximize=False):
    """You et al., 2020, Algorithm 2 (one layer = one parameter)."""
    g = _sign(g, maximize)
    t, m, v, m_hat, v_hat = _moments(state, g, *betas)
    r = m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p
    p_norm, r_norm = _norm(p), _norm(r)
    ratio = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
    return p - lr * ratio * r, {'t': t, 'm': m, 'v': v}


def lars(p, g, state, *, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=1e-8,
         maximize=False):
    """You et al., 2017, Algorithm 1, with the norm of the decayed gradient in the ratio."""
    g = _sign(g, maximize) + weight_decay * p
    p_norm, g_norm = _norm(p), _norm(g)
    ratio = trust_coefficient * p_norm / (g_norm + eps) if p_norm > 0 and g_norm > 0 else 1.0
    b = momentum * state.get('b', np.zeros_like(p)) + lr * ratio * g
    return p - b, {'b': b}


def _adam_direction(state, g, betas=(0.9, 0.999), eps=1e-8):
    t, m, v, m_hat, v_hat = _moments(state, g, *betas)
    return m_hat / (np.sqrt(v_hat) + eps), {'t': t, 'm': m, 'v': v}


def lookahead(p, g, state, *, lr, sync_period=5, alpha=0.5, weight_decay=0.0, maximize=False,
              base='adam', **base_hyperparams):
    """Zhang et al., 2019, Algorithm 1: fast steps ``p - lr * d``, slow weights pulled every k steps.

    ``base`` names the fast direction: 'adam' (m̂ / (sqrt(v̂) + eps)) or 'identity' (g).
    """
    g = _sign(g, maximize) + weight_decay * p
    if base == 'adam':
        d, base_state = _adam_direction(state.get('base', {}), g, **base_hyperparams)
    else:
        d, base_state = g, {}
    slow = state.get('slow', p)
    count = state.get('count', 0) + 1
    fast = p - lr * d
    if count % sync_period == 0:
        slow = slow + alpha * (fast - slow)
        fast = slow
    return fast, {'slow': slow, 'count': count, 'base': base_state}


def yogi(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-3, weight_decay=0.0, maximize=False):
    """Zaheer et al., 2018, Algorithm 2, with moments starting at 1e-6 and bias-corrected."""
    b1, b2 = betas
    g = _sign(g, maximize) + weight_decay * p
    t = state.get('t', 0) + 1
    m = b1 * state.get('m', np.full_like(p, 1e-6)) + (1 - b1) * g
    v_old = state.get('v', np.full_like(p, 1e-6))
    v = v_old - (1 - b2) * np.sign(v_old - g * g) * g * g
    step = m / (1 - b1 ** t) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p - lr * step, {'t': t, 'm': m, 'v': v}


def adabelief(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, maximize=False):
    """Zhuang et al., 2020, Algorithm 2: s accumulates (g - m)² + eps."""
    b1, b2 = betas
    g = _sign(g, maximize) + weight_decay * p
    t = state.get('t', 0) + 1
    m = b1 * state.get('m', np.zeros_like(p)) + (1 - b1) * g
    s = b2 * state.get('s', np.zeros_like(p)) + (1 - b2) * (g - m) ** 2 + eps
    step = m / (1 - b1 ** t) / (np.sqrt(s / (1 - b2 ** t)) + eps)
    return p - lr * step, {'t': t, 'm': m, 's': s}


def lion(p, g, state, *, lr, betas=(0.9, 0.99), weight_decay=0.0, maximize=False):
    """Chen et al., 2023, Algorithm 2."""
    b1, b2 = betas
    g = _sign(g, maximize)
    m = state.get('m', np.zeros_like(p))
    update = np.sign(b1 * m + (1 - b1) * g)
    return p * (1 - lr * weight_decay) - lr * update, {'m': b2 * m + (1 - b2) * g}


def sm3(p, g, state, *, lr, momentum=0.9, eps=1e-8, weight_decay=0.0, maximize=False):
    """Anil et al., 2019, SM3-II with the rows and columns of a matrix as the cover."""
    g = _sign(g, maximize) + weight_decay * p
    if p.ndim == 2:
        rows = state.get('rows', np.zeros(p.shape[0]))
        cols = state.get('cols', np.zeros(p.shape[1]))
        nu = np.minimum(rows[:, None], cols[None, :]) + g * g
        accumulators = {'rows': nu.max(axis=1), 'cols': nu.max(axis=0)}
    else:
        nu = state.get('nu', np.zeros_like(p)) + g * g
        accumulators = {'nu': nu}
    scaled = np.where(nu > 0, g / np.sqrt(nu + eps), 0.0)
    m = momentum * state.get('m', np.zeros_like(p)) + (1 - momentum) * scaled
    return p - lr * m, {**accumulators, 'm': m}


def novograd(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False):
    """Ginsburg et al., 2019, Algorithm 1 (one layer = one parameter)."""
    b1, b2 = betas
    g = _sign(g, maximize)
    norm_sq = float(np.sum(g * g))
    v = norm_sq if 'v' not in state else b2 * state['v'] + (1 - b2) * norm_sq
    u = g / (np.sqrt(v) + eps) + weight_decay * p
    m = u if 'm' not in state else b1 * state['m'] + u
    return p - lr * m, {'v': v, 'm': m}


def fromage(p, g, state, *, lr, momentum=0.0, maximize=False):
    """Bernstein et al., 2020, Algorithm 1, on the heavy-ball buffer of the gradient."""
    b = momentum * state.get('b', np.zeros_like(p)) + _sign(g, maximize)
    ratio = max(_norm(p), 1e-6) / max(_norm(b), 1e-6)
    return (p - lr * ratio * b) / np.sqrt(1 + lr * lr), {'b': b}


NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(x, steps, eps):
    """Jordan et al., 2024: the quintic Newton-Schulz iteration towards the polar factor of ``x``."""
    a, b, c = NS_COEFFICIENTS
    transposed = x.shape[0] > x.shape[1]
    x = x.T if transposed else x
    x = x / (np.linalg.norm(x) + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


def muon(p, g, state, *, lr, momentum=0.95, nesterov=True, ns_steps=5, eps=1e-8, weight_decay=0.0,
         adam_betas=(0.9, 0.999), maximize=False):
    """Muon (Jordan et al., 2024) for matrices with optax's momentum; AdamW for other parameters."""
    g = _sign(g, maximize)
    if p.ndim != 2:
        d, new_state = _adam_direction(state, g, adam_betas, eps)
        return p * (1 - lr * weight_decay) - lr * d, new_state
    t = state.get('t', 0) + 1
    m = momentum * state.get('m', np.zeros_like(p)) + (1 - momentum) * g
    if nesterov:
        u = momentum * m / (1 - momentum ** (t + 1)) + (1 - momentum) * g / (1 - momentum ** t)
    else:
        u = m / (1 - momentum ** t)
    scale = np.sqrt(max(1.0, p.shape[1] / p.shape[0]))
    update = scale * newton_schulz(u, ns_steps, eps)
    return p * (1 - lr * weight_decay) - lr * update, {'t': t, 'm': m}


def schedule_free(p, g, state, *, lr, momentum=None, betas=None, eps=1e-8, weight_decay=0.0,
                  weight_lr_power=2.0, maximize=False, adam=False):
    """Defazio et al., 2024, Algorithm 1 (SGD; ``adam=True``: the AdamW base without momentum).

    ``p`` is y; z and x are kept explicitly.
    """
    y, g = p, _sign(g, maximize)
    state = dict(state) if state else {'z': y.copy(), 'x': y.copy(), 't': 0, 'weight_sum': 0.0,
                                       'max_lr': 0.0, 'v': np.zeros_like(y)}
    if adam:
        b1, b2 = betas
        state['t'] += 1
        state['v'] = b2 * state['v'] + (1 - b2) * g * g
        d = g / (np.sqrt(state['v'] / (1 - b2 ** state['t'])) + eps) + weight_decay * y
    else:
        b1, d = momentum, g + weight_decay * y
    state['z'] = state['z'] - lr * d
    state['max_lr'] = max(state['max_lr'], lr)
    weight = state['max_lr'] ** weight_lr_power
    state['weight_sum'] += weight
    c = weight / state['weight_sum'] if state['weight_sum'] > 0 else 0.0
    state['x'] = (1 - c) * state['x'] + c * state['z']
    return (1 - b1) * state['z'] + b1 * state['x'], state


def adopt(p, g, state, *, lr, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.0,
          decoupled_weight_decay=False, clip_exponent=0.25, maximize=False):
    """Taniguchi et al., 2024, Algorithm 2 (v_0 = g_0², then one step per gradient)."""
    b1, b2 = betas
    g = _sign(g, maximize)
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    if 'v' not in state:
        return p, {'t': 1, 'v': g * g, 'm': np.zeros_like(p)}
    t, v = state['t'], state['v']
    scaled = g / np.maximum(np.sqrt(v), eps)
    if clip_exponent is not None:
        scaled = np.clip(scaled, -t ** clip_exponent, t ** clip_exponent)
    m = b1 * state['m'] + (1 - b1) * scaled
    return p - lr * m, {'t': t + 1, 'v': b2 * v + (1 - b2) * g * g, 'm': m}


def adan(p, g, state, *, lr, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, maximize=False):
    """Xie et al., 2022, Algorithm 1, in the ``b = 1 - β`` convention of its reference code."""
    b1, b2, b3 = betas
    g = _sign(g, maximize)
    t = state.get('t', 0) + 1
    diff = g - state['prev'] if 'prev' in state else np.zeros_like(g)
    m = b1 * state.get('m', np.zeros_like(p)) + (1 - b1) * g
    v = b2 * state.get('v', np.zeros_like(p)) + (1 - b2) * diff
    n = b3 * state.get('n', np.zeros_like(p)) + (1 - b3) * (g + b2 * diff) ** 2
    step = (m / (1 - b1 ** t) + b2 * v / (1 - b2 ** t)) / (np.sqrt(n / (1 - b3 ** t)) + eps)
    return p * (1 - lr * weight_decay) - lr * step, {'t': t, 'm': m, 'v': v, 'n': n, 'prev': g}


def nadamw(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, maximize=False):
    """Dozat, 2016 (Nesterov Adam) with decoupled decay: the next step's momentum, corrected."""
    b1, b2 = betas
    g = _sign(g, maximize)
    t, m, v, _, v_hat = _moments(state, g, b1, b2)
    m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t)
    return p * (1 - lr * weight_decay) - lr * m_hat / (np.sqrt(v_hat) + eps), {'t': t, 'm': m, 'v': v}


def squared_gradient(g):
    """A diagonal curvature estimate for Sophia's tests (the Gauss-Newton form ``g ⊙ g``)."""
    return g * g


def sophia(p, g, state, *, lr, betas=(0.965, 0.99), eps=1e-8, weight_decay=1e-4, gamma=0.01,
           clip_threshold=1.0, update_interval=10, hessian=squared_gradient):
    """Liu et al., 2023, Algorithm 3, with ``hessian(g)`` as the estimate every k steps."""
    b1, b2 = betas
    t = state.get('t', 0) + 1
    m = b1 * state.get('m', np.zeros_like(p)) + (1 - b1) * g
    h = state.get('h', np.zeros_like(p))
    step = m / (1 - b1 ** t) / np.maximum(gamma * h, eps)
    if clip_threshold is not None:
        step = np.clip(step, -clip_threshold, clip_threshold)
    if (t - 1) % update_interval == 0:
        h = b2 * h + (1 - b2) * hessian(g)
    return p * (1 - lr * weight_decay) - lr * step, {'t': t, 'm': m, 'h': h}


# -- whole param groups, as one flat vector -------------------------------------------------

def lbfgs(p, g, state, *, lr=1.0, memory_size=10, scale_init_precond=True):
    """Nocedal & Wright, Algorithm 7.4 (two-loop recursion), without a line search.

    The initial inverse-Hessian scale is ``s·y / y·y`` of the newest pair, or
    ``min(1, 1 / ||g||)`` on the first step, when ``scale_init_precond``; pairs with
    ``s·y = 0`` are skipped.
    """
    pairs = list(state.get('pairs', []))
    if 'p' in state:
        pairs = (pairs + [(p - state['p'], g - state['g'])])[-memory_size:]
    q, alphas = g.copy(), []
    for s, y in reversed(pairs):
        rho = 1 / np.dot(s, y) if np.dot(s, y) != 0 else 0.0
        alphas.append(rho * np.dot(s, q))
        q = q - alphas[-1] * y
    if not scale_init_precond:
        scale = 1.0
    elif pairs:
        s, y = pairs[-1]
        scale = np.dot(s, y) / np.dot(y, y) if np.dot(y, y) > 0 else 1.0
    else:
        scale = min(1.0, 1 / np.linalg.norm(g))
    r = scale * q
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        rho = 1 / np.dot(s, y) if np.dot(s, y) != 0 else 0.0
        r = r + s * (alpha - rho * np.dot(y, r))
    return p - lr * r, {'pairs': pairs, 'p': p, 'g': g}


def prodigy(p, g, state, *, lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0,
            d0=1e-6, d_coef=1.0, safeguard_warmup=False, maximize=False):
    """Mishchenko & Defazio, 2023, Algorithm 4 (Adam form), with its code's bias correction and
    ``d / d0`` scaling of the numerator and denominator of the estimate."""
    b1, b2 = betas
    b3 = np.sqrt(b2) if beta3 is None else beta3
    g = _sign(g, maximize)
    if not state:
        state = {'t': 0, 'd': d0, 'p0': p.copy(), 'm': np.zeros_like(p), 'v': np.zeros_like(p),
                 'r': 0.0, 's': np.zeros_like(p)}
    t, d = state['t'] + 1, state['d']
    eta = d * lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    m = b1 * state['m'] + (1 - b1) * d * g
    v = b2 * state['v'] + (1 - b2) * (d * g) ** 2
    r = b3 * state['r'] + (d / d0) * eta * np.dot(g, state['p0'] - p)
    s = b3 * state['s'] + ((d if safeguard_warmup else eta) / d0) * d * g
    new_d = max(d, d_coef * r / np.sum(np.abs(s)))
    new_p = p - eta * (m / (np.sqrt(v) + new_d * eps) + weight_decay * p)
    return new_p, {**state, 't': t, 'd': new_d, 'm': m, 'v': v, 'r': r, 's': s}
