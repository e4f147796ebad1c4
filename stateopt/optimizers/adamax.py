"""Adamax (Adam with the infinity norm) with torch's update rule."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters
from .._optimizer import OptaxOptimizer
from ._common import BETAS, EPS, lerp, one_minus_power, zeros_like

__all__ = ['Adamax', 'TorchAdamaxState', 'scale_by_torch_adamax']


class Adamax(OptaxOptimizer):
    r"""Adamax (Adam with the infinity norm) with torch's update rule and coupled weight decay.

    With ``g`` the gradient (negated if ``maximize``) plus ``weight_decay * p``::

        m_t = b1 m_{t-1} + (1 - b1) g_t ;  u_t = max(b2 u_{t-1}, |g_t| + eps)
        p  -= lr / (1 - b1^t) * m_t / u_t

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> opt = stateopt.Adamax(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0, -0.5])})
    >>> [round(x, 4) for x in w.value.tolist()]  # the first step moves each weight by lr
    [0.9, 1.1]
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=2e-3),
        BETAS.but(doc='The decay rates ``(beta1, beta2)`` of the running average of the gradient and of '
                      'its infinity norm.'),
        EPS.but(doc='Added to ``|g|`` inside the maximum for numerical stability.'),
        WEIGHT_DECAY)
    slots = {'count': 'count', 'exp_avg': 'exp_avg', 'exp_inf': 'exp_inf'}
    never_negative = ('exp_inf',)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_adamax(*hp['betas'], hp['eps'])


class TorchAdamaxState(NamedTuple):
    """State of :func:`scale_by_torch_adamax`."""

    count: jax.Array
    exp_avg: Any
    exp_inf: Any


def scale_by_torch_adamax(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8) -> optax.GradientTransformation:
    """torch's Adamax rule (eps added to ``|g|`` inside the maximum) as a direction::

        m_t = b1 m_{t-1} + (1 - b1) g_t ;  u_t = max(b2 u_{t-1}, |g_t| + eps)
        d_t = m_t / ((1 - b1^t) u_t)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.adamax import scale_by_torch_adamax
    >>> tx = scale_by_torch_adamax()
    >>> g = {'w': jnp.array([4.0, -0.25])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> [round(x, 5) for x in d['w'].tolist()]
    [1.0, -1.0]
    """

    def init_fn(params):
        return TorchAdamaxState(jnp.zeros([], jnp.int32), zeros_like(params), zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        exp_avg = jax.tree.map(lambda m, g: lerp(m, g, 1 - b1), state.exp_avg, updates)
        exp_inf = jax.tree.map(lambda u, g: jnp.maximum(u * b2, jnp.abs(g) + eps), state.exp_inf, updates)
        bias1 = one_minus_power(b1, count.astype(jnp.float32))
        direction = jax.tree.map(lambda m, u: m / u / bias1, exp_avg, exp_inf)
        return direction, TorchAdamaxState(count, exp_avg, exp_inf)

    return optax.GradientTransformation(init_fn, update_fn)
