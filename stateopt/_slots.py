"""The slots of an optimizer's state: whose each one is, found by structure, and its declared name.

An algorithm's state for one param group is a pytree (an optax state). Some of its
leaves belong to one parameter (Adam's moments), found under a dict keyed by the
group's parameter names; the others belong to the group (a step count). Which dict
that is, is found by structure: the algorithm's state is built once more, abstractly,
for the same values under sentinel keys that no state uses for anything else, and the
leaves under a sentinel key are the parameters'. A parameter named like a key of the
algorithm's own state (``'adam'`` in Muon's) is never mistaken for it.

Each optimizer declares its slot names, ``{name: path in the state}`` (``{'exp_avg':
'0.mu'}``), so that state dicts and checkpoints keep their keys when the algorithm's
state is rearranged. A leaf under a declared path takes the declared name, followed by
the rest of its path (``'exp_avg.weight'`` for a parameter whose value is a dict); an
undeclared one (a ``tx`` given to :class:`stateopt.OptaxOptimizer`) is named by its
path, as state dicts of layout version 1 named every slot.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ['Slot', 'Probes', 'slots_of', 'entry_name', 'LAYOUT_VERSION']

#: The state-dict layout: 1 named every slot by its path in the algorithm's state; 2 by the
#: optimizer's declared slot names.
LAYOUT_VERSION = 2

_SENTINEL = '\x00parameter'


class Slot(NamedTuple):
    """One leaf of a group's state: its owner (a parameter name, or None for the group) and keys."""

    owner: str | None
    key: str          # the key in state dicts: the declared name and the rest of the path
    v1_key: str       # the key in state dicts of layout version 1: the path


class Probes:
    """The abstract builds :func:`slots_of` made, kept for the next group of the same structure.

    An optimizer keeps one (an opaque object: its keys are not a pytree of its own).
    """

    def __init__(self) -> None:
        self.probes: dict = {}


def slots_of(init: Any, values: Mapping[str, Any], state: Any, declared: Mapping[str, str],
             cache: Probes | None = None, key: Hashable = None) -> list[Slot]:
    """The :class:`Slot` of every leaf of ``state``, in ``jax.tree.leaves`` order.

    Parameters
    ----------
    init : callable
        ``init(values) -> state``: what made ``state`` (an optax transform's ``init``).
    values : dict
        ``{param name: value}`` of the group.
    state : pytree
        The group's state.
    declared : dict
        ``{slot name: path in the state}``, as the optimizer declares them.
    cache : Probes, optional
        Where to keep the abstract build of the state, under ``key`` and the values'
        shapes and dtypes, for the next call with the same ``key``.
    key : hashable, optional
        Everything besides the values that decides the structure of the state (the
        hyper-parameters ``init`` is made with); ``None``: build it every time.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> from stateopt._slots import slots_of
    >>> tx = optax.scale_by_adam()
    >>> values = {'w': jnp.zeros(2)}
    >>> [slot.key for slot in slots_of(tx.init, values, tx.init(values), {'exp_avg': 'mu', 'step': 'count'})]
    ['step', 'exp_avg', 'nu']
    """
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    owners = _owners_by_structure(init, values, leaves, cache if key is not None else None, key)
    slots = []
    for (path, _), (owner, at) in zip(leaves, owners):
        entries = [str(entry_name(entry)) for entry in path]
        if owner is None:
            node, rest = entries, []
        else:
            node, rest = entries[:at], entries[at + 1:]
        v1 = '.'.join(node + rest)
        slots.append(Slot(owner, _named('.'.join(node), rest, declared), v1))
    return slots


def _owners_by_structure(init: Any, values: Mapping[str, Any], leaves: list, cache: Probes | None,
                         key: Hashable) -> list[tuple]:
    """``(owner, index of its key in the path)`` of each leaf, or ``(None, None)`` for a group leaf."""
    names = sorted(values)
    sentinels = {f'{_SENTINEL}{i:09d}': name for i, name in enumerate(names)}
    abstract = {sentinel: jax.tree.map(_abstract, values[name]) for sentinel, name in sentinels.items()}
    if cache is not None:   # the probe names the parameters by their rank: it fits any names
        flat, treedef = jax.tree.flatten(abstract)
        key = (key, treedef, tuple((leaf.shape, leaf.dtype) for leaf in flat))
    if cache is not None and key in cache.probes:
        probe = cache.probes[key]
    else:
        try:
            built = jax.eval_shape(init, abstract)
            probe = [path for path, _ in jax.tree_util.tree_flatten_with_path(built)[0]]
        except Exception:   # an algorithm keyed by the names themselves (a tx with a pytree mask)
            probe = None
        if cache is not None:
            cache.probes[key] = probe
    if probe is None or len(probe) != len(leaves) or any(
            len(path) != len(probe_path) for (path, _), probe_path in zip(leaves, probe)):
        return [_owner_by_name(path, set(names)) for path, _ in leaves]
    owners = []
    for probe_path in probe:
        at = next((i for i, entry in enumerate(probe_path) if entry_name(entry) in sentinels), None)
        owners.append((None, None) if at is None else (sentinels[entry_name(probe_path[at])], at))
    return owners


def _owner_by_name(path: tuple, names: set) -> tuple:
    """The first dict key on ``path`` that is a parameter name (for states keyed by the names)."""
    for at, entry in enumerate(path):
        if isinstance(entry, jax.tree_util.DictKey) and entry.key in names:
            return entry.key, at
    return None, None


def _named(node: str, rest: list[str], declared: Mapping[str, str]) -> str:
    """A slot's state-dict key: the declared name of its path (or of a prefix of it), then the rest."""
    for name, path in declared.items():
        if node == path or node.startswith(path + '.'):
            return '.'.join([name + node[len(path):], *rest])
    return '.'.join([node, *rest]) if node else '.'.join(rest)


def _abstract(leaf: Any) -> Any:
    return jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf))


def entry_name(entry: Any) -> Hashable:
    """The name of one entry of a JAX key path: a dict key, an attribute name or an index."""
    for attr in ('name', 'key', 'idx'):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return entry
