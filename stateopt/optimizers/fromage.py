"""Fromage: steps of relative size ``lr`` per parameter."""

from __future__ import annotations

import optax

from .._hyper import LR, Hyperparameters, Param, open_unit_interval
from .._optimizer import OptaxOptimizer
from ._common import negated

__all__ = ['Fromage']


class Fromage(OptaxOptimizer):
    r"""Fromage (Bernstein et al., 2020): steps of relative size ``lr`` per parameter (``optax.fromage``).

    With ``b`` the heavy-ball buffer of ``g`` (``b = g`` when ``momentum == 0``)::

        b = momentum * b + g
        p = (p - lr * ||p|| / ||b|| * b) / sqrt(1 + lr²)      (norms at least 1e-6)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([3.0, 4.0]))
    >>> opt = stateopt.Fromage(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([0.0, 1.0])})
    >>> [round(x, 4) for x in w.value.tolist()]  # (3, 4 - 0.5) / sqrt(1.01)
    [2.9851, 3.4826]
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=1.0),
        Param('momentum', 0.0, open_unit_interval, 'The heavy-ball momentum factor (0: none).'))
    _lr_in_algorithm = True
    slots = {'momentum_buffer': '0.trace'}

    @classmethod
    def _algorithm(cls, hp):
        return negated(optax.chain(optax.trace(decay=hp['momentum']), optax.fromage(hp['lr'])))
