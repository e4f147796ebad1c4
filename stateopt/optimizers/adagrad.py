"""Adagrad with torch's update rule (eps outside the square root)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, non_negative
from .._optimizer import OptaxOptimizer
from ._common import EPS

__all__ = ['Adagrad', 'TorchAdagradState', 'scale_by_torch_adagrad']


class Adagrad(OptaxOptimizer):
    r"""Adagrad with torch's update rule (eps outside the square root) and coupled weight decay.

    With ``g`` the gradient (negated if ``maximize``) plus ``weight_decay * p`` and ``t`` the step::

        s_t = s_{t-1} + g_t^2      (s_0 = initial_accumulator_value)
        p  -= lr / (1 + (t - 1) lr_decay) * g_t / (sqrt(s_t) + eps)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> opt = stateopt.Adagrad(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0, -0.5])})
    >>> [round(x, 4) for x in w.value.tolist()]  # the first step moves each weight by lr
    [0.9, 1.1]
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=1e-2),
        Param('lr_decay', 0.0, non_negative, 'The decay of the step size: ``lr / (1 + (t - 1) lr_decay)``.'),
        WEIGHT_DECAY,
        Param('initial_accumulator_value', 0.0, non_negative, 'The starting value ``s_0`` of the sum of '
              'squared gradients.', dynamic=False),
        EPS.but(default=1e-10))
    slots = {'count': 'count', 'sum': 'sum'}
    never_negative = ('sum',)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_adagrad(hp['lr_decay'], hp['initial_accumulator_value'], hp['eps'])


class TorchAdagradState(NamedTuple):
    """State of :func:`scale_by_torch_adagrad`."""

    count: jax.Array
    sum: Any


def scale_by_torch_adagrad(
    lr_decay: Any = 0.0, initial_accumulator_value: float = 0.0, eps: Any = 1e-10
) -> optax.GradientTransformation:
    """torch's Adagrad rule (eps outside the square root) as a direction::

        s_0 = initial_accumulator_value ;  s_t = s_{t-1} + g_t^2
        d_t = g_t / (sqrt(s_t) + eps) / (1 + (t - 1) * lr_decay)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.adagrad import scale_by_torch_adagrad
    >>> tx = scale_by_torch_adagrad()
    >>> g = {'w': jnp.array([3.0, -0.5])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> [round(x, 6) for x in d['w'].tolist()]
    [1.0, -1.0]
    """

    def init_fn(params):
        accumulator = jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params)
        return TorchAdagradState(jnp.zeros([], jnp.int32), accumulator)

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        decay = 1 + state.count.astype(jnp.float32) * lr_decay
        accumulator = jax.tree.map(lambda s, g: s + g * g, state.sum, updates)
        direction = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps) / decay, updates, accumulator)
        return direction, TorchAdagradState(count, accumulator)

    return optax.GradientTransformation(init_fn, update_fn)
