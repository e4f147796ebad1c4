"""The base of every stateopt optimizer (braintools' ``Optimizer``)."""

from __future__ import annotations

import inspect
from typing import Any

import brainstate

__all__ = ['Optimizer', 'NodeMeta']


class NodeMeta(type(brainstate.graph.Node)):
    """brainstate's graph-node metaclass, keeping each class's constructor signature for ``inspect``.

    brainstate's metaclass defines ``__call__(cls, *args, **kwargs)``, which ``inspect.signature``
    would report for every class; the signature of ``__init__`` (without ``self``) is the real one.
    """

    @property
    def __signature__(cls) -> inspect.Signature:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        return inspect.Signature(params)


class Optimizer(brainstate.graph.Node, metaclass=NodeMeta):
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

    def __init__(self) -> None:
        """A new optimizer; subclasses take their hyper-parameters."""

    def register_trainable_weights(self, states: Any = None, **kwargs: Any) -> Any:
        """Register the States to optimize (each optimizer implements it)."""
        raise NotImplementedError(f'{type(self).__name__} does not implement register_trainable_weights')

    def update(self, grads: Any = None, **kwargs: Any) -> Any:
        """Apply one step from the gradients ``grads`` (each optimizer implements it)."""
        raise NotImplementedError(f'{type(self).__name__} does not implement update')
