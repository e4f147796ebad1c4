"""NovoGrad: gradients normalised per parameter by a running average of their norm."""

from __future__ import annotations

import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters
from .._optimizer import OptaxOptimizer
from ._common import BETAS, EPS

__all__ = ['Novograd']


class Novograd(OptaxOptimizer):
    r"""NovoGrad (Ginsburg et al., 2019): per-parameter normalised gradients (``optax.novograd``).

    With ``v_1 = ||g_1||²`` and ``m_1 = g_1 / (sqrt(v_1) + eps) + weight_decay * p``::

        v = b2 v + (1 - b2) ||g||²
        m = b1 m + g / (sqrt(v) + eps) + weight_decay * p
        p -= lr * m

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> opt = stateopt.Novograd(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0, 4.0])})   # g / ||g||
    >>> [round(x, 4) for x in w.value.tolist()]
    [0.94, 0.92]
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR, BETAS.but(doc='The decay rates ``(b1, b2)`` of the momentum and of the running average of '
                          '``||g||²``.'),
        EPS, WEIGHT_DECAY)
    _decay = None
    slots = {'count': 'count', 'exp_avg': 'mu', 'exp_avg_sq': 'nu'}
    never_negative = ('exp_avg_sq',)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.scale_by_novograd(beta1, beta2, hp['eps'], weight_decay=hp['weight_decay'])
