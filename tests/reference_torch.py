"""Plain numpy implementations, in float64, of the update rules torch.optim documents for its
adaptive optimizers, written from torch's pseudo-code independently of stateopt. Each works
on one array and returns the new parameter and state (see reference.trajectory)."""

from __future__ import annotations

import numpy as np


def _direction_sign(g, maximize):
    return -g if maximize else g


def adagrad(p, g, state, *, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
            eps=1e-10, maximize=False):
    """torch.optim.Adagrad."""
    t = state.get('t', 0) + 1
    g = _direction_sign(g, maximize)
    if weight_decay:
        g = g + weight_decay * p
    total = state.get('sum', np.full_like(p, initial_accumulator_value)) + g * g
    clr = lr / (1 + (t - 1) * lr_decay)
    return p - clr * g / (np.sqrt(total) + eps), {'t': t, 'sum': total}


def adadelta(p, g, state, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    """torch.optim.Adadelta."""
    g = _direction_sign(g, maximize)
    if weight_decay:
        g = g + weight_decay * p
    v = rho * state.get('v', np.zeros_like(p)) + (1 - rho) * g * g
    u = state.get('u', np.zeros_like(p))
    delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
    u = rho * u + (1 - rho) * delta * delta
    return p - lr * delta, {'v': v, 'u': u}


def rmsprop(p, g, state, *, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            maximize=False):
    """torch.optim.RMSprop."""
    g = _direction_sign(g, maximize)
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


def adamax(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False):
    """torch.optim.Adamax."""
    b1, b2 = betas
    t = state.get('t', 0) + 1
    g = _direction_sign(g, maximize)
    if weight_decay:
        g = g + weight_decay * p
    m = b1 * state.get('m', np.zeros_like(p)) + (1 - b1) * g
    u = np.maximum(b2 * state.get('u', np.zeros_like(p)), np.abs(g) + eps)
    return p - lr * m / ((1 - b1 ** t) * u), {'t': t, 'm': m, 'u': u}


def _torch_decay(p, g, lr, weight_decay, decoupled):
    """NAdam's and RAdam's weight decay: shrink p (decoupled) or add wd * p to g (L2)."""
    if not weight_decay:
        return p, g
    if decoupled:
        return p * (1 - lr * weight_decay), g
    return p, g + weight_decay * p


def nadam(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
          decoupled_weight_decay=False, maximize=False):
    """torch.optim.NAdam."""
    b1, b2 = betas
    t = state.get('t', 0) + 1
    p, g = _torch_decay(p, _direction_sign(g, maximize), lr, weight_decay, decoupled_weight_decay)
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_product = state.get('mu_product', 1.0) * mu
    m = b1 * state.get('m', np.zeros_like(p)) + (1 - b1) * g
    v = b2 * state.get('v', np.zeros_like(p)) + (1 - b2) * g * g
    m_hat = mu_next * m / (1 - mu_product * mu_next) + (1 - mu) * g / (1 - mu_product)
    v_hat = v / (1 - b2 ** t)
    new_state = {'t': t, 'mu_product': mu_product, 'm': m, 'v': v}
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), new_state


def radam(p, g, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
          decoupled_weight_decay=False, maximize=False):
    """torch.optim.RAdam."""
    b1, b2 = betas
    t = state.get('t', 0) + 1
    p, g = _torch_decay(p, _direction_sign(g, maximize), lr, weight_decay, decoupled_weight_decay)
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


def rprop(p, g, state, *, lr, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), maximize=False):
    """torch.optim.Rprop (its implementation clamps the step sizes at every step)."""
    eta_minus, eta_plus = etas
    g = _direction_sign(g, maximize)
    prev = state.get('prev', np.zeros_like(p))
    step_size = state.get('step_size', np.full_like(p, lr))
    agreement = g * prev
    factor = np.where(agreement > 0, eta_plus, np.where(agreement < 0, eta_minus, 1.0))
    step_size = np.clip(step_size * factor, *step_sizes)
    g = np.where(agreement < 0, 0.0, g)
    return p - step_size * np.sign(g), {'prev': g, 'step_size': step_size}


def adafactor(p, g, state, *, lr=1e-2, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=0.8,
              beta1=None, weight_decay=0.0, factored=True, maximize=False):
    """torch.optim.Adafactor (``d`` = clip_threshold, ``beta2_decay`` = -decay_rate), with the
    paper's first moment over the scaled update when ``beta1`` is given."""
    eps1, eps2 = eps
    t = state.get('t', 0) + 1
    g = _direction_sign(g, maximize)
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
