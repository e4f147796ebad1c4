"""The training-loop layer around every optimizer's step: gradient accumulation and non-finite skipping.

Both are settings of the whole optimizer (every registered parameter steps together), declared
here once and accepted by every optimizer's constructor::

    acc = g if micro == 0 else acc + g               (gradient_accumulation_steps=k > 1)
    micro = micro + 1
    if micro < k:  nothing else changes             (the parameters, moments and step count wait)
    g = acc / k ;  micro = 0                        (the k-th call steps on the mean gradient)
    if skip_nonfinite and g has a NaN or an inf:    (after accumulation)
        skipped_steps += 1, and nothing else changes
    else:
        the optimizer's step (the shared chain around its algorithm), step_count += 1

The decision is made on the device (``jax.lax.cond``), so it runs eagerly,
under ``brainstate.transform.jit``, in ``for_loop`` bodies and in ``donating_jit`` without a
host sync and without recompiling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ._hyper import Param, flag, floating_dtype, positive_int

__all__ = ['SKIP_NONFINITE', 'GRADIENT_ACCUMULATION_STEPS', 'ACCUMULATION_DTYPE', 'LOOP_SETTINGS', 'Loop',
           'accumulator_dtype', 'run_loop']


SKIP_NONFINITE = Param(
    'skip_nonfinite', False, flag, 'Skip a step whose gradients (after accumulation) hold a NaN or an inf: '
    'parameters, moments and ``step_count`` stay as they are and ``skipped_steps`` (an OptimState) counts '
    'it.', type='bool', dynamic=False, scope='optimizer')
GRADIENT_ACCUMULATION_STEPS = Param(
    'gradient_accumulation_steps', 1, positive_int, 'Step once every this many ``update`` calls, on the '
    'mean of their gradients (summed in ``accumulated_grads``, one array per parameter); the calls between '
    'change neither parameters, moments nor ``step_count``.', type='int', dynamic=False, scope='optimizer')
ACCUMULATION_DTYPE = Param(
    'accumulation_dtype', None, floating_dtype, 'The dtype gradients are summed in (``None``: each '
    "parameter's dtype, at least float32).", type='dtype or None', dynamic=False, scope='optimizer')
#: The loop settings every optimizer's constructor takes, in signature order.
LOOP_SETTINGS = (GRADIENT_ACCUMULATION_STEPS, ACCUMULATION_DTYPE, SKIP_NONFINITE)


@dataclass(frozen=True)
class Loop:
    """What the loop layer does around a step (part of the compiled step's key).

    Parameters
    ----------
    accumulate : int
        ``gradient_accumulation_steps``.
    skip_nonfinite : bool
        Whether a step with non-finite gradients is skipped.
    """

    accumulate: int = 1
    skip_nonfinite: bool = False

    @property
    def active(self) -> bool:
        """Whether the layer does anything (else the step runs as it is)."""
        return self.accumulate > 1 or self.skip_nonfinite


def accumulator_dtype(value: Any, dtype: Any) -> Any:
    """The dtype a gradient of ``value``'s dtype is summed in (``dtype``: the chosen one, or None)."""
    if dtype is not None:
        return dtype
    return jnp.promote_types(jnp.result_type(value), jnp.float32)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def run_loop(loop: Loop, step: Callable, params: tuple, grads: list, states: Any, count: Any,
             counters: dict) -> tuple[tuple, Any, Any, dict]:
    """One ``update`` through the loop layer, purely.

    Parameters
    ----------
    loop : Loop
        The settings.
    step : callable
        ``step(params, states, count, grads) -> (params, states, count)``: the optimizer's step.
    params, grads, states, count
        The parameters (one value per registered State), their gradients, the
        optimizer's state and its step count, as they are now.
    counters : dict
        The loop's own state: ``'accumulated_grads'`` and ``'micro_step'`` when
        accumulating, ``'skipped_steps'`` when skipping.

    Returns
    -------
    ``(params, states, count, counters)`` after the call.
    """
    if loop.accumulate > 1:
        # a cycle's first call starts the sum afresh (what the last cycle left is never reset in
        # place: a reset would be a second pass over the accumulator); a select, so NaN is dropped too
        fresh = counters['micro_step'] == 0

        def added(a: Any, g: Any) -> Any:
            g = g.astype(a.dtype)
            return jnp.where(fresh, g, a + g)

        accumulated = tuple(jax.tree.map(added, acc, grad)
                            for acc, grad in zip(counters['accumulated_grads'], grads))
        micro = optax.safe_increment(counters['micro_step'])
        due = micro >= loop.accumulate
        skipped = {key: counters[key] for key in ('skipped_steps',) if key in counters}

        def apply(params, states, count, skipped, accumulated):
            mean = [jax.tree.map(lambda a, g: (a / loop.accumulate).astype(g.dtype), acc, grad)
                    for acc, grad in zip(accumulated, grads)]
            return _maybe_skip(loop, step, mean, params, states, count, skipped)

        def wait(params, states, count, skipped, accumulated):
            return params, states, count, skipped

        # the cond takes the sum as an operand and returns only what a step changes: the sum's buffer
        # is written once, by the select above, and passed through nothing
        params, states, count, skipped = jax.lax.cond(due, apply, wait, params, states, count, skipped,
                                                      accumulated)
        return params, states, count, {**counters, **skipped, 'accumulated_grads': accumulated,
                                       'micro_step': jnp.where(due, jnp.zeros_like(micro), micro)}
    return _maybe_skip(loop, step, grads, params, states, count, counters)


def _maybe_skip(loop: Loop, step: Callable, grads: list, params: tuple, states: Any, count: Any,
                counters: dict) -> tuple[tuple, Any, Any, dict]:
    if not loop.skip_nonfinite:
        return (*step(params, states, count, grads), counters)
    skipped = counters['skipped_steps']

    def apply(params, states, count, skipped):
        return (*step(params, states, count, grads), skipped)

    def skip(params, states, count, skipped):
        return params, states, count, skipped + jnp.ones_like(skipped)

    # a cond, not a select: a skipped step computes nothing, and an applied one writes its results in place
    # (a select needs the new values and the old at once, in buffers of their own)
    params, states, count, skipped = jax.lax.cond(_all_finite(grads), apply, skip, params, states, count,
                                                  skipped)
    return params, states, count, {**counters, 'skipped_steps': skipped}
