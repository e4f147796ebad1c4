"""Optimizer-owned States and the identity-unique registry of trainable States."""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import brainstate
import jax
import numpy as np

from ._donation import RAW, FlagsReads, store_raw

__all__ = ['OptimState', 'UniqueStateManager', 'param_name']

KeyPath = tuple[Hashable, ...]


class ReadableKeyError(KeyError):
    """A ``KeyError`` whose message reads as written.

    A plain ``KeyError`` shows its message in quotes (``str(KeyError('m'))`` is
    ``"'m'"``); this one shows the sentence. stateopt raises it for missing or
    unknown keys (of grads, param groups, registries and state dicts).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class OptimState(FlagsReads, brainstate.LongTermState):
    """A :class:`brainstate.LongTermState` owned by an optimizer or a scheduler.

    It holds what persists between steps but is not trained: moments, step counts,
    per-group hyper-parameters, scheduler counters. Being a State, it is traced by
    ``brainstate.transform.jit`` and captured by checkpoints.

    Every read through ``.value`` is flagged: the reader may keep the value, so the
    optimizer's in-place (donating) steps copy that value's arrays instead of reusing
    their buffers, and no array a caller holds becomes invalid.

    A State holding one number (a step count, a scheduler's ``last_epoch``) prints
    that number and converts with ``int()``, ``float()`` and as an index when it is
    concrete; inside ``jit`` its value is traced, and the conversions raise
    ``TypeError``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import stateopt
    >>> count = stateopt.OptimState(jnp.zeros((), jnp.int32))
    >>> count.value = count.value + 1
    >>> int(count)
    1
    >>> count
    OptimState(value=1)
    """

    __module__ = 'stateopt'

    def __repr__(self) -> str:
        value = RAW(self)
        if _is_concrete_scalar(value):     # a counter shows its number
            return f'{type(self).__name__}(value={np.asarray(value).item()!r})'
        return super().__repr__()


    def _scalar(self, kind: str) -> Any:
        value = self.value
        if isinstance(value, jax.core.Tracer):
            raise TypeError(f'{kind}() of an OptimState whose value is traced (inside jit): its number '
                            f'is known only when the compiled function runs; use .value as an array there')
        if not _is_concrete_scalar(value):
            raise TypeError(f'{kind}() needs an OptimState holding one number; this one holds '
                            f'{jax.tree.map(np.shape, value)!r}')
        return np.asarray(value).item()

    def __int__(self) -> int:
        return int(self._scalar('int'))

    def __float__(self) -> float:
        return float(self._scalar('float'))

    def __index__(self) -> int:
        number = self._scalar('index')
        if not isinstance(number, int) or isinstance(number, bool):
            raise TypeError(f'an OptimState holding {number!r} is not an integer; use int() or float()')
        return number


def _is_concrete_scalar(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.ndim(value) == 0 \
        and not isinstance(value, jax.core.Tracer)


def path_key(entry: Any) -> Hashable:
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


def shown_key(path: KeyPath) -> str:
    """A path as the caller wrote its key: the bare key for one level."""
    return repr(path[0]) if len(path) == 1 else repr(path)


def is_state(x: Any) -> bool:
    """Whether ``x`` is a brainstate State (a leaf for tree functions over States)."""
    return isinstance(x, brainstate.State)


def flatten_states(tree: Any) -> list[tuple[KeyPath, brainstate.State]]:
    """``(key path, State)`` pairs of a pytree whose leaves must all be States.

    Raises
    ------
    TypeError
        If a leaf is not a ``brainstate.State``; the error names its key.
    """
    if is_state(tree):
        raise TypeError(
            'expected a dict (or FlattedDict) of brainstate States, got a single State; '
            "wrap it with a key, e.g. {'w': state}"
        )
    pairs = []
    for key, leaf in leaves_with_keys(tree):
        if not is_state(leaf):
            raise TypeError(
                f'the entry at key {shown_key(key)} is a {type(leaf).__name__}, not a '
                f'brainstate.State; register States, e.g. model.states(brainstate.ParamState)'
            )
        pairs.append((key, leaf))
    return pairs


def leaves_with_keys(tree: Any) -> list[tuple[KeyPath, Any]]:
    """``(key path, leaf)`` of ``tree``, States being leaves, in JAX's order.

    A dict whose keys JAX cannot sort (strings beside tuples, as braintools' documented
    ``model.states()`` plus ``{'special': state}`` gives) is walked in its own order.
    """
    try:
        leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_state)[0]
    except (TypeError, ValueError):  # jax raises ValueError("Comparator raised exception ...")
        if not isinstance(tree, Mapping):
            raise
        return [((key, *path), leaf) for key, sub in tree.items() for path, leaf in leaves_with_keys(sub)]
    return [(tuple(path_key(entry) for entry in path), leaf) for path, leaf in leaves]


class UniqueStateManager:
    """An ordered registry of States, unique by identity, under the caller's keys.

    The registry keeps every State once, however often it is reachable, under the key
    it was first registered with: tuple keys from ``model.states()`` stay tuple keys,
    nested dicts stay nested. A State is never dropped: two different States that
    would share a key, or whose keys print to the same name (see :func:`param_name`),
    raise ``KeyError`` naming the key, and nothing is registered.

    It also answers braintools' API (``make_unique``, ``num_unique_states``,
    ``unique_paths``, ``unique_states``, ``to_dict``, ``to_dict_value``,
    ``get_flattened``, ``get_state_by_path``, ``update_state``, ``clear``;
    ``merge_with`` returns the manager). Paths are tuples of the caller's keys
    (``('l1', 'weight')``), and ``to_dict`` keys are :func:`param_name` strings
    (``'l1.weight'``); a path given to ``get_state_by_path`` or ``update_state`` may also
    be a JAX key path or such a string.

    Parameters
    ----------
    states : pytree of State, optional
        A dict, ``brainstate.util.FlattedDict`` or nested dict of States to register.
    pytree : pytree of State, optional
        braintools' name for ``states``; give one of the two.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.ones(3))
    >>> manager = stateopt.UniqueStateManager({('layer', 'w'): w, ('shared', 'w'): w})
    >>> list(manager.to_pytree())  # the first key in flattening (sorted) order
    [('layer', 'w')]
    >>> manager.num_unique_states, list(manager.to_dict())
    (1, ['layer.w'])
    """

    __module__ = 'stateopt'

    def __init__(self, states: Any = None, *, pytree: Any = None):
        if states is not None and pytree is not None:
            raise TypeError('UniqueStateManager takes states or pytree (its braintools name), not both')
        states = pytree if states is None else states
        self._paths: list[KeyPath] = []
        self._states: list[brainstate.State] = []
        self._index: dict[int, int] = {}      # id(state) -> position
        self._by_path: dict[KeyPath, int] = {}
        self._by_name: dict[str, int] = {}
        self._names: list[str] = []           # param_name of each path, in registration order
        self._prefixes: set[KeyPath] = set()  # proper prefixes of registered paths
        self._aliases: dict[KeyPath, int] = {}      # further keys of registered States
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
                raise ReadableKeyError(
                    f'two different States are registered under the key {shown_key(path)}; '
                    f'register them under distinct keys (for example from a common parent '
                    f'module) so that neither is dropped'
                )
            nested = path in self._prefixes or any(
                path[:cut] in self._by_path or path[:cut] in paths for cut in range(1, len(path))
            )
            if nested:
                raise ReadableKeyError(
                    f'the key {shown_key(path)} and another registered key are nested in each '
                    f'other, so one State would hide the other; register them under sibling keys'
                )
            other = self._by_name.get(name)
            other_path = self._paths[other] if other is not None else names.get(name)
            if other_path is not None:
                raise ReadableKeyError(
                    f'the keys {shown_key(other_path)} and {shown_key(path)} both name the parameter '
                    f'{name!r}; rename one so that state dicts and checkpoints can tell them apart'
                )
            seen[id(state)] = path
            paths[path] = state
            names[name] = path
            new.append((path, state))
        return new

    def merge_with(self, states: Any) -> UniqueStateManager:
        """Register the States of ``states`` not registered yet; return this manager.

        States already registered keep their key and position. On a collision nothing
        is registered (see :meth:`plan_merge`, which lists what would be added).
        """
        for path, state in self.plan_merge(states):
            self._add(path, state)
        self.note_aliases(states)
        return self

    def note_aliases(self, states: Any) -> None:
        """Remember the further keys under which ``states`` reach registered States.

        A State reachable under two keys (tied weights: ``{'a': s, 'b': s}``) is
        registered once, under the first; brainstate's ``grad`` gives it its whole
        gradient under each key, so the other keys are accepted in ``grads`` and
        their gradient is not applied a second time (see :attr:`aliases`). A key that
        a registered State or another key's nesting already uses is not noted.
        """
        for path, state in flatten_states(states):
            position = self._index.get(id(state))
            if position is None or path in self._by_path or path in self._prefixes or any(
                    path[:cut] in self._by_path for cut in range(1, len(path))):
                continue
            self._aliases.setdefault(path, position)

    def _add(self, path: KeyPath, state: brainstate.State) -> None:
        position = len(self._states)
        if self._aliases:   # a registered key is no longer free to be an alias, nor nested with one
            self._aliases = {alias: at for alias, at in self._aliases.items()
                             if alias[:len(path)] != path and path[:len(alias)] != alias}
        self._paths.append(path)
        self._states.append(state)
        self._index[id(state)] = position
        self._by_path[path] = position
        self._by_name[param_name(path)] = position
        self._names.append(param_name(path))
        self._prefixes.update(path[:cut] for cut in range(1, len(path)))

    def _truncate(self, count: int) -> None:
        """Forget every State registered after the first ``count`` (undo a failed registration)."""
        pairs, aliases = list(zip(self._paths, self._states))[:count], self._aliases
        self.__init__()
        for path, state in pairs:
            self._add(path, state)
        self._aliases = {alias: at for alias, at in aliases.items() if at < count}

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
    def aliases(self) -> dict[KeyPath, int]:
        """``{key path: position}`` of the further keys of registered States (tied weights)."""
        return dict(self._aliases)

    @property
    def names(self) -> tuple[str, ...]:
        """The :func:`param_name` of every registered State."""
        return tuple(self._names)

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

    # -- braintools' names ------------------------------------------------------------
    def make_unique(self, pytree: Any) -> dict:
        """Register exactly the States of ``pytree`` (forgetting earlier ones); return them unique.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.ones(2))
        >>> list(stateopt.UniqueStateManager().make_unique({'a': w, 'b': w}))
        ['a']
        """
        fresh = UniqueStateManager(pytree)
        vars(self).update(vars(fresh))
        return self.to_pytree()

    @property
    def seen_ids(self) -> set[int]:
        """The ``id`` of every registered State (braintools' ``seen_ids``; a new set).

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.ones(2))
        >>> id(w) in stateopt.UniqueStateManager({'w': w}).seen_ids
        True
        """
        return set(self._index)

    @property
    def pytree_structure(self) -> Any:
        """The JAX tree structure of :meth:`to_pytree`, or ``None`` while nothing is registered.

        Examples
        --------
        >>> import stateopt
        >>> stateopt.UniqueStateManager().pytree_structure is None
        True
        """
        if not self._states:
            return None
        try:
            return jax.tree.structure(self.to_pytree(), is_leaf=is_state)
        except (TypeError, ValueError):   # keys JAX cannot order (str beside tuple): no JAX structure
            return None

    @property
    def num_unique_states(self) -> int:
        """How many States are registered."""
        return len(self._states)

    @property
    def unique_paths(self) -> list[KeyPath]:
        """The key paths, in registration order (a list: braintools' form of :attr:`paths`)."""
        return list(self._paths)

    @property
    def unique_states(self) -> list[brainstate.State]:
        """The States, in registration order (a list: braintools' form of :attr:`states`)."""
        return list(self._states)

    def get_flattened(self) -> list[tuple[KeyPath, brainstate.State]]:
        """``[(path, State), ...]`` in registration order."""
        return list(zip(self._paths, self._states))

    @property
    def flattened_states(self) -> list[tuple[KeyPath, brainstate.State]]:
        """braintools' name for :meth:`get_flattened` (a new list).

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.ones(2))
        >>> len(stateopt.UniqueStateManager({'a': w, 'b': w}).flattened_states)
        1
        """
        return self.get_flattened()

    def to_dict(self) -> dict[str, brainstate.State]:
        """``{param_name(path): State}`` in registration order."""
        return dict(zip(self.names, self._states))

    def to_dict_value(self) -> dict[str, Any]:
        """``{param_name(path): State.value}`` in registration order."""
        return {name: state.value for name, state in zip(self.names, self._states)}

    def get_state_by_path(self, path: Any) -> brainstate.State | None:
        """The State registered under ``path`` (a key tuple, a JAX key path or a name), or None.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.ones(2))
        >>> manager = stateopt.UniqueStateManager({('l1', 'w'): w})
        >>> manager.get_state_by_path((('l1', 'w'),)) is manager.get_state_by_path('l1.w') is w
        True
        """
        position = self._find(path)
        return None if position is None else self._states[position]

    def update_state(self, path: Any, new_state: brainstate.State) -> bool:
        """Put ``new_state`` in place of the State registered under ``path``; False if none is.

        Raises
        ------
        TypeError
            ``new_state`` is not a State.
        ValueError
            ``new_state`` is already registered under another key (a State is registered
            once). Nothing changes.
        """
        if not isinstance(new_state, brainstate.State):
            raise TypeError(f'update_state needs a brainstate State, got {type(new_state).__name__}')
        position = self._find(path)
        if position is None:
            return False
        other = self._index.get(id(new_state))
        if other is not None and other != position:
            raise ValueError(f'the State is already registered under {shown_key(self._paths[other])}; '
                             f'a State is registered once')
        del self._index[id(self._states[position])]
        self._states[position] = new_state
        self._index[id(new_state)] = position
        return True

    def clear(self) -> None:
        """Forget every registered State."""
        self.__init__()

    def _find(self, path: Any) -> int | None:
        """The position registered under ``path``: a key tuple, a JAX key path or a param name."""
        if isinstance(path, str):
            return self._by_name.get(path)
        if not isinstance(path, tuple):
            path = (path,)
        for candidate in (path, tuple(path_key(entry) for entry in path), (path,)):
            if candidate in self._by_path:
                return self._by_path[candidate]
        return None


def deepcopy_owning_states(obj: Any, memo: dict, caches: tuple[str, ...] = ()) -> Any:
    """``copy.deepcopy(obj)`` for an object that holds brainstate States.

    Every State reachable from ``obj`` (through containers and stateopt objects) is
    copied as a State of its own with copied arrays, so the copy shares no State
    and no buffer with the original; attributes named in ``caches`` start empty.
    brainstate States cannot be deep-copied by pickling (they keep tracebacks).
    """
    for state in _reachable_states(obj):
        if id(state) not in memo:
            twin = state.copy()
            store_raw(twin, jax.tree.map(_copied, RAW(state)))
            memo[id(state)] = twin
    twin = object.__new__(type(obj))
    memo[id(obj)] = twin
    for name, value in vars(obj).items():
        vars(twin)[name] = None if name in caches else copy.deepcopy(value, memo)
    return twin


def _copied(leaf: Any) -> Any:
    return leaf.copy() if isinstance(leaf, (jax.Array, np.ndarray)) else copy.deepcopy(leaf)


def _reachable_states(root: Any) -> list:
    """The brainstate States reachable from ``root`` through containers and stateopt objects."""
    found, seen, stack = [], set(), [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, brainstate.State):
            found.append(node)
        elif type(node).__module__.startswith('stateopt') and hasattr(node, '__dict__'):
            stack.extend(vars(node).values())
        elif isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set, frozenset)):
            stack.extend(node)
    return found


def unflatten(paths: list[KeyPath] | tuple[KeyPath, ...], leaves: list | tuple) -> dict:
    """Nested dicts holding ``leaves`` at ``paths``."""
    tree: dict = {}
    for path, leaf in zip(paths, leaves):
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return tree
