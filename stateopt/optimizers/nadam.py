"""NAdam (Adam with Nesterov momentum) with torch's momentum schedule, and optax's NAdamW."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, non_negative
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

__all__ = ['Nadam', 'NAdam', 'NAdamW', 'TorchNAdamState', 'scale_by_torch_nadam']


class Nadam(OptaxOptimizer):
    r"""NAdam (Adam with Nesterov momentum) with torch's update rule and momentum schedule.

    With ``g`` the gradient (negated if ``maximize``), plus ``weight_decay * p`` unless
    ``decoupled_weight_decay`` (then ``p *= 1 - lr * weight_decay`` first)::

        mu_t = b1 (1 - 0.96^(t * momentum_decay) / 2) ;  P_t = mu_1 ... mu_t
        m_t = b1 m_{t-1} + (1 - b1) g_t ;  v_t = b2 v_{t-1} + (1 - b2) g_t^2
        D_t = sqrt(v_t / (1 - b2^t)) + eps
        p  -= lr ((1 - mu_t) / (1 - P_t) g_t + mu_{t+1} / (1 - P_t mu_{t+1}) m_t) / D_t

    ``NAdam`` (torch's spelling) is the same class.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.NAdam(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 0.1 * (1 + 0.1 * mu_2 / (1 - mu_1 mu_2)), mu_1 ≈ mu_2 ≈ 0.45
    0.8944
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=2e-3), BETAS, EPS, SWITCHED_WEIGHT_DECAY,
        Param('momentum_decay', 4e-3, non_negative, 'The decay ``psi`` of the momentum schedule '
              '``mu_t = b1 (1 - 0.96^(t psi) / 2)``.'),
        keyword_only=[DECOUPLED_WEIGHT_DECAY])
    slots = {'count': 'count', 'mu_product': 'mu_product', 'exp_avg': 'exp_avg', 'exp_avg_sq': 'exp_avg_sq'}
    never_negative = ('exp_avg_sq', 'mu_product')

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_nadam(*hp['betas'], hp['eps'], hp['momentum_decay'])


NAdam = Nadam


class NAdamW(OptaxOptimizer):
    r"""NAdamW (Dozat, 2016; Loshchilov & Hutter, 2019): Nesterov Adam, decoupled decay (``optax.nadamw``).

    With Adam's moments ``m, v`` of ``g``::

        m̂ = b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t) ;  v̂ = v / (1 - b2^t)
        p = p * (1 - lr * weight_decay) - lr * m̂ / (sqrt(v̂) + eps)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.NAdamW(lr=0.1, weight_decay=0.0).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)   # m̂ = 0.9 * 0.2 / 0.19 + 0.1 * 2 / 0.1, v̂ = 4
    0.8526
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(LR, BETAS, EPS, WEIGHT_DECAY.but(default=1e-4))
    _decay = 'decoupled'
    slots = {'count': 'count', 'exp_avg': 'mu', 'exp_avg_sq': 'nu'}
    never_negative = ('exp_avg_sq',)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.scale_by_adam(beta1, beta2, hp['eps'], nesterov=True)


class TorchNAdamState(NamedTuple):
    """State of :func:`scale_by_torch_nadam`: ``mu_product`` is ``prod_{i<=t} mu_i``."""

    count: jax.Array
    mu_product: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def scale_by_torch_nadam(
    b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, momentum_decay: Any = 4e-3
) -> optax.GradientTransformation:
    """torch's NAdam rule, with its momentum schedule ``mu_t``, as a direction::

        mu_t = b1 (1 - 0.96^(t * momentum_decay) / 2) ;  P_t = mu_1 ... mu_t
        m_t = b1 m_{t-1} + (1 - b1) g_t ;  v_t = b2 v_{t-1} + (1 - b2) g_t^2
        D_t = sqrt(v_t / (1 - b2^t)) + eps
        d_t = (1 - mu_t) / (1 - P_t) * g_t / D_t + mu_{t+1} / (1 - P_t mu_{t+1}) * m_t / D_t

    ``P_t`` is kept in the state, so a changed ``b1`` or ``momentum_decay`` enters the
    product from the next step on, as in torch.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.nadam import scale_by_torch_nadam
    >>> tx = scale_by_torch_nadam(momentum_decay=0.0)
    >>> g = {'w': jnp.array([1.0])}
    >>> d, state = tx.update(g, tx.init(g))
    >>> round(float(state.mu_product), 6)  # b1 / 2
    0.45
    """

    def init_fn(params):
        return TorchNAdamState(jnp.zeros([], jnp.int32), jnp.ones([], jnp.float32),
                               zeros_like(params), zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        beta1, beta2 = f32(b1), f32(b2)
        count = optax.safe_increment(state.count)
        step = count.astype(jnp.float32)
        log_decay = jnp.log(f32(0.96)) * momentum_decay
        mu = beta1 * (1 - 0.5 * jnp.exp(step * log_decay))
        mu_next = beta1 * (1 - 0.5 * jnp.exp((step + 1) * log_decay))
        mu_product = state.mu_product * mu
        exp_avg = jax.tree.map(lambda m, g: lerp(m, g, 1 - beta1), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: v * beta2 + (1 - beta2) * g * g, state.exp_avg_sq, updates)
        bias2 = one_minus_power(beta2, step)
        grad_weight = (1 - mu) / (1 - mu_product)
        momentum_weight = mu_next / (1 - mu_product * mu_next)

        def direction_of(g, m, v):
            denom = jnp.sqrt(v / bias2) + eps
            return grad_weight * g / denom + momentum_weight * m / denom

        direction = jax.tree.map(direction_of, updates, exp_avg, exp_avg_sq)
        return direction, TorchNAdamState(count, mu_product, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)
