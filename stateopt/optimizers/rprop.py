"""Rprop (resilient backpropagation) with torch's update rule, the learning rate scaling every step."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import GRAD_CLIP_NORM, GRAD_CLIP_VALUE, LR, Hyperparameters, Param
from .._optimizer import OptaxOptimizer
from .._trace import is_traced
from ._common import f32, map_unzip, pair, zeros_like

__all__ = ['Rprop', 'TorchRpropState', 'scale_by_torch_rprop']


def _etas(name: str, value: Any) -> tuple:
    """``(etaminus, etaplus)`` with ``0 < etaminus < 1 < etaplus``."""
    if is_traced(value):
        return tuple(value)
    minus, plus = pair(name, value, ('etaminus', 'etaplus'))
    if not 0 < minus < 1 < plus:
        raise ValueError(f'{name} must be (etaminus, etaplus) with 0 < etaminus < 1 < etaplus, '
                         f'got {value!r}')
    return minus, plus


def _step_sizes(name: str, value: Any) -> tuple:
    """``(step_size_min, step_size_max)`` with ``0 <= min <= max`` and ``max > 0``."""
    if is_traced(value):
        return tuple(value)
    low, high = pair(name, value, ('step_size_min', 'step_size_max'))
    if not 0 <= low <= high or high <= 0:
        raise ValueError(f'{name} must be (step_size_min, step_size_max) with 0 <= step_size_min '
                         f'<= step_size_max and step_size_max > 0, got {value!r}')
    return low, high




class Rprop(OptaxOptimizer):
    r"""Rprop (resilient backpropagation) with torch's update rule; the lr scales every step.

    With ``g`` the gradient (negated if ``maximize``), ``g_prev`` the last one kept and
    per-element step sizes ``η`` starting at ``lr``::

        η_t = clip(η_{t-1} * (etaplus if g_t g_prev > 0, etaminus if < 0, else 1), *step_sizes)
        g_t = 0 where g_t g_prev < 0 ;  p -= η_t sign(g_t) ;  g_prev = g_t

    With a constant lr this is torch.optim.Rprop. A new lr (assigned, or from a
    schedule or scheduler) rescales the step sizes by ``lr_t / lr_{t-1}``, so ``η``
    is kept in units of lr; a step with ``lr == 0`` changes nothing. Rprop uses only
    the signs of the gradients, so it has no weight decay (as torch); ``grad_clip_norm``
    and ``grad_clip_value`` (braintools' signature) are applied, and change nothing but a
    gradient clipped to zero: clipping keeps every sign.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Rprop(lr=0.1).register_trainable_weights({'w': w})
    >>> for _ in range(2):
    ...     opt.update({'w': jnp.array([5.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 0.1 - 0.1 * 1.2
    0.78
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=1e-2),
        Param('etas', (0.5, 1.2), _etas, 'The factors ``(etaminus, etaplus)`` that shrink a step size where '
              'the gradient changes sign and grow it where it keeps its sign.', type='tuple of float'),
        Param('step_sizes', (1e-6, 50.0), _step_sizes, 'The least and the greatest step size '
              '``(step_size_min, step_size_max)``.', type='tuple of float'),
        clips=[GRAD_CLIP_NORM, GRAD_CLIP_VALUE])
    _lr_in_algorithm = True
    slots = {'prev': 'prev_grad', 'step_factor': 'step_factor'}
    never_negative = ('step_factor',)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_rprop(hp['lr'], hp['etas'], hp['step_sizes'])


class TorchRpropState(NamedTuple):
    """State of :func:`scale_by_torch_rprop`: the last gradient and the step sizes in units of lr."""

    prev_grad: Any
    step_factor: Any


def scale_by_torch_rprop(
    lr: Any, etas: Any = (0.5, 1.2), step_sizes: Any = (1e-6, 50.0)
) -> optax.GradientTransformation:
    """torch's Rprop rule, learning rate included, with the step sizes kept in units of lr.

    With ``lr_t`` this step's learning rate, ``s`` the step factors (``s_0 = 1``) and
    ``g_prev`` the last gradient kept (``0`` at first)::

        eta = etaplus if g_t g_prev > 0,  etaminus if g_t g_prev < 0,  else 1
        step_t = clip(lr_t s_{t-1} eta, step_size_min, step_size_max) ;  s_t = step_t / lr_t
        g_t = 0 where g_t g_prev < 0 ;  d_t = step_t sign(g_t) ;  g_prev = g_t

    With a constant lr, ``step_t`` is torch's step size (which starts at lr); a new lr
    rescales the step sizes by ``lr_t / lr_{t-1}``. A step with ``lr_t == 0`` changes
    nothing.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.rprop import scale_by_torch_rprop
    >>> tx = scale_by_torch_rprop(lr=0.1)
    >>> g = {'w': jnp.array([3.0, -0.5])}
    >>> d, state = tx.update(g, tx.init(g))
    >>> d, state = tx.update(g, state)
    >>> [round(x, 6) for x in d['w'].tolist()]  # 0.1 * 1.2, twice the same sign
    [0.12, -0.12]
    """
    etaminus, etaplus = etas
    step_min, step_max = step_sizes

    def init_fn(params):
        return TorchRpropState(zeros_like(params), jax.tree.map(jnp.ones_like, params))

    def update_fn(updates, state, params=None):
        del params
        rate = f32(lr)
        moving = rate > 0

        def step_of(g, prev, factor):
            agreement = g * prev
            eta = jnp.where(agreement > 0, etaplus, jnp.where(agreement < 0, etaminus, 1.0))
            step = jnp.clip(rate * factor * eta, step_min, step_max).astype(g.dtype)
            g = jnp.where(agreement < 0, jnp.zeros_like(g), g)
            direction = jnp.where(moving, step * jnp.sign(g), jnp.zeros_like(g))
            new_factor = jnp.where(moving, step / jnp.where(moving, rate, 1.0), factor)
            return direction, jnp.where(moving, g, prev), new_factor

        direction, prev_grad, step_factor = map_unzip(step_of, 3, updates, state.prev_grad,
                                                      state.step_factor)
        return direction, TorchRpropState(prev_grad, step_factor)

    return optax.GradientTransformation(init_fn, update_fn)
