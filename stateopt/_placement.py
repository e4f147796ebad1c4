"""Where the optimizer's own arrays live: on the mesh of the parameters they serve.

When the registered parameters are sharded over a ``jax.sharding.Mesh``, every array the
optimizer creates is placed on that mesh as it is made: a slot owned by a parameter (a moment)
with the sharding its param group's ``state_sharding`` gives it, anything else (step counts,
hyper-parameters, factored statistics) replicated, ``P()``. So nothing the optimizer holds sits
on one device, and no state is made whole on one device first: the algorithm's state is
created by a ``jax.jit`` whose ``out_shardings`` say where each leaf goes.

``state_sharding`` (one per param group) says where the per-parameter state goes::

    None            the sharding of the parameter array of the slot's shape
    'data'          that sharding, further split along the mesh axis 'data' on the first dimension
                    the axis size divides that the parameter does not shard (ZeRO-1); a parameter
                    with no such dimension keeps its own sharding
    f(name, value)  the Sharding f returns for each parameter array (None: as for None)

Every step then keeps each array where it is (:class:`Layout`): the parameters keep the sharding
they had when they were registered, each optimizer State the one it was given, and XLA gathers
only what the update needs (under ZeRO-1, the update of each parameter, to write it back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from ._hyper import Param
from ._state import leaves_with_keys, param_name
from ._trace import is_traced

__all__ = ['STATE_SHARDING', 'Layout', 'Target', 'mesh_of', 'placed', 'slot_shardings', 'state_targets',
           'zero_sharding']


def state_sharding_value(name: str, value: Any) -> Any:
    """The check of ``state_sharding``: None, a mesh axis name, or a function ``(name, value) -> Sharding``.

    Examples
    --------
    >>> from stateopt._placement import state_sharding_value
    >>> state_sharding_value('state_sharding', 'data')
    'data'
    """
    if value is None or callable(value) or (isinstance(value, str) and value):
        return value
    raise ValueError(f"{name} must be None (the parameter's own sharding), a mesh axis name such as "
                     f"'data' (ZeRO-1), or a function (param_name, value) -> Sharding; got {value!r}")


STATE_SHARDING = Param(
    'state_sharding', None, state_sharding_value, "Where the per-parameter state lives: ``None`` (sharded as "
    "its parameter), a mesh axis name such as ``'data'`` (ZeRO-1: each moment split further along that "
    "axis, on the first dimension it divides that the parameter does not shard), or a function "
    "``(param_name, value) -> Sharding``.", type='None, str or callable', dynamic=False)


def mesh_of(values: Any) -> Mesh | None:
    """The mesh of the first array of ``values`` sharded by a ``NamedSharding``, or None."""
    for leaf in jax.tree.leaves(values):
        sharding = getattr(leaf, 'sharding', None)
        if isinstance(sharding, NamedSharding) and not is_traced(leaf):
            return sharding.mesh
    return None


def _on(leaf: Any, mesh: Mesh) -> bool:
    sharding = getattr(leaf, 'sharding', None)
    return isinstance(sharding, NamedSharding) and sharding.mesh == mesh


def placed(tree: Any, mesh: Mesh | None) -> Any:
    """``tree`` with each concrete array that is not on ``mesh`` replicated over it (the rest as is)."""
    if mesh is None:
        return tree
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(leaf: Any) -> Any:
        if not isinstance(leaf, jax.Array) or is_traced(leaf) or _on(leaf, mesh):
            return leaf
        return jax.device_put(leaf, replicated)

    return jax.tree.map(place, tree)


def zero_sharding(sharding: NamedSharding, shape: Sequence[int], axis: str) -> NamedSharding:
    """``sharding`` split further along the mesh axis ``axis`` (ZeRO-1).

    The axis goes on the first dimension of ``shape`` that ``sharding`` does not shard and
    that the axis size divides; ``sharding`` itself when it already uses ``axis`` or no
    dimension fits (a scalar, a bias of odd length).

    Examples
    --------
    >>> import jax, numpy as np
    >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    >>> from stateopt._placement import zero_sharding
    >>> mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ('data', 'model'))
    >>> zero_sharding(NamedSharding(mesh, P(None, 'model')), (8, 16), 'data').spec == P('data', 'model')
    True
    """
    spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
    used = {name for entry in spec if entry is not None
            for name in (entry if isinstance(entry, tuple) else (entry,))}
    if axis in used:
        return sharding
    size = sharding.mesh.shape[axis]
    for dim, entry in enumerate(spec):
        if entry is None and shape[dim] > 0 and shape[dim] % size == 0:
            entries = [*spec[:dim], axis, *spec[dim + 1:]]
            while entries[-1] is None:      # written as jax writes it: P('data'), not P('data', None)
                entries.pop()
            return NamedSharding(sharding.mesh, PartitionSpec(*entries), memory_kind=sharding.memory_kind)
    return sharding


class Target(NamedTuple):
    """Where the per-parameter state of one parameter array goes."""

    keys: str           # the array's keys inside its State's value ('' for a plain array)
    shape: tuple
    sharding: Sharding


def state_targets(setting: Any, name: str, value: Any, mesh: Mesh | None) -> list[Target]:
    """The :class:`Target` of each array of the parameter ``name`` (value ``value``), in leaf order.

    ``setting`` is its param group's ``state_sharding``. Raises ``ValueError`` naming the
    parameter when the setting cannot place its state on ``mesh``.
    """
    replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())
    if setting is not None and mesh is None:
        raise ValueError(f'state_sharding={setting!r} places the optimizer state of {name!r} on a mesh, but '
                         f'the parameters are not on one; place them first, for example with '
                         f'jax.device_put(value, NamedSharding(mesh, PartitionSpec(...))), or leave '
                         f'state_sharding=None')
    if isinstance(setting, str) and setting not in mesh.axis_names:
        raise ValueError(f'state_sharding={setting!r} names no axis of the parameters\' mesh, whose axes '
                         f'are {", ".join(map(repr, mesh.axis_names))}; give one of them')
    targets = []
    for keys, array in leaves_with_keys({name: value}):
        base = array.sharding if _on(array, mesh) else replicated
        if isinstance(setting, str):
            base = zero_sharding(base, array.shape, setting)
        elif setting is not None:
            base = _called(setting, param_name(keys), array, mesh, base)
        targets.append(Target('.'.join(map(str, keys[1:])), tuple(array.shape), base))
    return targets


def _called(function: Callable, name: str, array: Any, mesh: Mesh, default: Sharding) -> Sharding:
    """What ``state_sharding(name, array)`` places the state of ``array`` with, checked."""
    sharding = function(name, array)
    if sharding is None:
        return default
    if not isinstance(sharding, Sharding):
        raise TypeError(f'state_sharding({name!r}, value) returned {sharding!r}; it must return a '
                        f'jax.sharding.Sharding (such as NamedSharding(mesh, PartitionSpec(...))) or None')
    if sharding.device_set != set(mesh.devices.flat):
        raise ValueError(f'state_sharding({name!r}, value) returned a sharding over other devices than the '
                         f"parameters' mesh; build it on that mesh")
    try:
        sharding.shard_shape(tuple(array.shape))
    except (ValueError, IndexError) as exc:     # a spec longer than the shape: an IndexError
        raise ValueError(f'state_sharding({name!r}, value) returned {sharding}, which cannot shard an '
                         f'array of shape {tuple(array.shape)}: {exc}') from None
    return sharding


def slot_shardings(abstract: Any, slots: Sequence, targets: dict, mesh: Mesh) -> Any:
    """The sharding of each leaf of an abstract state (``jax.eval_shape`` of its ``init``).

    A leaf owned by a parameter takes the :class:`Target` of that parameter's array of the
    same shape (a moment; among arrays of one shape, the one whose keys end the slot's
    name); any other leaf, and an owned one of another shape (a factored statistic), is
    replicated over ``mesh``. ``targets`` is ``{param name: [Target, ...]}``.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    leaves, treedef = jax.tree.flatten(abstract)
    shardings = []
    for leaf, slot in zip(leaves, slots):
        fits = [target for target in targets.get(slot.owner, ()) if target.shape == tuple(leaf.shape)]
        named = [target for target in fits if target.keys and slot.key.endswith('.' + target.keys)]
        shardings.append((named or fits)[0].sharding if fits else replicated)
    return treedef.unflatten(shardings)


