"""Adam and AdamW with torch's update rules."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, open_unit_interval
from .._optimizer import OptaxOptimizer
from ._common import BETAS, EPS, one_minus_power, static_flag, zeros_like

__all__ = ['Adam', 'AdamW', 'TorchAdamState', 'scale_by_torch_adam']

AMSGRAD = static_flag('amsgrad', False, 'Use the maximum of the past second moments (AMSGrad).')


class Adam(OptaxOptimizer):
    r"""Adam with torch's update rule, AMSGrad and coupled (L2) weight decay.

    With ``g`` the gradient plus ``weight_decay * p``::

        m_t = b1 m + (1 - b1) g      v_t = b2 v + (1 - b2) g^2      (v̂ = max v if amsgrad)
        p  -= lr / (1 - b1^t) * m_t / (sqrt(v̂_t) / sqrt(1 - b2^t) + eps)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> opt = stateopt.Adam(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0, -0.5])})
    >>> [round(x, 4) for x in w.value.tolist()]  # the first step moves each weight by lr
    [0.9, 1.1]
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR, BETAS,
        Param('beta1', None, open_unit_interval, 'Overrides ``betas[0]`` (braintools\' spelling).',
              type='float or None', into=('betas', 0)),
        Param('beta2', None, open_unit_interval, 'Overrides ``betas[1]`` (braintools\' spelling).',
              type='float or None', into=('betas', 1)),
        EPS, WEIGHT_DECAY, AMSGRAD)
    slots = {
        'count': 'count', 'exp_avg': 'exp_avg', 'exp_avg_sq': 'exp_avg_sq',
        'max_exp_avg_sq': 'max_exp_avg_sq'}
    never_negative = ('exp_avg_sq', 'max_exp_avg_sq')

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return scale_by_torch_adam(beta1, beta2, hp['eps'], hp['amsgrad'])


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay (torch.optim.AdamW).

    The Adam direction ``d`` of :class:`Adam` (without L2 on the gradient), then
    ``p = p * (1 - lr * weight_decay) - lr * d``.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.AdamW(lr=0.1, weight_decay=0.5).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # 1 * (1 - 0.05) - 0.1
    0.85
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(LR, BETAS, EPS, WEIGHT_DECAY.but(default=1e-2), AMSGRAD)
    _decay = 'decoupled'


class TorchAdamState(NamedTuple):
    """State of :func:`scale_by_torch_adam`."""

    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any  # None unless amsgrad


def scale_by_torch_adam(
    b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, amsgrad: bool = False
) -> optax.GradientTransformation:
    """torch's Adam rule (with its AMSGrad) as a direction.

    With ``t`` the step, ``m`` and ``v`` the moments::

        m_t = m_{t-1} + (1 - b1) (g_t - m_{t-1})       v_t = b2 v_{t-1} + (1 - b2) g_t^2
        v̂_t = max(v̂_{t-1}, v_t) if amsgrad else v_t
        d_t = m_t / (1 - b1^t) / (sqrt(v̂_t) / sqrt(1 - b2^t) + eps)

    torch's AMSGrad keeps the maximum of the raw second moment and bias-corrects it
    afterwards (optax's ``scale_by_amsgrad`` takes the maximum of the corrected one).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.adam import scale_by_torch_adam
    >>> tx = scale_by_torch_adam()
    >>> g = {'w': jnp.array([0.5, -2.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> [round(x, 6) for x in d['w'].tolist()]
    [1.0, -1.0]
    """

    def init_fn(params):
        return TorchAdamState(
            jnp.zeros([], jnp.int32),
            zeros_like(params),
            zeros_like(params),
            zeros_like(params) if amsgrad else None,
        )

    def update_fn(updates, state, params=None):
        del params
        beta1, beta2 = jnp.asarray(b1, jnp.float32), jnp.asarray(b2, jnp.float32)
        count = optax.safe_increment(state.count)
        step = count.astype(jnp.float32)
        exp_avg = jax.tree.map(lambda m, g: m + (1 - beta1) * (g - m), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * g * g, state.exp_avg_sq, updates)
        if state.max_exp_avg_sq is None:
            max_sq, second = None, exp_avg_sq
        else:
            max_sq = jax.tree.map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq)
            second = max_sq
        bias1 = one_minus_power(beta1, step)
        bias2_sqrt = jnp.sqrt(one_minus_power(beta2, step))
        direction = jax.tree.map(
            lambda m, v: m / (jnp.sqrt(v) / bias2_sqrt + eps) / bias1, exp_avg, second
        )
        return direction, TorchAdamState(count, exp_avg, exp_avg_sq, max_sq)

    return optax.GradientTransformation(init_fn, update_fn)
