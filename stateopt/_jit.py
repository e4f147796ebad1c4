"""donating_jit: compile a whole train step and reuse the buffers of the States it writes."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import brainstate
import jax

from ._donation import RAW, DonationGuard, flags_reads, owned_leaves, store_leaves, write_back
from ._hyper import is_traced

__all__ = ['donating_jit']


def donating_jit(
    fn: Callable | None = None,
    *,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
) -> Callable:
    """Like ``brainstate.transform.jit``, but the buffers of the States ``fn`` writes are donated.

    ``brainstate.transform.jit`` passes every State's value into the compiled function
    and allocates new buffers for the values written back, so a memory-bound update
    (an optimizer step over large parameters) moves about twice the memory it needs.
    ``donating_jit`` hands XLA the buffers of the States the function writes (model
    parameters, optimizer moments, step counts), so it updates them in place, as a
    ``jax.jit`` with ``donate_argnums`` over a pure optax step does. States that are
    only read are not donated, and neither is a value the caller still holds: a
    State's value (or a leaf of it) referenced from outside is copied first, so no
    array the caller can reach becomes invalid.

    Inside another brainstate transform the function is simply traced inline.

    Parameters
    ----------
    fn : callable
        The train step; it reads and writes States (``opt.update`` included) and
        returns arrays.
    static_argnums, static_argnames : optional
        As for ``jax.jit``.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.ones(3))
    >>> opt = stateopt.AdamW(lr=0.1).register_trainable_weights({'w': w})
    >>> @stateopt.donating_jit
    ... def train_step(x):
    ...     grads, loss = brainstate.transform.grad(
    ...         lambda: jnp.sum((w.value * x) ** 2), grad_states={'w': w}, return_value=True)()
    ...     opt.update(grads)
    ...     return loss
    >>> float(train_step(jnp.ones(3)))
    3.0
    >>> int(opt.step_count.value)
    1
    """
    if fn is None:
        return functools.partial(donating_jit, static_argnums=static_argnums,
                                 static_argnames=static_argnames)
    static_argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    static_argnames = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
    stateful = brainstate.transform.StatefulFunction(
        fn, static_argnums=static_argnums, static_argnames=static_argnames, return_only_write=True)

    def run(layout: _Layout, values: tuple, own_leaves: tuple, read: tuple, *args: Any,
            **kwargs: Any) -> tuple:
        sources = {'write': iter(values), 'own': iter(own_leaves), 'read': iter(read)}
        treedefs = iter(layout.own_treedefs)
        state_values = [next(treedefs).unflatten(next(sources[kind])) if kind == 'own'
                        else next(sources[kind]) for kind in layout.kinds]
        new_values, out = stateful.jaxpr_call(state_values, *args, **kwargs)
        written = tuple(v for v, kind in zip(new_values, layout.kinds) if kind == 'write')
        own = tuple(jax.tree.leaves(v) for v, kind in zip(new_values, layout.kinds) if kind == 'own')
        return written, own, out

    static = tuple(i + 3 for i in static_argnums)
    plans: dict = {}   # argument signature -> _Plan

    def plan_for(args: tuple, kwargs: dict) -> _Plan:
        signature = _signature(args, kwargs, static_argnums, static_argnames)
        plan = plans.get(signature)
        if plan is None:
            key = stateful.get_arg_cache_key(*args, **kwargs, compile_if_miss=True)
            written_ids = {id(state) for state in stateful.get_write_states_by_cache(key)}
            plan = plans[signature] = _Plan(stateful.get_states_by_cache(key), written_ids)
            # the layout is bound, not passed: a static argument costs tens of µs per call
            plan.compiled = jax.jit(functools.partial(run, plan.layout), donate_argnums=(0, 1),
                                    static_argnums=static, static_argnames=static_argnames)
        return plan

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if jax.config.jax_disable_jit or is_traced((args, kwargs)):
            return fn(*args, **kwargs)
        plan = plan_for(args, kwargs)
        values = list(map(RAW, plan.written))
        plan.guard = DonationGuard.protected(plan.guard, plan.written, values)
        own_leaves = tuple(map(owned_leaves, plan.own))
        read = tuple(map(RAW, plan.read))
        new_values, new_own, out = plan.compiled(tuple(values), own_leaves, read, *args, **kwargs)
        del values, own_leaves
        write_back(plan.written, new_values)
        for state, treedef, leaves in zip(plan.own, plan.layout.own_treedefs, new_own):
            store_leaves(state, treedef, leaves)
        return out

    return call


@dataclass(frozen=True, eq=False)
class _Layout:
    """How the compiled call receives each State: donated value, donated leaves, or read only.

    Each plan's compiled function has its layout bound in, so no call passes or hashes it.
    """

    kinds: tuple            # 'write', 'own' or 'read' per State, in the traced function's order
    own_treedefs: tuple     # structure of each 'own' State's value


class _Plan:
    """The States a traced function reads and writes, sorted by how the compiled call takes them.

    The optimizer's own States (:class:`~stateopt.OptimState`) travel as flat lists of
    leaves, kept between calls; other written States as their values; read-only
    States are passed and never donated.
    """

    def __init__(self, states: tuple, written_ids: set):
        kinds = tuple('read' if id(s) not in written_ids else 'own' if flags_reads(s) else 'write'
                      for s in states)
        self.written = [s for s, kind in zip(states, kinds) if kind == 'write']
        self.own = [s for s, kind in zip(states, kinds) if kind == 'own']
        self.read = [s for s, kind in zip(states, kinds) if kind == 'read']
        self.layout = _Layout(kinds, tuple(jax.tree.structure(RAW(s)) for s in self.own))
        self.guard = None
        self.compiled = None    # the jitted step for this layout, set by donating_jit


_SHAPE_DTYPE = operator.attrgetter('shape', 'dtype')


def _signature(args: tuple, kwargs: dict, static_argnums: tuple, static_argnames: tuple) -> tuple:
    """What a call's plan depends on: structure, shapes and dtypes, and static values."""
    dynamic = tuple(a for i, a in enumerate(args) if i not in static_argnums)
    static = tuple(a for i, a in enumerate(args) if i in static_argnums)
    dynamic_kwargs = {k: v for k, v in kwargs.items() if k not in static_argnames}
    static_kwargs = tuple(sorted((k, v) for k, v in kwargs.items() if k in static_argnames))
    leaves, treedef = jax.tree.flatten((dynamic, dynamic_kwargs))
    try:
        avals = tuple(map(_SHAPE_DTYPE, leaves))   # arrays: C-level
    except AttributeError:                       # Python scalars among the arguments
        avals = tuple(map(_aval, leaves))
    return treedef, avals, static, static_kwargs


def _aval(leaf: Any) -> Any:
    if hasattr(leaf, 'dtype') or isinstance(leaf, (bool, int, float, complex)):
        return jax.typeof(leaf)
    return leaf
