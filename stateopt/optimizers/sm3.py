"""SM3: Adagrad with one accumulator per row and per column."""

from __future__ import annotations

import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, open_unit_interval
from .._optimizer import OptaxOptimizer
from ._common import EPS

__all__ = ['SM3']


class SM3(OptaxOptimizer):
    r"""SM3-II (Anil et al., 2019): Adagrad with one accumulator per row and per column (``optax.sm3``).

    With ``g`` the gradient plus ``weight_decay * p``; for a matrix, ``r`` and ``c`` hold
    a row and a column maximum (a vector keeps one accumulator per element)::

        ν = min(r_i, c_j) + g_ij² ;  r_i = max_j ν_ij ;  c_j = max_i ν_ij
        m = momentum * m + (1 - momentum) * g / sqrt(ν + eps)     (0 where ν = 0)
        p -= lr * m

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.SM3(lr=1.0, momentum=0.0).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # an Adagrad step of sign(g)
    0.0
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=1.0),
        Param('momentum', 0.9, open_unit_interval, 'The decay of the average of the normalised gradients '
              '(0: none).'),
        EPS.but(doc='Added to ``ν`` under the square root.'), WEIGHT_DECAY)
    slots = {'accumulators': 'mu', 'momentum_buffer': 'nu'}
    never_negative = ('accumulators',)

    @classmethod
    def _algorithm(cls, hp):
        return optax.scale_by_sm3(b1=hp['momentum'], b2=1.0, eps=hp['eps'])
