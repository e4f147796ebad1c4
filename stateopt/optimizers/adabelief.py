"""AdaBelief: Adam with the spread of the gradient around its mean."""

from __future__ import annotations

import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters
from .._optimizer import OptaxOptimizer
from ._common import BETAS, EPS

__all__ = ['AdaBelief']


class AdaBelief(OptaxOptimizer):
    r"""AdaBelief (Zhuang et al., 2020): Adam with the spread of ``g`` around its mean (``optax.adabelief``).

    With ``g`` the gradient plus ``weight_decay * p``::

        m = b1 m + (1 - b1) g ;  s = b2 s + (1 - b2) (g - m)² + eps
        p -= lr * m / (1 - b1^t) / (sqrt(s / (1 - b2^t)) + eps)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.AdaBelief(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # m̂ = 2, ŝ = (2 - 0.2)²: a step of 0.1 * 2 / 1.8
    0.8889
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR, BETAS, EPS.but(default=1e-16, doc='Added to ``s`` and to the denominator for numerical '
                                              'stability.'),
        WEIGHT_DECAY)
    slots = {'count': 'count', 'exp_avg': 'mu', 'exp_avg_var': 'nu'}
    never_negative = ('exp_avg_var',)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.scale_by_belief(beta1, beta2, eps=hp['eps'], eps_root=hp['eps'])
