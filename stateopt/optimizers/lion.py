"""Lion: the sign of an interpolated momentum, with decoupled weight decay."""

from __future__ import annotations

import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters
from .._optimizer import OptaxOptimizer
from ._common import BETAS

__all__ = ['Lion']


class Lion(OptaxOptimizer):
    r"""Lion (Chen et al., 2023): the sign of an interpolated momentum, decoupled weight decay.

    ::

        p = p * (1 - lr * weight_decay) - lr * sign(b1 m + (1 - b1) g)
        m = b2 m + (1 - b2) g

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> opt = stateopt.Lion(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0, -1e-3])})
    >>> w.value.tolist()
    [0.8999999761581421, 1.100000023841858]
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=1e-4),
        BETAS.but(default=(0.9, 0.99), doc='``(b1, b2)``: the interpolation of the step\'s momentum, and '
                                           'the decay of the kept momentum.'),
        WEIGHT_DECAY)
    _decay = 'decoupled'
    slots = {'count': 'count', 'exp_avg': 'mu'}

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.scale_by_lion(beta1, beta2)
