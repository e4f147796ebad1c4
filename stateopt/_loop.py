"""The training-loop layer around every optimizer's step: gradient accumulation and non-finite skipping.

Both are settings of the whole optimizer (every registered parameter steps together), declared
here once and accepted by every optimizer's constructor::

    acc = acc + g ; micro = micro + 1               (gradient_accumulation_steps=k > 1)
    if micro < k:  nothing else changes             (the parameters, moments and step count wait)
    g = acc / k ;  acc = 0 ; micro = 0              (the k-th call steps on the mean gradient)
    if skip_nonfinite and g has a NaN or an inf:    (after accumulation)
        skipped_steps += 1, and nothing else changes
    else:
        the optimizer's step (the shared chain around its algorithm), step_count += 1

The decision is made on the device (``jax.lax.cond`` and ``jnp.where``), so it runs eagerly,
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
        ``step(grads) -> (params, states, count)``: the optimizer's step on ``grads``.
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
        accumulated = tuple(jax.tree.map(lambda a, g: a + g.astype(a.dtype), acc, grad)
                            for acc, grad in zip(counters['accumulated_grads'], grads))
        micro = optax.safe_increment(counters['micro_step'])

        def apply(_):
            mean = [jax.tree.map(lambda a, g: (a / loop.accumulate).astype(g.dtype), acc, grad)
                    for acc, grad in zip(accumulated, grads)]
            new = _maybe_skip(loop, step, mean, params, states, count, counters)
            zeros = tuple(jax.tree.map(jnp.zeros_like, acc) for acc in accumulated)
            return (*new[:3], {**new[3], 'accumulated_grads': zeros, 'micro_step': jnp.zeros_like(micro)})

        def wait(_):
            return params, states, count, {**counters, 'accumulated_grads': accumulated, 'micro_step': micro}

        return jax.lax.cond(micro >= loop.accumulate, apply, wait, None)
    return _maybe_skip(loop, step, grads, params, states, count, counters)


def _maybe_skip(loop: Loop, step: Callable, grads: list, params: tuple, states: Any, count: Any,
                counters: dict) -> tuple[tuple, Any, Any, dict]:
    new_params, new_states, new_count = step(grads)
    if not loop.skip_nonfinite:
        return new_params, new_states, new_count, counters
    finite = _all_finite(grads)

    def keep(new: Any, old: Any) -> Any:
        return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

    skipped = counters['skipped_steps'] + jnp.where(finite, 0, 1).astype(counters['skipped_steps'].dtype)
    return (tuple(keep(n, o) for n, o in zip(new_params, params)), keep(new_states, states),
            keep(new_count, count), {**counters, 'skipped_steps': skipped})
