"""What the black-box searches share: registered States, and no gradient step."""

from __future__ import annotations

from typing import Any

from .._base import Optimizer
from .._state import UniqueStateManager

__all__ = ['Search']


class Search(Optimizer):
    """A search run whole by ``minimize``, over registered States or a box of bounds.

    Examples
    --------
    >>> import stateopt
    >>> issubclass(stateopt.ScipyOptimizer, stateopt.search._base.Search)
    True
    """

    param_states: UniqueStateManager

    def register_trainable_weights(self, states: Any = None, *, param_states: Any = None) -> Any:
        """Register the States to search over (``param_states`` is braintools' name); return ``self``.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.zeros(2))
        >>> opt = stateopt.ScipyOptimizer(lambda: jnp.sum(w.value ** 2))
        >>> opt.register_trainable_weights({'w': w}).param_states.num_unique_states
        1
        """
        if (states is None) == (param_states is None):
            raise TypeError('register_trainable_weights takes the States: states or param_states=, '
                            'one of them')
        self.param_states.merge_with(states if param_states is None else param_states)
        return self

    def update(self, grads: Any = None) -> None:
        """Not a gradient-step optimizer: call ``minimize``, which runs the whole search."""
        raise NotImplementedError(f'{type(self).__name__} runs a whole search per call: use minimize(), '
                                  f'not update()')
