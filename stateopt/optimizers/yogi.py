"""Yogi: Adam with an additive second-moment update."""

from __future__ import annotations

import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters
from .._optimizer import OptaxOptimizer
from ._common import BETAS, EPS

__all__ = ['Yogi']


class Yogi(OptaxOptimizer):
    r"""Yogi (Zaheer et al., 2018): Adam with an additive second-moment update (``optax.yogi``).

    With ``g`` the gradient plus ``weight_decay * p`` and ``m_0 = v_0 = 1e-6``::

        m = b1 m + (1 - b1) g ;  v = v - (1 - b2) sign(v - g²) g²
        p -= lr * m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Yogi(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # about lr * sign(g) on the first step
    0.9001
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(LR, BETAS, EPS.but(default=1e-3), WEIGHT_DECAY)
    slots = {'count': 'count', 'exp_avg': 'mu', 'exp_avg_sq': 'nu'}
    never_negative = ('exp_avg_sq',)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.scale_by_yogi(beta1, beta2, hp['eps'])
