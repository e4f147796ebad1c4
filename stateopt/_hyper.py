"""Hyper-parameter declarations and their validation.

An optimizer declares each constructor hyper-parameter once, as a :class:`Hyper`:
how to check a value and whether the value is *dynamic* (a number fed to the compiled
step as an input, so changing it never recompiles) or *static* (a flag, a string, an
integer size or a transform, fixed when the param group is created).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._decay import decay_mask_value
from ._trace import is_traced

__all__ = [
    'Hyper', 'Param', 'Hyperparameters', 'REQUIRED', 'LR', 'WEIGHT_DECAY', 'GRAD_CLIP_NORM',
    'GRAD_CLIP_VALUE', 'MAXIMIZE', 'WEIGHT_DECAY_MASK', 'DECAY_DOCS', 'lr_value',
    'check_number', 'non_negative', 'positive',
    'optional_positive',
    'unit_interval', 'open_unit_interval', 'flag', 'betas', 'beta_tuple', 'choice', 'positive_int',
    'floating_dtype',
]


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


#: The default of a parameter that has none (it must be given).
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """One constructor hyper-parameter of an optimizer, declared once.

    The optimizer's signature, validation, ``defaults``, the Parameters section of its
    docstring, the functional API's defaults and the catalogue page are all made from
    its :class:`Hyperparameters` table of these.

    Parameters
    ----------
    name : str
        The keyword, and the key in ``param_groups``.
    default : object
        The default value (``REQUIRED`` for none).
    check : callable
        ``check(name, value) -> value``: the normalised value, or a ``ValueError`` naming
        the parameter and the value.
    doc : str
        One line for the docstring's Parameters section.
    type : str
        The type as the docstring shows it.
    dynamic : bool
        As for :class:`Hyper`: numbers fed to the compiled step (changing them never
        recompiles) or values fixed when a group is created (flags, sizes, transforms).
    into : (str, int), optional
        A spelling of one entry of another parameter (braintools' ``beta1`` for
        ``betas[0]``): it is accepted by the constructor, written into that entry when
        not ``None``, and not kept as a hyper-parameter of its own.
    stored : bool
        False for a constructor argument that is checked but not kept (Rprop's
        ``grad_clip_norm``, which must stay ``None``).
    scope : str
        ``'group'`` (each param group keeps its own value) or ``'optimizer'``: one value
        for the whole optimizer (SOFO's ``tangent_size``, which spans every registered
        param), read as an attribute of the optimizer, fixed when it is built, and
        refused by ``add_param_group``.

    Examples
    --------
    >>> from stateopt._hyper import Param, positive
    >>> eps = Param('eps', 1e-8, positive, 'Added to the denominator.')
    >>> eps.check('eps', 1e-6)
    1e-06
    """

    name: str
    default: Any
    check: Callable[[str, Any], Any]
    doc: str
    type: str = 'float'
    dynamic: bool = True
    into: tuple[str, int] | None = None
    stored: bool = True
    scope: str = 'group'

    def but(self, **changes: Any) -> Param:
        """This declaration with ``changes`` (a different default, say)."""
        return dataclasses.replace(self, **changes)


class Hyperparameters:
    """An optimizer's constructor hyper-parameters, in the order of its signature.

    ``positional`` come first (braintools' order); then ``grad_clip_norm`` and
    ``grad_clip_value``, every optimizer's; then, keyword-only, ``keyword_only`` and
    ``maximize`` (unless ``maximize=False``).

    Parameters
    ----------
    *positional : Param
        The parameters that may be given by position.
    keyword_only : sequence of Param
        Parameters that must be given by keyword.
    maximize : bool
        Whether the optimizer takes torch's ``maximize``.
    clips : sequence of Param
        The clipping parameters (the shared ones unless the optimizer declares its own).

    Examples
    --------
    >>> from stateopt._hyper import LR, Hyperparameters, Param, positive
    >>> table = Hyperparameters(LR, Param('eps', 1e-8, positive, 'Added to the denominator.'))
    >>> list(table.stored())
    ['lr', 'eps', 'grad_clip_norm', 'grad_clip_value', 'maximize']
    >>> str(table.signature())
    '(self, lr=0.001, eps=1e-08, grad_clip_norm=None, grad_clip_value=None, *, maximize=False)'
    """

    def __init__(self, *positional: Param, keyword_only: Sequence[Param] = (), maximize: bool = True,
                 clips: Sequence[Param] | None = None):
        clips = (GRAD_CLIP_NORM, GRAD_CLIP_VALUE) if clips is None else tuple(clips)
        self.positional = (*positional, *clips)
        self.keyword_only = (*keyword_only, *((MAXIMIZE,) if maximize else ()))
        names = [param.name for param in self.params]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f'hyper-parameters declared twice: {twice}')

    @property
    def params(self) -> tuple[Param, ...]:
        """Every declaration, in signature order."""
        return self.positional + self.keyword_only

    def __getitem__(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    def with_defaults(self, **defaults: Any) -> Hyperparameters:
        """The same table with other defaults (``AdamW``: Adam's with ``weight_decay=1e-2``)."""
        return self._rebuilt(lambda p: p.but(default=defaults.pop(p.name)) if p.name in defaults else p,
                             check=defaults)

    def with_keyword(self, param: Param) -> Hyperparameters:
        """The same table with ``param`` added to the keyword-only parameters, before ``maximize``."""
        names = [existing.name for existing in self.keyword_only]
        at = names.index('maximize') if 'maximize' in names else len(names)
        table = self._rebuilt(lambda p: p)
        table.keyword_only = (*self.keyword_only[:at], param, *self.keyword_only[at:])
        return table

    def without(self, *names: str) -> Hyperparameters:
        """The same table without the parameters ``names``."""
        missing = set(names) - {param.name for param in self.params}
        if missing:
            raise KeyError(f'no hyper-parameters {sorted(missing)} to leave out')
        return self._rebuilt(lambda p: None if p.name in names else p)

    def _rebuilt(self, change: Callable[[Param], Param | None], check: dict | None = None) -> Hyperparameters:
        table = object.__new__(Hyperparameters)
        table.positional = tuple(p for p in map(change, self.positional) if p is not None)
        table.keyword_only = tuple(p for p in map(change, self.keyword_only) if p is not None)
        if check:
            raise KeyError(f'no hyper-parameters {sorted(check)} to change')
        return table

    def stored(self) -> dict[str, Param]:
        """``{name: Param}`` of the hyper-parameters a param group keeps (aliases left out)."""
        return {param.name: param for param in self.params
                if param.into is None and param.stored and param.scope == 'group'}

    def settings(self) -> dict[str, Param]:
        """``{name: Param}`` of the settings of the whole optimizer (``scope='optimizer'``)."""
        return {param.name: param for param in self.params if param.scope == 'optimizer'}

    def defaults(self) -> dict[str, Any]:
        """``{name: default}`` of the stored hyper-parameters that have a default."""
        return {name: param.default for name, param in self.stored().items() if param.default is not REQUIRED}

    def signature(self) -> inspect.Signature:
        """The constructor's signature, ``self`` first."""
        kinds = [(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in self.positional] + \
            [(p, inspect.Parameter.KEYWORD_ONLY) for p in self.keyword_only]
        return inspect.Signature([inspect.Parameter('self', inspect.Parameter.POSITIONAL_OR_KEYWORD)] + [
            inspect.Parameter(param.name, kind, default=param.default) for param, kind in kinds])

    def resolve(self, given: dict) -> dict:
        """The stored hyper-parameters from a call's arguments, aliases written into their targets."""
        values = {name: given[name] for name in self.stored()}
        for param in self.params:
            if not param.stored:
                param.check(param.name, given[param.name])
            if param.into is not None and given.get(param.name) is not None:
                target, index = param.into
                entries = list(self[target].check(target, values[target]))
                entries[index] = param.check(param.name, given[param.name])
                values[target] = tuple(entries)
        return values

    def document(self, docs: dict[str, str] | None = None) -> str:
        """The numpydoc Parameters section of these hyper-parameters (``docs`` replace some lines)."""
        lines = ['Parameters', '----------']
        for param in self.params:
            default = '' if param.default is REQUIRED else f', default {param.default!r}'
            lines.append(f'{param.name} : {param.type}{default}')
            lines.extend(f'    {line}' for line in textwrap.wrap((docs or {}).get(param.name, param.doc), 80))
        return '\n'.join(lines)


def lr_value(name: str, value: Any) -> Any:
    """A learning rate: a number ``>= 0``, or a schedule (any callable, a scheduler included)."""
    if callable(value) and not hasattr(value, 'shape'):
        return value
    return non_negative(name, value)


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


def beta_tuple(size: int) -> Callable[[str, Any], tuple]:
    """The check of ``size`` decay rates ``(beta1, ..., beta<size>)``, each in ``[0, 1)``."""
    kind = {2: 'a pair', 3: 'a triple'}.get(size, f'{size} numbers')
    shown = ', '.join(f'beta{i + 1}' for i in range(size))

    def check(name: str, value: Any) -> tuple:
        if is_traced(value):
            return tuple(value)
        if not isinstance(value, (tuple, list)) or len(value) != size:
            raise ValueError(f'{name} must be {kind} ({shown}), got {value!r}')
        return tuple(open_unit_interval(f'{name}[{i}]', beta) for i, beta in enumerate(value))

    return check


#: A pair of decay rates ``(beta1, beta2)``, each in ``[0, 1)``.
betas = beta_tuple(2)


def choice(*options: str) -> Callable[[str, Any], str]:
    """A check accepting one of the strings ``options``."""

    def check(name: str, value: Any) -> str:
        if value not in options:
            raise ValueError(f'{name} must be one of {", ".join(map(repr, options))}; got {value!r}')
        return value

    return check


def floating_dtype(name: str, value: Any) -> Any:
    """A floating numpy dtype (``jnp.float32``, ``'bfloat16'``, ...), or None."""
    if value is None:
        return None
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f'{name} must be a floating dtype (jnp.float32, jnp.bfloat16, ...) or None, got '
                         f'{getattr(dtype, "name", None) or repr(value)}')
    return dtype


def positive_int(name: str, value: Any) -> int:
    """An integer ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    return int(value)


# -- the hyper-parameters every optimizer declares the same way -----------------------------------

LR = Param('lr', 1e-3, lr_value, 'The learning rate: a number, a stateopt scheduler (it drives every '
           'param group), or a schedule ``count -> lr`` evaluated at the step count.',
           type='float, scheduler or callable')
WEIGHT_DECAY = Param('weight_decay', 0.0, non_negative, 'The weight-decay coefficient, applied as the '
                     'rule above says.')
#: How ``weight_decay`` enters the chain, as the docs of an optimizer say it (see ``_decay``).
DECAY_DOCS = {
    'coupled': 'L2 penalty: ``weight_decay * p`` is added to the gradient.',
    'decoupled': 'Decoupled weight decay: ``p`` is multiplied by ``1 - lr * weight_decay`` at each step.',
    None: WEIGHT_DECAY.doc,
}
GRAD_CLIP_NORM = Param('grad_clip_norm', None, optional_positive, 'Clip the gradients by their global norm '
                       'over all param groups together (``None``: no clipping).', type='float or None')
GRAD_CLIP_VALUE = Param('grad_clip_value', None, optional_positive, 'Clip each gradient element to '
                        '``[-grad_clip_value, grad_clip_value]`` (``None``: no clipping).',
                        type='float or None')
MAXIMIZE = Param('maximize', False, flag, 'Ascend the objective instead of descending it.',
                 type='bool', dynamic=False)
WEIGHT_DECAY_MASK = Param(
    'weight_decay_mask', None, decay_mask_value, 'Which arrays weight decay acts on: ``None`` (all), a '
    'function ``(param_name, value) -> bool`` of each array (``stateopt.decay_matrices_only``), or a dict of '
    '``True``/``False`` keyed like the registered States (an entry for a State covers the arrays in it). '
    'The algorithm still updates every parameter.', type='callable, dict or None', dynamic=False)
