"""The base of every stateopt optimizer (braintools' ``Optimizer``)."""

from __future__ import annotations

from typing import Any

__all__ = ['Optimizer']


class Optimizer:
    """Base of the optimizers: ``register_trainable_weights(states)`` and ``update(grads)``.

    :class:`stateopt.OptaxOptimizer` (every gradient-step optimizer) and
    :class:`stateopt.ScipyOptimizer` derive from it, as braintools' ``Optimizer``.

    Examples
    --------
    >>> import stateopt
    >>> isinstance(stateopt.Adam(), stateopt.Optimizer)
    True
    """

    __module__ = 'stateopt'

    def register_trainable_weights(self, states: Any = None, **kwargs: Any) -> Any:
        """Register the States to optimize (each optimizer implements it)."""
        raise NotImplementedError(f'{type(self).__name__} does not implement register_trainable_weights')

    def update(self, grads: Any = None, **kwargs: Any) -> Any:
        """Apply one step from the gradients ``grads`` (each optimizer implements it)."""
        raise NotImplementedError(f'{type(self).__name__} does not implement update')
