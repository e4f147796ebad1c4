"""Reusing (donating) State buffers in compiled calls without invalidating the caller's arrays.

A compiled step that donates its inputs lets XLA write the new parameters and moments
into the buffers of the old ones: a memory-bound update then moves half the memory.
A donated array is deleted, so only arrays nobody else holds may be donated. Two
signals tell them apart, both cheap enough to take on every step:

- reference counts: a State's value is referenced by the State (and a leaf by its
  container); any further reference belongs to the caller. The counts are taken in
  C-level loops, against expectations worked out once per structure;
- for the optimizer's own States (:class:`~stateopt.OptimState`), a flag set by every
  read through ``.value``: whoever read the value may keep any container of it; and
  the reference count of the whole value, which brainstate's ``copy()``, ``replace()``
  and ``to_state_ref()`` share without reading ``.value``.

Whatever the caller may hold is copied before the call; the rest is donated.

This module is the only one that reads or writes brainstate's internals (a State's
stored value, its hooks, its read path); the rest of stateopt goes through the names
it exports: :data:`RAW`, :func:`store_raw`, :func:`write_back`, :class:`FlagsReads`.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Sequence
from typing import Any

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

from ._trace import at_top_level, is_traced

__all__ = ['RAW', 'DonationGuard', 'FlagsReads', 'flags_reads', 'owned_leaves', 'store_leaves', 'store_raw',
           'release_raw', 'stored_elsewhere', 'released', 'write_back', 'write_back_all', 'mark_unread',
           'held_elsewhere']

#: A State's stored value, read without trace recording or hooks.
RAW = operator.attrgetter('_value')


def _hook_flag() -> operator.attrgetter | None:
    """A C-level read of a State's "has hooks" flag, if this brainstate keeps one."""
    getter = operator.attrgetter('_hooks_manager._has_hooks')
    try:
        state = brainstate.State(jnp.zeros(()))
        before = getter(state)
        handle = state.register_hook('write_after', lambda ctx: None)
        after = getter(state)
        state.unregister_hook(handle)
    except (AttributeError, TypeError):
        return None
    return getter if (before, after) == (False, True) else None


#: Whether a State has hooks: the flag where brainstate keeps one, else the public method.
_has_hooks = _hook_flag() or brainstate.State.has_hooks


def _calibrate() -> tuple[int, int, int]:
    """References the guard sees when nobody but the States holds anything.

    Returns the counts for a State's value in a list of values, for a leaf of a
    container value, and for a bare-array value, in a list of leaves. Measured on this
    interpreter through the code path the guard uses, whatever it counts on its stack.
    """
    container = brainstate.State({'leaf': jnp.zeros(())})
    bare = brainstate.State(jnp.zeros(()))
    values = [RAW(container), RAW(bare)]
    value_refs = next(map(sys.getrefcount, values))
    leaves = jax.tree.leaves(values)
    leaf_refs, direct_refs = map(sys.getrefcount, leaves)
    return value_refs, leaf_refs, direct_refs


_VALUE_REFS, _LEAF_REFS, _DIRECT_REFS = _calibrate()


def _calibrate_root() -> int:
    """References :func:`owned_leaves` sees on a container value nobody else holds.

    The value is held by its State, by the cached ``(value, leaves)`` pair and by the
    local name; the count is taken the way :func:`owned_leaves` takes it.
    """
    state = brainstate.State({'leaf': jnp.zeros(())})
    value = RAW(state)
    vars(state)['_leaves'] = (value, jax.tree.leaves(value))
    return sys.getrefcount(value)


_ROOT_REFS = _calibrate_root()


class FlagsReads:
    """A State that flags every read of its value (the optimizer's own States mix this in).

    A read through ``.value`` sets the ``_exposed`` flag: whoever read the value may keep
    any container of it, so it is copied before a donating call; writing through the
    donation layer clears it. A read inside a brainstate trace gives tracers, which
    hold no buffer, and leaves the flag as it is: compiling a train step that reads
    the optimizer's state does not make its first call copy that state.
    """

    def _read_value(self):
        value = super()._read_value()
        if at_top_level() or not is_traced(value):
            vars(self)['_exposed'] = True
        return value

    def __pretty_repr_item__(self, key, value):
        if key in ('_exposed', '_leaves'):    # this layer's bookkeeping
            return None
        return super().__pretty_repr_item__(key, value)


