"""Whether JAX is tracing: the tests every stateful call makes before it runs."""

from __future__ import annotations

from itertools import repeat
from typing import Any

import jax

__all__ = ['is_traced', 'at_top_level', 'inside_jax_transform']


def is_traced(value: Any) -> bool:
    """Whether any leaf of ``value`` is a JAX tracer (its number is unknown now)."""
    return any(map(isinstance, jax.tree.leaves(value), repeat(jax.core.Tracer)))


try:    # JAX's own test of "no transform is tracing now"; absent, traced inputs tell
    from jax._src.core import trace_state_clean as _at_top_level
except ImportError:  # pragma: no cover - a JAX without it
    _at_top_level = None


def at_top_level() -> bool:
    """Whether no JAX transform is tracing now, by JAX's own cheap test (False where it has none)."""
    return _at_top_level is not None and _at_top_level()


def inside_jax_transform(*values: Any) -> bool:
    """Whether a raw JAX transform (``jax.jit``, ``vmap``, ``grad``, ``scan``, ...) is tracing now.

    States cannot carry values out of such a transform, so stateful calls refuse to
    run under one. ``values`` are the call's inputs, consulted only where JAX does
    not expose its trace state.
    """
    if _at_top_level is not None:
        return not _at_top_level()
    return is_traced(values)
