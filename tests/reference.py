"""Plain numpy float64 implementations of the published update rules, one section per algorithm
family, written from the papers and torch's documented pseudo-code (and the conventions the
stateopt docstrings state), independently of stateopt and optax. Each works on one array and
returns the new parameter and state; ``lbfgs`` and ``prodigy`` work on a whole param group, as
one flat vector."""

from __future__ import annotations

import numpy as np

# -- running a rule, and the clipping the tests apply ------------------------------------------

def trajectory(rule, p0, grads, **hyperparams):
    """Parameters after each step of ``rule`` from ``p0`` with the gradient sequence ``grads``."""
    p, state, out = np.asarray(p0, np.float64), {}, []
    for g in grads:
        p, state = rule(p, np.asarray(g, np.float64), state, **hyperparams)
        out.append(p)
    return out


def clip_by_global_norm(grads: list, max_norm: float) -> list:
    """optax.clip_by_global_norm over a list of arrays."""
    norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
    return grads if norm < max_norm else [g * (max_norm / norm) for g in grads]


# -- shared by several rules -------------------------------------------------------------------

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


def _adam_direction(state, g, betas=(0.9, 0.999), eps=1e-8):
    t, m, v, m_hat, v_hat = _moments(state, g, *betas)
    return m_hat / (np.sqrt(v_hat) + eps), {'t': t, 'm': m, 'v': v}


def _torch_decay(p, g, lr, weight_decay, decoupled):
    """NAdam's and RAdam's weight decay: shrink p (decoupled) or add wd * p to g (L2)."""
    if not weight_decay:
        return p, g
    if decoupled:
        return p * (1 - lr * weight_decay), g
    return p, g + weight_decay * p


# -- sgd: SGD, Momentum, MomentumNesterov ------------------------------------------------------

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


# -- adam: Adam, AdamW -------------------------------------------------------------------------

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


# -- adagrad -----------------------------------------------------------------------------------

def adagrad(p, g, state, *, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
            eps=1e-10, maximize=False):
    """torch.optim.Adagrad."""
    t = state.get('t', 0) + 1
    g = _sign(g, maximize)
    if weight_decay:
        g = g + weight_decay * p
    total = state.get('sum', np.full_like(p, initial_accumulator_value)) + g * g
    clr = lr / (1 + (t - 1) * lr_decay)
    return p - clr * g / (np.sqrt(total) + eps), {'t': t, 'sum': total}


# -- adadelta ----------------------------------------------------------------------------------

def adadelta(p, g, state, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    """torch.optim.Adadelta."""
    g = _sign(g, maximize)
    if weight_decay:
        g = g + weight_decay * p
    v = rho * state.get('v', np.zeros_like(p)) + (1 - rho) * g * g
    u = state.get('u', np.zeros_like(p))
    delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
    u = rho * u + (1 - rho) * delta * delta
    return p - lr * delta, {'v': v, 'u': u}


# -- rmsprop -----------------------------------------------------------------------------------

def rmsprop(p, g, state, *, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            maximize=False):
    """torch.optim.RMSprop."""
    g = _sign(g, maximize)
    if weight_decay:
        g = g + weight_decay * p
    v = alpha * state.get('v', np.zeros_like(p)) + (1 - alpha) * g * g
    new_state = {'v': v}
    v_tilde = v
    if centered:
        g_avg = alpha * state.get('g_avg', np.zeros_like(p)) + (1 - alpha) * g
        new_state['g_avg'] = g_avg
        v_tilde = v - g_avg * g_avg
    scaled = g / (np.sqrt(v_tilde) + eps)
    if momentum > 0:
        b = momentum * state.get('b', np.zeros_like(p)) + scaled
        new_state['b'] = b
        return p - lr * b, new_state
    return p - lr * scaled, new_state


# -- adamax ------------------------------------------------------------------------------------

def adamax(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False):
    """torch.optim.Adamax."""
    b1, b2 = betas
    t = state.get('t', 0) + 1
    g = _sign(g, maximize)
    if weight_decay:
        g = g + weight_decay * p
    m = b1 * state.get('m', np.zeros_like(p)) + (1 - b1) * g
    u = np.maximum(b2 * state.get('u', np.zeros_like(p)), np.abs(g) + eps)
    return p - lr * m / ((1 - b1 ** t) * u), {'t': t, 'm': m, 'u': u}


# -- nadam: Nadam / NAdam, NAdamW --------------------------------------------------------------

def nadam(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
          decoupled_weight_decay=False, maximize=False):
    """torch.optim.NAdam."""
    b1, b2 = betas
    t = state.get('t', 0) + 1
    p, g = _torch_decay(p, _sign(g, maximize), lr, weight_decay, decoupled_weight_decay)
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_product = state.get('mu_product', 1.0) * mu
    m = b1 * state.get('m', np.zeros_like(p)) + (1 - b1) * g
    v = b2 * state.get('v', np.zeros_like(p)) + (1 - b2) * g * g
    m_hat = mu_next * m / (1 - mu_product * mu_next) + (1 - mu) * g / (1 - mu_product)
    v_hat = v / (1 - b2 ** t)
    new_state = {'t': t, 'mu_product': mu_product, 'm': m, 'v': v}
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), new_state


