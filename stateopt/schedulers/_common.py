"""Helpers the schedulers share: argument checks, per-group lists, float32 and tree helpers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._hyper import check_number

LRs = float | Sequence[float]
F32, I32 = jnp.float32, jnp.int32


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')
    return int(value)


def _per_group(name: str, value: Any, **bounds: Any) -> tuple[float, ...]:
    """A number, or a non-empty list with one number per param group."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f'{name} must be a number or a non-empty list of numbers, got {value!r}')
        return tuple(check_number(f'{name}[{i}]', v, **bounds) for i, v in enumerate(value))
    return (check_number(name, value, **bounds),)


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f'{name} must be one of {", ".join(map(repr, options))}; got {value!r}')
    return value


def _pick(values: Sequence, group: int) -> Any:
    """The entry of a per-group list for ``group``; groups past its end take the last entry."""
    return values[min(group, len(values) - 1)]


def _f32(value: Any) -> jax.Array:
    return jnp.asarray(value, F32)


def _cos_weight(position: Any, period: Any) -> jax.Array:
    """``(1 + cos(pi * position / period)) / 2``, as ``sin(pi (period - position) / (2 period))^2``.

    The sine form keeps float32's relative precision where the weight nears zero.
    """
    offset = jnp.mod(_f32(period) - _f32(position), 2 * _f32(period))
    return jnp.square(jnp.sin(jnp.pi / 2 * offset / period))


def _tree_where(condition: Any, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


def _like(new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.asarray(n, jnp.result_type(o)), new, old)


def _check_lengths(owner: str, lengths: Mapping[str, int]) -> None:
    """Refuse per-group lists of different lengths: each gives one value per param group."""
    if len(set(lengths.values())) > 1:
        shown = ' and '.join(f'{name} has {count}' for name, count in lengths.items())
        raise ValueError(f'{owner}: {shown} values; a list gives one value per param group, so the '
                         f'lists must have the same length (or give a single value for all groups)')

