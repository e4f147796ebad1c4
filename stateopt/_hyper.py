"""Hyper-parameter declarations and their validation.

An optimizer declares each constructor hyper-parameter once, as a :class:`Hyper`:
how to check a value and whether the value is *dynamic* (a number fed to the compiled
step as an input, so changing it never recompiles) or *static* (a flag, a string, an
integer size or a transform, fixed when the param group is created).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import jax
import numpy as np

__all__ = [
    'Hyper', 'is_traced', 'inside_jax_transform', 'check_number', 'non_negative', 'positive',
    'optional_positive',
    'unit_interval', 'open_unit_interval', 'flag', 'betas', 'choice', 'positive_int',
]


def is_traced(value: Any) -> bool:
    """Whether any leaf of ``value`` is a JAX tracer (its number is unknown now)."""
    return any(map(isinstance, jax.tree.leaves(value), repeat(jax.core.Tracer)))


try:    # JAX's own test of "no transform is tracing now"; absent, traced inputs tell
    from jax._src.core import trace_state_clean as _at_top_level
except ImportError:  # pragma: no cover - a JAX without it
    _at_top_level = None


def inside_jax_transform(*values: Any) -> bool:
    """Whether a raw JAX transform (``jax.jit``, ``vmap``, ``grad``, ``scan``, ...) is tracing now.

    States cannot carry values out of such a transform, so stateful calls refuse to
    run under one. ``values`` are the call's inputs, consulted only where JAX does
    not expose its trace state.
    """
    if _at_top_level is not None:
        return not _at_top_level()
    return is_traced(values)


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check that ``value`` is one real number within the bounds; return it as a float.

    A traced value (inside ``jit``) passes unchecked: its number is not known yet.

    Raises
    ------
    ValueError
        Naming ``name``, the bound and the received value.

    Examples
    --------
    >>> from stateopt._hyper import check_number
    >>> check_number('lr', 0.1, low=0.0)
    0.1
    """
    if is_traced(value):
        return value
    if isinstance(value, bool) or not _is_real_scalar(value):
        raise ValueError(f'{name} must be a real number, got {value!r}')
    number = float(value)
    if math.isnan(number):
        raise ValueError(f'{name} must be a number, got nan')
    if math.isinf(number):
        raise ValueError(f'{name} must be finite, got {value!r}')
    if low is not None and (number < low or (low_open and number == low)):
        sign = '>' if low_open else '>='
        raise ValueError(f'{name} must be {sign} {low}, got {value!r}')
    if high is not None and (number > high or (high_open and number == high)):
        sign = '<' if high_open else '<='
        raise ValueError(f'{name} must be {sign} {high}, got {value!r}')
    if abs(number) > _F32_MAX:
        raise ValueError(f'{name}={value!r} overflows float32, in which steps compute (the largest '
                         f'float32 is {_F32_MAX:.4g}); use a smaller value')
    if 0 < abs(number) < _F32_TINY:
        raise ValueError(f'{name}={value!r} is below the smallest normal float32 ({_F32_TINY:.4g}), '
                         f'in which steps compute: it would act as 0 (or lose precision); use '
                         f'{_F32_TINY:.2g} or more, or 0 where 0 is allowed')
    return number


#: Steps compute in float32: hyper-parameters must be normal float32 numbers.
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)


def _is_real_scalar(value: Any) -> bool:
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    shape = getattr(value, 'shape', None)
    dtype = getattr(value, 'dtype', None)
    return shape == () and dtype is not None and np.issubdtype(np.dtype(dtype), np.number) \
        and not np.issubdtype(np.dtype(dtype), np.complexfloating)


@dataclass(frozen=True)
class Hyper:
    """How one hyper-parameter is checked, and whether it is dynamic.

    Parameters
    ----------
    check : callable
        ``check(name, value) -> value``: returns the normalised value or raises
        ``ValueError`` naming the parameter and the value.
    dynamic : bool
        Dynamic values are numbers (or tuples of numbers) held in an
        :class:`~stateopt.OptimState` and fed to the compiled step, so assigning
        ``group[name]`` takes effect at the next step without recompiling. ``None``
        in a dynamic slot means "off" and is fixed when the group is created.

    Examples
    --------
    >>> from stateopt._hyper import Hyper, positive
    >>> Hyper(positive).check('eps', 1e-8)
    1e-08
    """

    check: Callable[[str, Any], Any]
    dynamic: bool = True


def non_negative(name: str, value: Any) -> float:
    """A real number ``>= 0``."""
    return check_number(name, value, low=0.0)


def positive(name: str, value: Any) -> float:
    """A real number ``> 0``."""
    return check_number(name, value, low=0.0, low_open=True)


def optional_positive(name: str, value: Any) -> float | None:
    """``None`` (off) or a real number ``> 0``."""
    return None if value is None else positive(name, value)


def unit_interval(name: str, value: Any) -> float:
    """A real number in ``[0, 1]``."""
    return check_number(name, value, low=0.0, high=1.0)


def open_unit_interval(name: str, value: Any) -> float:
    """A real number in ``[0, 1)``."""
    return check_number(name, value, low=0.0, high=1.0, high_open=True)


def flag(name: str, value: Any) -> bool:
    """``True`` or ``False``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f'{name} must be True or False, got {value!r}')
    return bool(value)


def betas(name: str, value: Any) -> tuple:
    """A pair of real numbers, each in ``[0, 1)``."""
    if is_traced(value):
        return tuple(value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f'{name} must be a pair (beta1, beta2), got {value!r}')
    return tuple(open_unit_interval(f'{name}[{i}]', beta) for i, beta in enumerate(value))


def choice(*options: str) -> Callable[[str, Any], str]:
    """A check accepting one of the strings ``options``."""

    def check(name: str, value: Any) -> str:
        if value not in options:
            raise ValueError(f'{name} must be one of {", ".join(map(repr, options))}; got {value!r}')
        return value

    return check


def positive_int(name: str, value: Any) -> int:
    """An integer ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    return int(value)