def nadamw(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, maximize=False):
    """Dozat, 2016 (Nesterov Adam) with decoupled decay: the next step's momentum, corrected."""
    b1, b2 = betas
    g = _sign(g, maximize)
    t, m, v, _, v_hat = _moments(state, g, b1, b2)
    m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t)
    return p * (1 - lr * weight_decay) - lr * m_hat / (np.sqrt(v_hat) + eps), {'t': t, 'm': m, 'v': v}


# -- radam -------------------------------------------------------------------------------------

def radam(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
          decoupled_weight_decay=False, maximize=False):
    """torch.optim.RAdam."""
    b1, b2 = betas
    t = state.get('t', 0) + 1
    p, g = _torch_decay(p, _sign(g, maximize), lr, weight_decay, decoupled_weight_decay)
    m = b1 * state.get('m', np.zeros_like(p)) + (1 - b1) * g
    v = b2 * state.get('v', np.zeros_like(p)) + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** t)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    new_state = {'t': t, 'm': m, 'v': v}
    if rho_t > 5:
        adaptive = np.sqrt(1 - b2 ** t) / (np.sqrt(v) + eps)
        rect = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return p - lr * m_hat * rect * adaptive, new_state
    return p - lr * m_hat, new_state


# -- rprop -------------------------------------------------------------------------------------

def rprop(p, g, state, *, lr, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), maximize=False):
    """torch.optim.Rprop (its implementation clamps the step sizes at every step)."""
    eta_minus, eta_plus = etas
    g = _sign(g, maximize)
    prev = state.get('prev', np.zeros_like(p))
    step_size = state.get('step_size', np.full_like(p, lr))
    agreement = g * prev
    factor = np.where(agreement > 0, eta_plus, np.where(agreement < 0, eta_minus, 1.0))
    step_size = np.clip(step_size * factor, *step_sizes)
    g = np.where(agreement < 0, 0.0, g)
    return p - step_size * np.sign(g), {'prev': g, 'step_size': step_size}


# -- adafactor ---------------------------------------------------------------------------------

def adafactor(p, g, state, *, lr=1e-2, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=0.8,
              beta1=None, weight_decay=0.0, factored=True, maximize=False):
    """torch.optim.Adafactor (``d`` = clip_threshold, ``beta2_decay`` = -decay_rate), with the
    paper's first moment over the scaled update when ``beta1`` is given."""
    eps1, eps2 = eps
    t = state.get('t', 0) + 1
    g = _sign(g, maximize)
    beta2_complement = t ** -decay_rate
    rho = min(lr, 1 / np.sqrt(t))
    alpha = max(eps2, np.sqrt(np.mean(p * p))) * rho
    p = p * (1 - lr * weight_decay)
    new_state = {'t': t}
    if factored and g.ndim > 1:
        row = state.get('row', np.zeros(g.shape[:-1] + (1,)))
        col = state.get('col', np.zeros(g.shape[:-2] + (1,) + g.shape[-1:]))
        row = row + beta2_complement * (np.mean(g * g, axis=-1, keepdims=True) - row)
        col = col + beta2_complement * (np.mean(g * g, axis=-2, keepdims=True) - col)
        variance = (row @ col) / np.maximum(np.mean(row, axis=-2, keepdims=True), eps1)
        new_state.update(row=row, col=col)
    else:
        variance = state.get('variance', np.zeros_like(g))
        variance = variance + beta2_complement * (g * g - variance)
        new_state['variance'] = variance.copy()
    update = g / np.sqrt(np.maximum(variance, eps1 * eps1))
    update = update / max(1.0, np.sqrt(np.mean(update * update)) / clip_threshold)
    step = alpha * update
    if beta1 is not None:
        step = beta1 * state.get('m', np.zeros_like(p)) + (1 - beta1) * step
        new_state['m'] = step
    return p - step, new_state


