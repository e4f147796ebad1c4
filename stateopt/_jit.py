"""donating_jit: compile a whole train step and reuse the buffers of the States it writes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import brainstate
import jax

from ._donation import RAW, DonationGuard, _flags_reads, mark_unread, write_back
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

    def run(written: tuple, read: tuple, mask: tuple, *args: Any, **kwargs: Any) -> tuple:
        written_iter, read_iter = iter(written), iter(read)
        values = [next(written_iter) if is_written else next(read_iter) for is_written in mask]
        new_values, out = stateful.jaxpr_call(values, *args, **kwargs)
        return tuple(v for v, is_written in zip(new_values, mask) if is_written), out

    compiled = jax.jit(run, donate_argnums=(0,), static_argnums=(2,) + tuple(i + 3 for i in static_argnums),
                       static_argnames=static_argnames)

    plans: dict = {}   # argument signature -> (states, mask, written States, guard)

    def plan_for(args: tuple, kwargs: dict) -> list:
        signature = _signature(args, kwargs, static_argnums, static_argnames)
        plan = plans.get(signature)
        if plan is None:
            key = stateful.get_arg_cache_key(*args, **kwargs, compile_if_miss=True)
            states = stateful.get_states_by_cache(key)
            written_ids = {id(state) for state in stateful.get_write_states_by_cache(key)}
            mask = tuple(id(state) in written_ids for state in states)
            written = [s for s, w in zip(states, mask) if w]
            plan = plans[signature] = [states, mask, written, None, tuple(filter(_flags_reads, written))]
        return plan

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if jax.config.jax_disable_jit or is_traced((args, kwargs)):
            return fn(*args, **kwargs)
        plan = plan_for(args, kwargs)
        states, mask, written_states, guard, own_states = plan
        written = list(map(RAW, written_states))
        plan[3] = DonationGuard.protected(guard, written_states, written)
        read = tuple(RAW(state) for state, is_written in zip(states, mask) if not is_written)
        new_values, out = compiled(tuple(written), read, mask, *args, **kwargs)
        del written
        write_back(written_states, new_values)
        mark_unread(own_states)
        return out

    return call


def _signature(args: tuple, kwargs: dict, static_argnums: tuple, static_argnames: tuple) -> tuple:
    """What a call's compiled plan depends on: structure, shapes and dtypes, and static values."""
    dynamic = tuple(a for i, a in enumerate(args) if i not in static_argnums)
    static = tuple(a for i, a in enumerate(args) if i in static_argnums)
    dynamic_kwargs = {k: v for k, v in kwargs.items() if k not in static_argnames}
    static_kwargs = tuple(sorted((k, v) for k, v in kwargs.items() if k in static_argnames))
    leaves, treedef = jax.tree.flatten((dynamic, dynamic_kwargs))
    return treedef, tuple(map(_aval, leaves)), static, static_kwargs


def _aval(leaf: Any) -> Any:
    if hasattr(leaf, 'dtype') or isinstance(leaf, (bool, int, float, complex)):
        return jax.typeof(leaf)
    return leaf
