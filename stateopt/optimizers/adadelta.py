"""Adadelta with torch's update rule."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, unit_interval
from .._optimizer import OptaxOptimizer
from ._common import EPS, zeros_like

__all__ = ['Adadelta', 'TorchAdadeltaState', 'scale_by_torch_adadelta']


class Adadelta(OptaxOptimizer):
    r"""Adadelta with torch's update rule and coupled weight decay.

    With ``g`` the gradient (negated if ``maximize``) plus ``weight_decay * p``::

        v_t = rho v_{t-1} + (1 - rho) g_t^2
        Δ_t = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g_t ;  u_t = rho u_{t-1} + (1 - rho) Δ_t^2
        p  -= lr * Δ_t

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Adadelta(rho=0.0, eps=1.0).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 1.0 * sqrt(1) / sqrt(9 + 1) * 3
    0.0513
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=1.0),
        Param('rho', 0.9, unit_interval, 'The decay rate of the running averages ``v`` and ``u``.'),
        EPS.but(default=1e-6, doc='Added inside both square roots for numerical stability.'),
        WEIGHT_DECAY)
    slots = {'square_avg': 'square_avg', 'acc_delta': 'acc_delta'}
    never_negative = ('square_avg', 'acc_delta')

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_adadelta(hp['rho'], hp['eps'])


class TorchAdadeltaState(NamedTuple):
    """State of :func:`scale_by_torch_adadelta`."""

    square_avg: Any
    acc_delta: Any


def scale_by_torch_adadelta(rho: Any = 0.9, eps: Any = 1e-6) -> optax.GradientTransformation:
    """torch's Adadelta rule as a direction::

        v_t = rho v_{t-1} + (1 - rho) g_t^2
        d_t = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g_t
        u_t = rho u_{t-1} + (1 - rho) d_t^2

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.adadelta import scale_by_torch_adadelta
    >>> tx = scale_by_torch_adadelta(rho=0.0, eps=1.0)
    >>> g = {'w': jnp.array([0.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> d['w'].tolist()
    [0.0]
    """

    def init_fn(params):
        return TorchAdadeltaState(zeros_like(params), zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        square_avg = jax.tree.map(lambda v, g: v * rho + (1 - rho) * g * g, state.square_avg, updates)
        direction = jax.tree.map(lambda g, v, u: jnp.sqrt(u + eps) / jnp.sqrt(v + eps) * g,
                                 updates, square_avg, state.acc_delta)
        acc_delta = jax.tree.map(lambda u, d: u * rho + (1 - rho) * d * d, state.acc_delta, direction)
        return direction, TorchAdadeltaState(square_avg, acc_delta)

    return optax.GradientTransformation(init_fn, update_fn)