# -- lamb --------------------------------------------------------------------------------------

def lamb(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, maximize=False):
    """You et al., 2020, Algorithm 2 (one layer = one parameter)."""
    g = _sign(g, maximize)
    t, m, v, m_hat, v_hat = _moments(state, g, *betas)
    r = m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p
    p_norm, r_norm = _norm(p), _norm(r)
    ratio = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
    return p - lr * ratio * r, {'t': t, 'm': m, 'v': v}


# -- lars --------------------------------------------------------------------------------------

def lars(p, g, state, *, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=1e-8,
         maximize=False):
    """You et al., 2017, Algorithm 1, with the norm of the decayed gradient in the ratio."""
    g = _sign(g, maximize) + weight_decay * p
    p_norm, g_norm = _norm(p), _norm(g)
    ratio = trust_coefficient * p_norm / (g_norm + eps) if p_norm > 0 and g_norm > 0 else 1.0
    b = momentum * state.get('b', np.zeros_like(p)) + lr * ratio * g
    return p - b, {'b': b}


# -- lookahead ---------------------------------------------------------------------------------

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


# -- yogi --------------------------------------------------------------------------------------

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


# -- adabelief ---------------------------------------------------------------------------------

def adabelief(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, maximize=False):
    """Zhuang et al., 2020, Algorithm 2: s accumulates (g - m)² + eps."""
    b1, b2 = betas
    g = _sign(g, maximize) + weight_decay * p
    t = state.get('t', 0) + 1
    m = b1 * state.get('m', np.zeros_like(p)) + (1 - b1) * g
    s = b2 * state.get('s', np.zeros_like(p)) + (1 - b2) * (g - m) ** 2 + eps
    step = m / (1 - b1 ** t) / (np.sqrt(s / (1 - b2 ** t)) + eps)
    return p - lr * step, {'t': t, 'm': m, 's': s}


# -- lion --------------------------------------------------------------------------------------

def lion(p, g, state, *, lr, betas=(0.9, 0.99), weight_decay=0.0, maximize=False):
    """Chen et al., 2023, Algorithm 2."""
    b1, b2 = betas
    g = _sign(g, maximize)
    m = state.get('m', np.zeros_like(p))
    update = np.sign(b1 * m + (1 - b1) * g)
    return p * (1 - lr * weight_decay) - lr * update, {'m': b2 * m + (1 - b2) * g}


# -- sm3 ---------------------------------------------------------------------------------------

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


# -- novograd ----------------------------------------------------------------------------------

def novograd(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False):
    """Ginsburg et al., 2019, Algorithm 1 (one layer = one parameter)."""
    b1, b2 = betas
    g = _sign(g, maximize)
    norm_sq = float(np.sum(g * g))
    v = norm_sq if 'v' not in state else b2 * state['v'] + (1 - b2) * norm_sq
    u = g / (np.sqrt(v) + eps) + weight_decay * p
    m = u if 'm' not in state else b1 * state['m'] + u
    return p - lr * m, {'v': v, 'm': m}


# -- fromage -----------------------------------------------------------------------------------

def fromage(p, g, state, *, lr, momentum=0.0, maximize=False):
    """Bernstein et al., 2020, Algorithm 1, on the heavy-ball buffer of the gradient."""
    b = momentum * state.get('b', np.zeros_like(p)) + _sign(g, maximize)
    ratio = max(_norm(p), 1e-6) / max(_norm(b), 1e-6)
    return (p - lr * ratio * b) / np.sqrt(1 + lr * lr), {'b': b}


