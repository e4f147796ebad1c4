"""Optimizer-owned States and the identity-unique registry of trainable States."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import brainstate
import jax

__all__ = ['OptimState', 'UniqueStateManager', 'param_name']

KeyPath = tuple[Hashable, ...]


class OptimState(brainstate.LongTermState):
    """A :class:`brainstate.LongTermState` owned by an optimizer or a scheduler.

    It holds what persists between steps but is not trained: moments, step counts,
    per-group hyper-parameters, scheduler counters. Being a State, it is traced by
    ``brainstate.transform.jit`` and captured by checkpoints.

    Every read through ``.value`` is flagged: the reader may keep the value, so the
    optimizer's in-place (donating) steps copy that value's arrays instead of reusing
    their buffers, and no array a caller holds becomes invalid.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import stateopt
    >>> count = stateopt.OptimState(jnp.zeros((), jnp.int32))
    >>> count.value = count.value + 1
    >>> int(count.value)
    1
    """

    __module__ = 'stateopt'
    #: Reads set the ``_exposed`` flag (see stateopt._donation).
    _flags_reads = True

    def _read_value(self):
        vars(self)['_exposed'] = True
        return super()._read_value()


def _path_entry(entry: Any) -> Hashable:
    """The raw key of one ``jax.tree_util`` path entry."""
    for attr in ('key', 'idx', 'name'):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return entry


def param_name(path: KeyPath) -> str:
    """The string name of a registered key path, as used in state dicts and errors.

    Tuple keys (from ``model.states()``) are joined with dots, and so are the levels
    of a nested dict, so ``(('l1', 'weight'),)`` and ``('l1', 'weight')`` both name
    ``'l1.weight'``.

    Examples
    --------
    >>> from stateopt import param_name
    >>> param_name((('l1', 'weight'),))
    'l1.weight'
    >>> param_name(('encoder', 0, 'bias'))
    'encoder.0.bias'
    """
    parts = []
    for key in path:
        if isinstance(key, tuple):
            parts.extend(str(k) for k in key)
        else:
            parts.append(str(key))
    return '.'.join(parts)


def _show(path: KeyPath) -> str:
    """A path as the caller wrote its key: the bare key for one level."""
    return repr(path[0]) if len(path) == 1 else repr(path)


def _is_state(x: Any) -> bool:
    return isinstance(x, brainstate.State)


def flatten_states(tree: Any) -> list[tuple[KeyPath, brainstate.State]]:
    """``(key path, State)`` pairs of a pytree whose leaves must all be States.

    Raises
    ------
    TypeError
        If a leaf is not a ``brainstate.State``; the error names its key.
    """
    if _is_state(tree):
        raise TypeError(
            'expected a dict (or FlattedDict) of brainstate States, got a single State; '
            "wrap it with a key, e.g. {'w': state}"
        )
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_state)[0]
    pairs = []
    for path, leaf in leaves:
        key = tuple(_path_entry(entry) for entry in path)
        if not _is_state(leaf):
            raise TypeError(
                f'the entry at key {_show(key)} is a {type(leaf).__name__}, not a '
                f'brainstate.State; register States, e.g. model.states(brainstate.ParamState)'
            )
        pairs.append((key, leaf))
    return pairs


class UniqueStateManager:
    """An ordered registry of States, unique by identity, under the caller's keys.

    The registry keeps every State once, however often it is reachable, under the key
    it was first registered with: tuple keys from ``model.states()`` stay tuple keys,
    nested dicts stay nested. A State is never dropped: two different States that
    would share a key, or whose keys print to the same name (see :func:`param_name`),
    raise ``KeyError`` naming the key, and nothing is registered.

    Parameters
    ----------
    states : pytree of State, optional
        A dict, ``brainstate.util.FlattedDict`` or nested dict of States to register.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.ones(3))
    >>> manager = stateopt.UniqueStateManager({('layer', 'w'): w, ('shared', 'w'): w})
    >>> list(manager.to_pytree())  # the first key in flattening (sorted) order
    [('layer', 'w')]
    """

    __module__ = 'stateopt'

    def __init__(self, states: Any = None):
        self._paths: list[KeyPath] = []
        self._states: list[brainstate.State] = []
        self._index: dict[int, int] = {}      # id(state) -> position
        self._by_path: dict[KeyPath, int] = {}
        self._by_name: dict[str, int] = {}
        self._prefixes: set[KeyPath] = set()  # proper prefixes of registered paths
        self._key_types: dict[KeyPath, type] = {}  # prefix -> type of the keys below it
        if states is not None:
            self.merge_with(states)

    def plan_merge(self, states: Any) -> list[tuple[KeyPath, brainstate.State]]:
        """The ``(path, State)`` pairs that :meth:`merge_with` would add, checked.

        Nothing is changed; a collision raises ``KeyError`` naming the key.
        """
        new: list[tuple[KeyPath, brainstate.State]] = []
        seen: dict[int, KeyPath] = {}
        paths: dict[KeyPath, brainstate.State] = {}
        names: dict[str, KeyPath] = {}
        for path, state in flatten_states(states):
            if id(state) in self._index or id(state) in seen:
                continue
            name = param_name(path)
            clash = self._by_path.get(path)
            if clash is not None or path in paths:
                raise KeyError(
                    f'two different States are registered under the key {_show(path)}; '
                    f'register them under distinct keys (for example from a common parent '
                    f'module) so that neither is dropped'
                )
            nested = path in self._prefixes or any(
                path[:cut] in self._by_path or path[:cut] in paths for cut in range(1, len(path))
            )
            if nested:
                raise KeyError(
                    f'the key {_show(path)} and another registered key are nested in each '
                    f'other, so one State would hide the other; register them under sibling keys'
                )
            for cut in range(len(path)):
                level_type = self._key_types.get(path[:cut], type(path[cut]))
                if level_type is not type(path[cut]):
                    raise KeyError(
                        f'the key {_show(path)} puts a {type(path[cut]).__name__} key beside '
                        f'{level_type.__name__} keys, which JAX cannot order in one dict; use keys '
                        f'of one type per level (for example tuple keys, as model.states() gives)'
                    )
            other = self._by_name.get(name)
            other_path = self._paths[other] if other is not None else names.get(name)
            if other_path is not None:
                raise KeyError(
                    f'the keys {_show(other_path)} and {_show(path)} both name the parameter '
                    f'{name!r}; rename one so that state dicts and checkpoints can tell them apart'
                )
            seen[id(state)] = path
            paths[path] = state
            names[name] = path
            new.append((path, state))
        return new

    def merge_with(self, states: Any) -> list[tuple[KeyPath, brainstate.State]]:
        """Register the States of ``states`` not registered yet; return the new pairs.

        States already registered keep their key and position. On a collision nothing
        is registered.
        """
        new = self.plan_merge(states)
        for path, state in new:
            self._add(path, state)
        return new

    def _add(self, path: KeyPath, state: brainstate.State) -> None:
        position = len(self._states)
        self._paths.append(path)
        self._states.append(state)
        self._index[id(state)] = position
        self._by_path[path] = position
        self._by_name[param_name(path)] = position
        self._prefixes.update(path[:cut] for cut in range(1, len(path)))
        for cut in range(len(path)):
            self._key_types.setdefault(path[:cut], type(path[cut]))

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[tuple[KeyPath, brainstate.State]]:
        return iter(zip(self._paths, self._states))

    def __contains__(self, state: Any) -> bool:
        return id(state) in self._index

    @property
    def paths(self) -> tuple[KeyPath, ...]:
        """The key path of every registered State, in registration order."""
        return tuple(self._paths)

    @property
    def states(self) -> tuple[brainstate.State, ...]:
        """The registered States, in registration order."""
        return tuple(self._states)

    @property
    def names(self) -> tuple[str, ...]:
        """The :func:`param_name` of every registered State."""
        return tuple(param_name(path) for path in self._paths)

    def position(self, state: brainstate.State) -> int:
        """The registration position of ``state`` (found by identity)."""
        return self._index[id(state)]

    def path_of(self, state: brainstate.State) -> KeyPath:
        """The key path ``state`` is registered under (found by identity)."""
        return self._paths[self._index[id(state)]]

    def to_pytree(self) -> dict:
        """The registered States under their keys, nested as they were registered."""
        return unflatten(self._paths, self._states)

    def to_pytree_value(self) -> dict:
        """Like :meth:`to_pytree`, with each State replaced by its value."""
        return unflatten(self._paths, [state.value for state in self._states])


def unflatten(paths: list[KeyPath] | tuple[KeyPath, ...], leaves: list | tuple) -> dict:
    """Nested dicts holding ``leaves`` at ``paths``."""
    tree: dict = {}
    for path, leaf in zip(paths, leaves):
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return tree