def flags_reads(state: brainstate.State) -> bool:
    """Whether ``state`` is one of the optimizer's own States, which flag every read."""
    return isinstance(state, FlagsReads)


def _exposed(state: brainstate.State) -> bool:
    """Whether the value of one of the optimizer's own States was read since it was last written."""
    return vars(state).get('_exposed', True)


class DonationGuard:
    """Finds, cheaply per call, the parts of some States' values the caller still holds.

    Built for a fixed list of States and the structure of their values (which are bare
    arrays, which are containers, which containers nest others); :meth:`protect` then
    compares the reference counts of the values and of their leaves with what the
    States alone hold, and replaces a held value by a copy. A flat container or a bare
    array costs C-level counts only. Containers nested inside containers are walked in
    Python, except in the values of the optimizer's own States, where the read flag
    covers them.
    """

    def __init__(self, states: Sequence[brainstate.State], values: Sequence[Any]):
        self.treedef = jax.tree.structure(list(values))
        self.flagged = np.asarray([flags_reads(state) for state in states], bool)
        expected, owner, arrays = [], [], []
        self.nested = []     # indices of values with containers inside containers
        for index, value in enumerate(values):
            leaves = jax.tree.leaves(value)
            direct = len(leaves) == 1 and leaves[0] is value
            expected.extend([_DIRECT_REFS if direct else _LEAF_REFS] * len(leaves))
            owner.extend([index] * len(leaves))
            arrays.extend(isinstance(leaf, jax.Array) for leaf in leaves)
            if not direct and not self.flagged[index] and any(
                    _children(child) is not None for child in _children(value) or ()):
                self.nested.append(index)
        self.expected = np.asarray(expected, np.intp)
        self.owner = np.asarray(owner, np.intp)
        self.arrays = np.asarray(arrays, bool)
        self.containers = np.asarray([not isinstance(v, jax.Array) for v in values], bool)
        self.flagged_indices = np.flatnonzero(self.flagged)
        # the common case, every value a bare array of a plain State: one C-level pass decides
        self.bare_types = (frozenset(map(type, values))
                           if not self.containers.any() and not self.flagged.any() else None)

    def protect(self, states: Sequence[brainstate.State], values: list) -> bool:
        """Copy, in place in ``values``, every value the caller can still reach.

        ``values[i]`` must be ``RAW(states[i])``: held by its State and by ``values``.
        Returns False, changing nothing, if ``values`` do not have the structure the
        guard was built for.
        """
        if (self.bare_types is not None and len(values) == self.owner.size
                and self.bare_types.issuperset(map(type, values))
                and max(map(sys.getrefcount, values), default=0) <= _VALUE_REFS):
            return True
        counts = np.fromiter(map(sys.getrefcount, values), np.intp, len(values))
        leaves, treedef = jax.tree.flatten(values)
        if treedef != self.treedef:
            return False
        held = (counts > _VALUE_REFS) & self.containers
        if leaves:
            leaf_counts = np.fromiter(map(sys.getrefcount, leaves), np.intp, len(leaves))
            held[self.owner[(leaf_counts > self.expected) & self.arrays]] = True
        del leaves
        for index in self.flagged_indices:
            held[index] |= _exposed(states[index])
        for index in self.nested:
            held[index] |= _held_inside(values[index])
        for index in np.flatnonzero(held):
            values[index] = jax.tree.map(_copy, values[index])
        return True

    @classmethod
    def protected(cls, guard: DonationGuard | None, states: Sequence[brainstate.State],
                  values: list) -> DonationGuard:
        """Protect the ``values`` of ``states`` with ``guard``, or a new guard if it does not fit."""
        if guard is None or not guard.protect(states, values):
            guard = cls(states, values)
            guard.protect(states, values)
        return guard