# -- lbfgs (a whole param group, as one flat vector) -------------------------------------------

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


# -- schedule_free: ScheduleFreeSGD, ScheduleFreeAdamW -----------------------------------------

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


# -- muon --------------------------------------------------------------------------------------

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


# -- prodigy (a whole param group, as one flat vector) -----------------------------------------

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


# -- adopt -------------------------------------------------------------------------------------

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


# -- adan --------------------------------------------------------------------------------------

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


# -- sophia ------------------------------------------------------------------------------------

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


# -- sofo --------------------------------------------------------------------------------------

def sofo_direction(outputs, loss, p, tangents, *, kind='mse', damping=1e-5, h=1e-5):
    """Yu et al., 2024 (SOFO): the damped Gauss-Newton step in the span of the tangents.

    ``outputs(p) -> (N, C)`` and ``loss(p) -> float`` are functions of the flat float64
    params ``p``; ``tangents`` is ``(K, P)``. The Jacobian-tangent products and the
    loss's directional derivatives are central differences (float64, step ``h``); the
    Gauss-Newton matrix is that of ``mean_n 1/2 ||f_n - y_n||^2`` (``mse``) or of the mean
    softmax cross-entropy (``ce``), averaged over the N samples.
    """
    f = outputs(p)
    jv = np.stack([(outputs(p + h * v) - outputs(p - h * v)) / (2 * h) for v in tangents])   # (K, N, C)
    slopes = np.array([(loss(p + h * v) - loss(p - h * v)) / (2 * h) for v in tangents])
    n = f.shape[0]
    if kind == 'mse':
        ggn = np.einsum('knc,jnc->kj', jv, jv) / n
    else:
        e = np.exp(f - f.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        hessians = np.einsum('nc,cd->ncd', probs, np.eye(f.shape[1])) - np.einsum('nc,nd->ncd', probs, probs)
        ggn = np.einsum('knc,ncd,jnd->kj', jv, hessians, jv) / n
    eigvals, eigvecs = np.linalg.eigh(ggn)
    eigvals = np.maximum(eigvals, 0.0)
    coefficients = eigvecs @ ((eigvecs.T @ slopes) / (eigvals + damping * eigvals.max()))
    return coefficients @ tangents


# -- weight averages: EMA with TensorFlow's and timm's warm-ups, SWA as torch's AveragedModel -----

def ema_decay(t, *, decay=0.999, warmup=False, gamma=1.0, power=2 / 3, start=0):
    """The decay of the EMA update that follows ``t`` updates.

    0 (copy the weights) for the first ``start`` updates; then, with ``s = t - start``, ``decay``,
    or TensorFlow ``ExponentialMovingAverage``'s ``min(decay, (1 + s) / (10 + s))`` (``warmup=True``),
    or timm ``ModelEmaV3``'s ``min(decay, 1 - (1 + s / gamma) ** -power)`` (``warmup='power'``).
    """
    s = t - start
    if s < 0:
        return 0.0
    if warmup is True:
        return min(decay, (1 + s) / (10 + s))
    if warmup == 'power':
        return min(decay, 1 - (1 + s / gamma) ** -power)
    return decay


def ema_trajectory(first, values, **rule):
    """The EMA after each of ``values``, from ``first``: ``avg = d * avg + (1 - d) * x``."""
    average, out = np.asarray(first, np.float64), []
    for t, x in enumerate(values):
        d = ema_decay(t, **rule)
        average = d * average + (1 - d) * np.asarray(x, np.float64)
        out.append(average)
    return out


def swa_trajectory(values, start=0):
    """SWA after each of ``values``: the weights themselves before ``start``, then the mean of
    the weights of updates ``start`` to now (torch's ``AveragedModel``, ``n_averaged`` from 0)."""
    values = [np.asarray(x, np.float64) for x in values]
    return [x if t < start else np.mean(values[start:t + 1], axis=0) for t, x in enumerate(values)]
