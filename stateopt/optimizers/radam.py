"""RAdam (rectified Adam) with torch's update rule and rectification threshold."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import LR, Hyperparameters
from .._optimizer import OptaxOptimizer
from ._common import (
    BETAS,
    DECOUPLED_WEIGHT_DECAY,
    EPS,
    SWITCHED_WEIGHT_DECAY,
    f32,
    lerp,
    one_minus_power,
    zeros_like,
)

__all__ = ['RAdam', 'TorchRAdamState', 'scale_by_torch_radam', 'radam_sma_length']


class RAdam(OptaxOptimizer):
    r"""RAdam (rectified Adam) with torch's update rule and rectification threshold.

    With ``g`` the gradient (negated if ``maximize``), plus ``weight_decay * p`` unless
    ``decoupled_weight_decay`` (then ``p *= 1 - lr * weight_decay`` first)::

        m_t = b1 m_{t-1} + (1 - b1) g_t ;  v_t = b2 v_{t-1} + (1 - b2) g_t^2 ;  m^_t = m_t / (1 - b1^t)
        rho_inf = 2 / (1 - b2) - 1 ;  rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        p  -= lr m^_t r_t sqrt(1 - b2^t) / (sqrt(v_t) + eps)   if rho_t > 5,   else  p -= lr m^_t

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.RAdam(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # unrectified first step: 1 - 0.1 * 2
    0.8
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(LR, BETAS, EPS, SWITCHED_WEIGHT_DECAY,
                                      keyword_only=[DECOUPLED_WEIGHT_DECAY])
    slots = {'count': 'count', 'exp_avg': 'exp_avg', 'exp_avg_sq': 'exp_avg_sq'}
    never_negative = ('exp_avg_sq',)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_radam(*hp['betas'], hp['eps'])


class TorchRAdamState(NamedTuple):
    """State of :func:`scale_by_torch_radam`."""

    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def _half_coth_excess(a: jax.Array) -> jax.Array:
    """``coth(a / 2) / 2 - 1 / a`` for ``a > 0``, accurate in float32 (a series below 2)."""
    small = jnp.minimum(a, 2.0)
    square = small * small
    series = small * (1 / 12 + square * (-1 / 720 + square * (1 / 30240 + square * (
        -1 / 1209600 + square / 47900160))))
    large = jnp.maximum(a, 2.0)
    direct = 0.5 + 1 / jnp.expm1(large) - 1 / large
    return jnp.where(a < 2.0, series, direct)


def radam_sma_length(beta2: Any, step: Any) -> jax.Array:
    """RAdam's ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``, accurate in float32.

    With ``u = -log(b2)`` and ``K(a) = coth(a / 2) / 2 - 1 / a`` (a series for small
    ``a``), ``rho_t = t (1 - 2 K(t u)) + 2 K(u)``, where ``t (1 - 2 K(t u)) = 2 / u - 2 t /
    expm1(t u)`` serves for large ``t u``. The direct form subtracts two numbers near
    ``2 / (1 - b2)`` and loses about four digits of ``rho_t`` at ``b2 = 0.999`` in float32.

    Examples
    --------
    >>> from stateopt.optimizers.radam import radam_sma_length
    >>> round(float(radam_sma_length(0.999, 6.0)), 4)  # 1999 - 12 * 0.999**6 / (1 - 0.999**6)
    5.9942
    """
    beta2 = f32(beta2)
    step = f32(step)
    u = -jnp.log1p(-(1 - beta2))
    scaled = step * u
    head = jnp.where(scaled < 2.0, step * (1 - 2 * _half_coth_excess(scaled)),
                     2 / u - 2 * step / jnp.expm1(jnp.maximum(scaled, 2.0)))
    return head + 2 * _half_coth_excess(u)


def scale_by_torch_radam(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8) -> optax.GradientTransformation:
    """torch's RAdam rule (rectified from ``rho_t > 5``) as a direction::

        m_t = b1 m_{t-1} + (1 - b1) g_t ;  v_t = b2 v_{t-1} + (1 - b2) g_t^2 ;  m^_t = m_t / (1 - b1^t)
        rho_inf = 2 / (1 - b2) - 1 ;  rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        d_t = m^_t r_t sqrt(1 - b2^t) / (sqrt(v_t) + eps)   if rho_t > 5,   else  d_t = m^_t

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.radam import scale_by_torch_radam
    >>> tx = scale_by_torch_radam()
    >>> g = {'w': jnp.array([0.5])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> round(d['w'].tolist()[0], 6)  # the first steps are momentum SGD
    0.5
    """

    def init_fn(params):
        return TorchRAdamState(jnp.zeros([], jnp.int32), zeros_like(params), zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        beta1, beta2 = f32(b1), f32(b2)
        count = optax.safe_increment(state.count)
        step = count.astype(jnp.float32)
        exp_avg = jax.tree.map(lambda m, g: lerp(m, g, 1 - beta1), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: v * beta2 + (1 - beta2) * g * g, state.exp_avg_sq, updates)
        bias1 = one_minus_power(beta1, step)
        bias2 = one_minus_power(beta2, step)
        rho_inf = 2 / (1 - beta2) - 1
        rho = radam_sma_length(beta2, step)
        rectified = rho > 5
        ratio = (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
        rectification = jnp.sqrt(jnp.where(rectified, ratio, 1.0))

        def direction_of(m, v):
            corrected = m / bias1
            adaptive = jnp.sqrt(bias2) / (jnp.sqrt(v) + eps)
            return jnp.where(rectified, corrected * adaptive * rectification, corrected)

        direction = jax.tree.map(direction_of, exp_avg, exp_avg_sq)
        return direction, TorchRAdamState(count, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)
