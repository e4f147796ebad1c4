"""Where the optimizer's own arrays live: on the mesh of the parameters they serve.

When the registered parameters are sharded over a ``jax.sharding.Mesh``, every array the
optimizer creates is placed on that mesh as it is made: a slot owned by a parameter (a moment)
with the sharding of the parameter array of its shape, anything else (step counts, hyper-
parameters, factored statistics) replicated, ``P()``. So nothing the optimizer holds sits on one
device, and no state is made whole on one device first: the algorithm's state is created by a
``jax.jit`` whose ``out_shardings`` say where each leaf goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._hyper import is_traced

__all__ = ['mesh_of', 'placed', 'slot_shardings']


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


def slot_shardings(abstract: Any, owners: Sequence[str | None], values: dict, mesh: Mesh) -> Any:
    """The sharding of each leaf of an abstract state (``jax.eval_shape`` of its ``init``).

    A leaf owned by a parameter takes the sharding of that parameter's array of the same shape
    (a moment); any other leaf, and an owned one of another shape (a factored statistic), is
    replicated over ``mesh``.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    leaves, treedef = jax.tree.flatten(abstract)
    shardings = []
    for leaf, owner in zip(leaves, owners):
        found = replicated
        if owner is not None:
            for array in jax.tree.leaves(values[owner]):
                if tuple(array.shape) == tuple(leaf.shape) and _on(array, mesh):
                    found = array.sharding
                    break
        shardings.append(found)
    return treedef.unflatten(shardings)
