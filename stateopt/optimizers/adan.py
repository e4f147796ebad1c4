"""Adan: Nesterov momentum from gradient differences."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, beta_tuple
from .._optimizer import OptaxOptimizer
from ._common import EPS, one_minus_power

__all__ = ['Adan', 'AdanState', 'scale_by_adan']


class Adan(OptaxOptimizer):
    r"""Adan (Xie et al., 2022): Nesterov momentum from gradient differences.

    With ``(b1, b2, b3) = betas`` (``1 - β`` of the paper), ``Δ_t = g_t - g_{t-1}``
    (``Δ_1 = 0``) and bias corrections ``^``::

        m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) Δ ;  n = b3 n + (1 - b3) (g + b2 Δ)²
        p = p * (1 - lr * weight_decay) - lr * (m̂ + b2 v̂) / (sqrt(n̂) + eps)

    as the paper's Algorithm 1 and its reference code (``optax.scale_by_adan`` weighs
    ``Δ`` by ``1 - b2``), with optax's form of the decoupled decay.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Adan(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)   # m̂ / sqrt(n̂) = 1
    0.9
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR,
        Param('betas', (0.98, 0.92, 0.99), beta_tuple(3), 'The decay rates ``(b1, b2, b3)`` of the running '
              'averages ``m``, ``v`` and ``n`` above.', type='tuple of float'),
        EPS, WEIGHT_DECAY)
    _decay = 'decoupled'
    slots = {
        'count': 'count', 'exp_avg': 'exp_avg', 'exp_avg_diff': 'exp_avg_diff', 'exp_avg_sq': 'exp_avg_sq',
        'prev_grad': 'prev_grad'}
    never_negative = ('exp_avg_sq',)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2, beta3 = hp['betas']
        return scale_by_adan(beta1, beta2, beta3, hp['eps'])


class AdanState(NamedTuple):
    """State of :func:`scale_by_adan`."""

    count: jax.Array
    exp_avg: Any        # m
    exp_avg_diff: Any   # v
    exp_avg_sq: Any     # n
    prev_grad: Any


def scale_by_adan(b1: Any, b2: Any, b3: Any, eps: Any) -> optax.GradientTransformation:
    """Adan's direction (Xie et al., 2022, Algorithm 1, with ``b = 1 - β`` of the paper).

    With ``Δ_t = g_t - g_{t-1}`` (``Δ_1 = 0``) and bias corrections ``^``::

        m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) Δ ;  n = b3 n + (1 - b3) (g + b2 Δ)²
        d = (m̂ + b2 v̂) / (sqrt(n̂) + eps)

    ``optax.scale_by_adan`` weighs ``Δ`` by ``1 - b2`` instead of the paper's ``b2``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.adan import scale_by_adan
    >>> tx = scale_by_adan(0.98, 0.92, 0.99, 1e-8)
    >>> g = {'w': jnp.array([2.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> round(float(d['w'][0]), 4)
    1.0
    """

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdanState(jnp.zeros([], jnp.int32), zeros, zeros, zeros, zeros)

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        first = state.count == 0
        diff = jax.tree.map(lambda g, prev: jnp.where(first, 0, g - prev), updates, state.prev_grad)
        exp_avg = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.exp_avg, updates)
        exp_avg_diff = jax.tree.map(lambda v, d: b2 * v + (1 - b2) * d, state.exp_avg_diff, diff)
        exp_avg_sq = jax.tree.map(lambda n, g, d: b3 * n + (1 - b3) * (g + b2 * d) ** 2,
                                  state.exp_avg_sq, updates, diff)
        corrections = [one_minus_power(beta, count) for beta in (b1, b2, b3)]

        def direction(m, v, n):
            return (m / corrections[0] + b2 * v / corrections[1]) / (jnp.sqrt(n / corrections[2]) + eps)

        directions = jax.tree.map(direction, exp_avg, exp_avg_diff, exp_avg_sq)
        return directions, AdanState(count, exp_avg, exp_avg_diff, exp_avg_sq, updates)

    return optax.GradientTransformation(init_fn, update_fn)
