"""Weight-decay masks: which parameters the shared chain decays (never which ones the algorithm updates)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._state import leaves_with_keys, param_name

__all__ = ['decay_matrices_only', 'decay_mask_value', 'resolve_decay_mask', 'decay_mask_fn']


def decay_matrices_only(name: str, value: Any) -> bool:
    """Decay only arrays of two or more dimensions: weight matrices and kernels, not biases or norm scales.

    The usual recipe for transformers (AdamW with ``weight_decay_mask=decay_matrices_only``).

    Parameters
    ----------
    name : str
        The array's name (``'l1.weight.bias'``: the State's name, then the keys inside its value).
    value : array
        The array (its number of dimensions decides).

    Examples
    --------
    >>> import jax.numpy as jnp, stateopt
    >>> stateopt.decay_matrices_only('l1.weight', jnp.zeros((3, 4)))
    True
    >>> stateopt.decay_matrices_only('l1.bias', jnp.zeros(4))
    False
    """
    del name
    return jnp.ndim(value) >= 2


def decay_mask_value(name: str, value: Any) -> Any:
    """The check of ``weight_decay_mask``: ``None``, a function, or a dict tree of ``True``/``False``."""
    if value is None or callable(value):
        return value
    if isinstance(value, Mapping):
        leaves = [leaf for _, leaf in leaves_with_keys(value)]
        if leaves and all(isinstance(leaf, (bool, np.bool_)) for leaf in leaves):
            return value
    raise ValueError(f'{name} must be None, a function (param_name, value) -> bool such as '
                     f'stateopt.decay_matrices_only, or a dict of True/False keyed like the registered '
                     f'States; got {value!r}')


def resolve_decay_mask(mask: Callable | Mapping | None, params: Any) -> Any:
    """A pytree of Python bools shaped like ``params``: whether weight decay acts on each array.

    ``params`` is one param group's ``{param name: value}`` (or any pytree, in the
    functional API). Each array is named by its path (``'l1.weight'`` and, inside a
    State holding a dict, ``'l1.weight.bias'``). A function is called with that name and
    the array and must decide from the name, shape and dtype; a dict mask is read at the
    array's name, or else at its State's (the first key of the path).

    Raises
    ------
    ValueError
        A dict mask with no entry for an array, or a function whose answer depends on
        the array's numbers (unknown while the step is traced).
    """
    treedef = jax.tree.structure(params)
    leaves = leaves_with_keys(params)
    if mask is None:
        return treedef.unflatten([True] * len(leaves))
    flat = None if callable(mask) else {param_name(path): bool(leaf) for path, leaf in leaves_with_keys(mask)}
    decided = []
    for keys, leaf in leaves:
        name, owner = param_name(keys), param_name(keys[:1])
        if flat is not None:
            if name not in flat and owner not in flat:
                raise ValueError(f'weight_decay_mask has no entry for {owner!r}'
                                 f'{f" (nor for {name!r})" if name != owner else ""}; give True or False '
                                 f'for every registered State, or pass a function '
                                 f'(param_name, value) -> bool')
            decided.append(flat.get(name, flat.get(owner)))
            continue
        answer = mask(name, leaf)
        try:
            decided.append(bool(answer))
        except jax.errors.ConcretizationTypeError:
            raise ValueError(f'weight_decay_mask({name!r}, value) returned a value computed from the '
                             f"parameter's numbers, which a compiled step does not know; decide from the "
                             f'name, shape and dtype (for example stateopt.decay_matrices_only)') from None
    return treedef.unflatten(decided)


def decay_mask_fn(mask: Callable | Mapping | None) -> Callable | None:
    """``mask`` as an optax mask (``params -> tree of bools``), for algorithms that decay inside.

    ``optax.add_decayed_weights(weight_decay, mask=decay_mask_fn(hp['weight_decay_mask']))``
    decays the arrays the optimizer's ``weight_decay_mask`` selects; ``None`` stays ``None``.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> from stateopt._decay import decay_mask_fn, decay_matrices_only
    >>> tx = optax.add_decayed_weights(0.5, mask=decay_mask_fn(decay_matrices_only))
    >>> params = {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)}
    >>> updates, _ = tx.update({'w': jnp.zeros((2, 2)), 'b': jnp.zeros(2)}, tx.init(params), params)
    >>> updates['w'].tolist(), updates['b'].tolist()
    ([[0.5, 0.5], [0.5, 0.5]], [0.0, 0.0])
    """
    if mask is None:
        return None
    return lambda params: resolve_decay_mask(mask, params)
