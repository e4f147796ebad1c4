"""Low-precision parameters and state: float32 master weights, and the dtype of the moments.

``master_dtype=jnp.float32``: each parameter array stored in a narrower floating dtype
(bfloat16, float16) gets a master copy in ``master_dtype``, owned by the optimizer. The step
runs on the masters (the gradients cast up, the moments created from the masters) and the
parameter States get the results rounded to their own dtype, so a bfloat16 model trains as
its float32 master would::

    m = m           where round(m) == p, else p      (an array the user wrote since follows p)
    m, state = step(m, g.astype(master_dtype), state)
    p = round(m)                                     (to the parameter's dtype)

``state_dtype=jnp.bfloat16``: every per-parameter floating slot of the optimizer's state
(moments, momentum buffers) is stored in that dtype; the update computes in the wider dtype
of the gradients and rounds the new state back, as optax's ``mu_dtype`` does.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._hyper import Param, floating_dtype

__all__ = ['MASTER_DTYPE', 'STATE_DTYPE', 'PRECISION_SETTINGS', 'master_of', 'working_value',
           'working_grad', 'rounded_value', 'narrower']


MASTER_DTYPE = Param(
    'master_dtype', None, floating_dtype, 'Keep a master copy in this dtype of every parameter array '
    'stored in a narrower one (``jnp.float32`` for a bfloat16 model): the step runs on the masters '
    '(``opt.master_params``) and the parameters get the rounded results. ``None``: no masters.',
    type='dtype or None', dynamic=False, scope='optimizer')
STATE_DTYPE = Param(
    'state_dtype', None, floating_dtype, "Store the per-parameter floating state (moments, momentum "
    "buffers) in this dtype (``jnp.bfloat16`` halves it); the update computes in the gradients' dtype "
    "and rounds back. ``None``: the dtype of the parameter (or of its master).", type='dtype or None',
    dynamic=False, scope='optimizer')
#: The precision settings every optimizer's constructor takes, in signature order.
PRECISION_SETTINGS = (MASTER_DTYPE, STATE_DTYPE)


def narrower(dtype: Any, master: Any) -> bool:
    """Whether an array of ``dtype`` needs a master copy in ``master``."""
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < jnp.finfo(master).bits


def master_of(value: Any, master: Any) -> tuple:
    """The master copy of a parameter's value: one entry per leaf, the leaf in ``master`` or None."""
    return tuple(jnp.asarray(leaf, master) if narrower(jnp.result_type(leaf), master) else None
                 for leaf in jax.tree.leaves(value))


def working_value(value: Any, masters: tuple | None) -> Any:
    """The value the step works on: each leaf's master (following what the user wrote since), or the leaf."""
    if masters is None:
        return value
    leaves, treedef = jax.tree.flatten(value)
    return treedef.unflatten([
        leaf if master is None else
        jnp.where(master.astype(leaf.dtype) == leaf, master, leaf.astype(master.dtype))
        for leaf, master in zip(leaves, masters)])


def working_grad(grad: Any, masters: tuple | None) -> Any:
    """A gradient cast to its masters' dtype, leaf by leaf (the step then computes in it)."""
    if masters is None:
        return grad
    leaves, treedef = jax.tree.flatten(grad)
    return treedef.unflatten([g if master is None else g.astype(master.dtype)
                              for g, master in zip(leaves, masters)])


def rounded_value(work: Any, value: Any, masters: tuple | None) -> tuple[Any, tuple | None]:
    """``(the parameter's new value, its new masters)`` from the step's result ``work``."""
    if masters is None:
        return work, None
    leaves, treedef = jax.tree.flatten(value)
    new = jax.tree.leaves(work)
    return (treedef.unflatten([w.astype(leaf.dtype) for w, leaf in zip(new, leaves)]),
            tuple(None if master is None else w for w, master in zip(new, masters)))
