"""RMSprop with torch's update rule (eps outside the square root), centering and momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, non_negative, open_unit_interval
from .._optimizer import OptaxOptimizer, ParamGroup
from ._common import EPS, lerp, static_flag, zeros_like

__all__ = ['RMSprop', 'TorchRMSpropState', 'scale_by_torch_rmsprop']


class RMSprop(OptaxOptimizer):
    r"""RMSprop with torch's update rule (eps outside the square root), centering and momentum.

    With ``g`` the gradient (negated if ``maximize``) plus ``weight_decay * p``::

        v_t = alpha v_{t-1} + (1 - alpha) g_t^2 ;  a_t = alpha a_{t-1} + (1 - alpha) g_t
        q_t = g_t / (sqrt(v_t - a_t^2 if centered else v_t) + eps)
        b_t = momentum b_{t-1} + q_t ;  p -= lr * b_t        (p -= lr * q_t when momentum == 0)

    A group created with ``momentum=0`` keeps no buffer, so its momentum cannot be
    raised later.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.RMSprop(lr=0.01, alpha=0.75).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 0.01 * 2 / sqrt(0.25 * 2 ** 2)
    0.98
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=1e-2),
        Param('alpha', 0.99, open_unit_interval, 'The decay rate of the running average ``v`` of ``g^2``.'),
        EPS, WEIGHT_DECAY,
        Param('momentum', 0.0, non_negative, 'The momentum factor (0: no momentum buffer).'),
        static_flag('centered', False, 'Divide by the estimated variance ``v - a^2`` instead of ``v``.'))
    slots = {'square_avg': 'square_avg', 'momentum_buffer': 'momentum_buffer', 'grad_avg': 'grad_avg'}
    never_negative = ('square_avg',)

    def _check_assignment(self, group: ParamGroup, name: str, value: Any) -> None:
        if name == 'momentum' and value != 0 and self._group_state(group).momentum_buffer is None:
            raise ValueError(f'param group {group.index} was created with momentum=0 and keeps no '
                             f'momentum buffer; create the group with momentum > 0 to vary it')

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_rmsprop(hp['alpha'], hp['eps'], hp['momentum'], hp['centered'])


class TorchRMSpropState(NamedTuple):
    """State of :func:`scale_by_torch_rmsprop`."""

    square_avg: Any
    grad_avg: Any          # None unless centered
    momentum_buffer: Any   # None when the group was created with momentum == 0


def scale_by_torch_rmsprop(
    alpha: Any = 0.99, eps: Any = 1e-8, momentum: Any = 0.0, centered: bool = False
) -> optax.GradientTransformation:
    """torch's RMSprop rule (eps outside the square root) as a direction::

        v_t = alpha v_{t-1} + (1 - alpha) g_t^2
        a_t = alpha a_{t-1} + (1 - alpha) g_t  and  v'_t = v_t - a_t^2   if centered,  else v'_t = v_t
        q_t = g_t / (sqrt(v'_t) + eps)
        b_t = momentum b_{t-1} + q_t ;  d_t = b_t   (d_t = q_t when momentum == 0)

    A group created with ``momentum == 0`` keeps no buffer; setting the momentum of a
    buffered group to 0 later gives ``d = q`` and leaves the buffer as it is, as torch
    does. ``v'`` is floored at 0 against rounding.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.rmsprop import scale_by_torch_rmsprop
    >>> tx = scale_by_torch_rmsprop(alpha=0.75)
    >>> g = {'w': jnp.array([2.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> round(d['w'].tolist()[0], 6)  # 2 / sqrt(0.25 * 4)
    2.0
    """

    def init_fn(params):
        return TorchRMSpropState(
            zeros_like(params),
            zeros_like(params) if centered else None,
            None if momentum == 0 else zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        square_avg = jax.tree.map(lambda v, g: v * alpha + (1 - alpha) * g * g, state.square_avg, updates)
        if state.grad_avg is None:
            grad_avg = None
            denom = jax.tree.map(lambda v: jnp.sqrt(v) + eps, square_avg)
        else:
            grad_avg = jax.tree.map(lambda a, g: lerp(a, g, 1 - alpha), state.grad_avg, updates)
            denom = jax.tree.map(lambda v, a: jnp.sqrt(jnp.maximum(v - a * a, 0)) + eps,
                                 square_avg, grad_avg)
        scaled = jax.tree.map(jnp.divide, updates, denom)
        if state.momentum_buffer is None:
            return scaled, TorchRMSpropState(square_avg, grad_avg, None)
        off = momentum == 0
        buffer = jax.tree.map(lambda b, q: jnp.where(off, b, momentum * b + q), state.momentum_buffer, scaled)
        direction = jax.tree.map(lambda b, q: jnp.where(off, q, b), buffer, scaled)
        return direction, TorchRMSpropState(square_avg, grad_avg, buffer)

    return optax.GradientTransformation(init_fn, update_fn)
