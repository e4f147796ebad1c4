"""LAMB: Adam's direction rescaled per parameter by a trust ratio."""

from __future__ import annotations

import optax

from .._decay import decay_mask_fn
from .._hyper import LR, WEIGHT_DECAY, Hyperparameters
from .._optimizer import OptaxOptimizer
from ._common import BETAS, EPS

__all__ = ['Lamb']


class Lamb(OptaxOptimizer):
    r"""LAMB (You et al., 2020): Adam's direction rescaled per parameter by a trust ratio.

    With ``m̂, v̂`` Adam's bias-corrected moments of ``g`` (``optax.lamb``)::

        r = m̂ / (sqrt(v̂) + eps) + weight_decay * p
        p -= lr * ||p|| / ||r|| * r          (the ratio is 1 where a norm is 0)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([3.0, 4.0]))
    >>> opt = stateopt.Lamb(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([1.0, 1.0])})   # r = (1, 1): a step of lr * ||p|| along it
    >>> [round(x, 4) for x in w.value.tolist()]
    [2.6464, 3.6464]
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(LR, BETAS, EPS.but(default=1e-6), WEIGHT_DECAY)
    _decay = None
    _masks_own_decay = True
    slots = {'count': '0.count', 'exp_avg': '0.mu', 'exp_avg_sq': '0.nu'}
    never_negative = ('exp_avg_sq',)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.chain(optax.scale_by_adam(beta1, beta2, hp['eps']),
                           optax.add_decayed_weights(hp['weight_decay'],
                                                     mask=decay_mask_fn(hp.get('weight_decay_mask'))),
                           optax.scale_by_trust_ratio())