def owned_leaves(state: brainstate.State) -> list:
    """The leaves of an optimizer-owned State's value, safe to donate.

    The list is kept between calls (flattening a large name-keyed state costs more
    than the rest of a step's bookkeeping); leaves the caller may hold are copied.
    """
    value = RAW(state)
    cached = vars(state).get('_leaves')
    if cached is None or cached[0] is not value:
        cached = vars(state)['_leaves'] = (value, jax.tree.leaves(value))
    leaves = cached[1]
    direct = len(leaves) == 1 and leaves[0] is value
    # read through .value, or the whole value held elsewhere: by a copy of the State
    # (``copy()``, ``replace()``, ``to_state_ref()`` share it without reading ``.value``)
    if _exposed(state) or (not direct and sys.getrefcount(value) > _ROOT_REFS):
        return [_copy(leaf) for leaf in leaves]
    del value, cached  # a local name would count as one more holder of a direct leaf
    counts = list(map(sys.getrefcount, leaves))
    # a leaf is held by its container, the cached list and the argument; a value that is its
    # own one leaf, by the State, the cached value, the cached list and the argument
    own = _LEAF_REFS + direct
    if max(counts, default=0) <= own:
        return leaves
    held = np.flatnonzero(np.fromiter(counts, np.intp, len(counts)) > own)
    if held.size:
        leaves = list(leaves)
        for index in held:
            leaves[index] = _copy(leaves[index])
    return leaves


def store_leaves(state: brainstate.State, treedef: Any, leaves: list) -> None:
    """Give an optimizer-owned State the value made of ``leaves``, keeping the list for next time."""
    write_back_all((), (), (state,), (treedef,), (leaves,))


def write_back_all(states: Sequence[brainstate.State], values: Sequence[Any],
                   owned: Sequence[brainstate.State], treedefs: Sequence[Any],
                   leaves: Sequence[list]) -> None:
    """:func:`write_back` of ``values`` into ``states`` and :func:`store_leaves` of ``leaves`` into
    the optimizer-owned States ``owned``, in one pass (one check for hooks)."""
    built = [treedef.unflatten(own) for treedef, own in zip(treedefs, leaves)]
    write_back((*states, *owned), (*values, *built))
    for state, value, own in zip(owned, built, leaves):
        vars(state)['_leaves'] = (value, own)
    mark_unread(owned)


def _copy(leaf: Any) -> Any:
    return jnp.copy(leaf) if isinstance(leaf, jax.Array) else leaf


def _children(node: Any) -> list | None:
    if isinstance(node, dict):
        return list(node.values())
    if isinstance(node, (list, tuple)):
        return list(node)
    return None


def _held_inside(value: Any) -> bool:
    """Whether a container nested in ``value`` is referenced from outside its parent."""
    nodes, stack = [], list(_children(value) or ())
    while stack:
        node = stack.pop()
        children = _children(node)
        if children is not None:
            nodes.append(node)
            stack.extend(children)
        del node
    return bool(nodes) and max(map(sys.getrefcount, nodes)) > _LEAF_REFS


def store_raw(state: brainstate.State, value: Any) -> None:
    """Store ``value`` in ``state`` as :data:`RAW` reads it: no trace records it, no hook runs."""
    vars(state)['_value'] = value
    vars(state).pop('_leaves', None)


#: How many States have given their stored value away (:func:`release_raw`): a cached step
#: that stores values directly checks its States again when this changes.
released = 0


def release_raw(state: brainstate.State) -> Any:
    """Take ``state``'s stored value out of it and return it: its storage moves elsewhere
    (a :class:`stateopt.PackedParams` buffer), and its class then says where."""
    global released
    released += 1
    vars(state).pop('_leaves', None)
    return vars(state).pop('_value')


def stored_elsewhere(state: brainstate.State) -> bool:
    """Whether ``state`` gave its stored value away (:func:`release_raw`): storing into it is void."""
    return '_value' not in vars(state)


def write_back(states: Sequence[brainstate.State], values: Sequence[Any]) -> None:
    """Give ``states`` the new ``values`` a compiled call returned.

    Without State hooks the values are stored directly (outside a trace no
    bookkeeping is needed); with hooks the public setter runs them.
    """
    if brainstate.has_state_hooks() or any(map(_has_hooks, states)):
        for state, value in zip(states, values):
            state.value = value
    else:
        for state, value in zip(states, values):
            vars(state)['_value'] = value


def held_elsewhere(state: brainstate.State) -> bool:
    """Whether a caller may hold some array of an optimizer-owned State's value: it was read
    since it was last written, and its value has arrays to hold."""
    return _exposed(state) and bool(jax.tree.leaves(RAW(state)))


def mark_unread(states: Sequence[brainstate.State]) -> None:
    """Clear the read flag of the optimizer's own States among ``states``: nobody holds a new value."""
    for state in filter(flags_reads, states):
        vars(state)['_exposed'] = False