@dataclass(frozen=True)
class Layout:
    """Where each array a step writes stays (part of the compiled step's key).

    Each entry is a tuple of shardings, one per leaf (None: left to XLA). A step traced
    with a layout constrains its outputs to it, so the parameters keep theirs and the
    optimizer's state its own, whatever the update mixes (under ZeRO-1, a parameter's
    update is computed on the moments' shards and gathered to the parameter's sharding).
    """

    params: tuple       # per registered State
    opt: tuple          # per leaf of the optimizer state
    count: Any
    carried: tuple      # (name, shardings) of the other States the step carries

    @classmethod
    def of(cls, params: Sequence, opt: Any, count: Any, carried: dict) -> Layout:
        """The layout of the current (concrete) values."""
        return cls(tuple(_shardings(value) for value in params), _shardings(opt), _sharding(count),
                   tuple((name, _shardings(value)) for name, value in carried.items()))

    def kept(self, params: tuple, states: Any, count: Any, counters: dict) -> tuple:
        """The step's outputs, each constrained to stay where its input was."""
        params = tuple(map(_constrained, params, self.params))
        states = _constrained(states, self.opt)
        count = count if self.count is None else jax.lax.with_sharding_constraint(count, self.count)
        carried = dict(self.carried)
        counters = {name: _constrained(value, carried[name]) if name in carried else value
                    for name, value in counters.items()}
        return params, states, count, counters


def _sharding(leaf: Any) -> Sharding | None:
    sharding = getattr(leaf, 'sharding', None)
    return sharding if isinstance(sharding, NamedSharding) else None


def _shardings(tree: Any) -> tuple:
    return tuple(map(_sharding, jax.tree.leaves(tree)))


def _constrained(tree: Any, shardings: tuple) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef.unflatten([leaf if sharding is None else jax.lax.with_sharding_constraint(leaf, sharding)
                              for leaf, sharding in zip(leaves, shardings)])
