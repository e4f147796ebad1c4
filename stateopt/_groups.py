"""Param groups: one group's States and hyper-parameters as a dict, and the read-only list of groups."""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import brainstate
import jax.numpy as jnp
import numpy as np

from ._base import NodeMeta
from ._state import OptimState, ReadableKeyError, deepcopy_owning_states, unflatten
from ._trace import is_traced

__all__ = ['ParamGroup', 'ParamGroups', 'as_dynamic', 'to_python']


def as_dynamic(value: Any) -> Any:
    """A dynamic hyper-parameter as the compiled step receives it: float32 scalars."""
    if type(value) in (tuple, list):
        return tuple(jnp.asarray(v, jnp.float32) for v in value)
    return jnp.asarray(value, jnp.float32)


def to_python(value: Any) -> Any:
    """Concrete scalars as Python numbers (traced values are returned as they are)."""
    if type(value) is tuple:
        return tuple(to_python(v) for v in value)
    if is_traced(value) or not hasattr(value, 'shape'):
        return value
    value = np.asarray(value)
    if value.dtype == np.float32:  # the shortest decimal that is this float32: 0.01, not 0.0099999998
        return float(str(value))
    return value.item()


class ParamGroup(brainstate.graph.Node, MutableMapping, metaclass=NodeMeta):
    """One param group: its States and its hyper-parameters, as a dict.

    ``group['params']`` is a dict of the group's States under their registered keys.
    Every other key is a hyper-parameter of the optimizer. Reading ``group['lr']``
    gives the value the next step uses; assigning a number to a *dynamic*
    hyper-parameter (``lr``, ``weight_decay``, betas, momentum, ...) takes effect at
    the next step, inside or outside ``jit``, without recompiling. Static ones (flags,
    strings, sizes, transforms) are fixed when the group is created.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> opt = stateopt.SGD(lr=0.1).register_trainable_weights(
    ...     {'w': brainstate.ParamState(jnp.ones(2))})
    >>> group = opt.param_groups[0]
    >>> group['lr'] = 0.05
    >>> round(float(group['lr']), 6)
    0.05
    """

    __module__ = 'stateopt'

    def __init__(self, optimizer: Any, positions: list[int], hyperparams: dict,
                 explicit: bool):
        self._optimizer = optimizer
        self._positions = positions
        self._explicit = explicit
        #: The hyper-parameters this group was given (the others follow the optimizer's defaults).
        self.overridden: frozenset[str] = frozenset()
        specs = optimizer._hyperparams
        self._static: dict[str, Any] = {}
        dynamic: dict[str, Any] = {}
        self._lr_schedule: Callable | None = None
        for name, value in hyperparams.items():
            if name == 'lr' and callable(value) and not hasattr(value, 'shape'):
                self._lr_schedule = value
            elif specs[name].dynamic and value is not None:
                dynamic[name] = as_dynamic(value)
            else:
                self._static[name] = value
        self._hyper = OptimState(dynamic)
        self.initial_lr = self._current_lr_number(hyperparams['lr'], 0)

    @staticmethod
    def _current_lr_number(lr: Any, count: int) -> float:
        return float(lr(count)) if callable(lr) else float(lr)

    # -- the mapping -------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key == 'params':
            registry = self._optimizer._registry
            return unflatten([registry.paths[i] for i in self._positions],
                             [registry.states[i] for i in self._positions])
        if key == 'lr' and self._lr_schedule is not None:
            return self._lr_schedule(self._optimizer.step_count.value)
        hyper = self._hyper.value
        if key in hyper:
            return hyper[key]
        if key in self._static:
            return self._static[key]
        raise ReadableKeyError(f'param groups have no key {key!r}; the keys are {", ".join(map(repr, self))}')

    def __setitem__(self, key: str, value: Any) -> None:
        value = self.check(key, value)
        optimizer = self._optimizer
        if key == 'lr' and callable(value) and not hasattr(value, 'shape'):
            self._lr_schedule = value
            optimizer._invalidate()
            return
        if key == 'lr' and self._lr_schedule is not None:
            self._lr_schedule = None  # a number replaces the schedule: one compile
            optimizer._invalidate()
        self.assign(key, value)

    def check(self, key: str, value: Any) -> Any:
        """Raise what ``group[key] = value`` would raise, and change nothing; return the value checked.

        Parameters
        ----------
        key : str
            A hyper-parameter of the optimizer.
        value : Any
            The value to check.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> opt = stateopt.SGD(lr=0.1, momentum=0.5).register_trainable_weights(
        ...     {'w': brainstate.ParamState(jnp.ones(2))})
        >>> opt.param_groups[0].check('momentum', 0.9)
        0.9
        >>> opt.param_groups[0].check('lr', -1.0)
        Traceback (most recent call last):
            ...
        ValueError: lr must be >= 0.0, got -1.0
        >>> float(opt.param_groups[0]['momentum'])  # unchanged
        0.5
        """
        optimizer = self._optimizer
        if key == 'params':
            raise ReadableKeyError("a group's params are set by add_param_group and "
                                   "register_trainable_weights, not by assignment")
        if key not in optimizer._hyperparams:
            raise ReadableKeyError(f'{type(optimizer).__name__} has no hyper-parameter {key!r}; '
                                   f'its hyper-parameters are {", ".join(map(repr, optimizer._hyperparams))}')
        value = optimizer._hyperparams[key].check(key, value)
        if key == 'lr' and callable(value) and not hasattr(value, 'shape'):
            if optimizer._scheduler is not None:
                raise ValueError('this optimizer\'s lr scheduler drives every group; a group cannot '
                                 'take its own lr schedule')
            return value
        replaces_schedule = key == 'lr' and self._lr_schedule is not None
        if (key not in self._hyper.value and not replaces_schedule) or value is None:
            was = self._static.get(key, to_python(self._hyper.value.get(key)))
            raise ValueError(
                f'{key!r} is fixed when the group is created (it is {was!r} in group '
                f'{self.index}); pass {key}= to the constructor or to add_param_group instead'
            )
        if not is_traced(value) and not replaces_schedule:
            optimizer._check({**self.hyperparams(), key: value})
            optimizer._check_assignment(self, key, value)
        return value

    def assign(self, key: str, value: Any) -> None:
        """Write the dynamic hyper-parameter ``key`` without checks (jit-safe): how schedulers set values.

        Check a concrete value first with :meth:`check`; a traced one cannot be checked.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> opt = stateopt.SGD(lr=0.1).register_trainable_weights({'w': brainstate.ParamState(jnp.ones(2))})
        >>> opt.param_groups[0].assign('lr', 0.5)
        >>> round(float(opt.param_groups[0]['lr']), 6)
        0.5
        """
        self._hyper.value = {**self._hyper.value, key: self._optimizer._placed(as_dynamic(value))}

    def __delitem__(self, key: str) -> None:
        raise ReadableKeyError('param group keys cannot be deleted')

    def __iter__(self) -> Iterator[str]:
        yield 'params'
        yield from self._optimizer._hyperparams

    def __len__(self) -> int:
        return 1 + len(self._optimizer._hyperparams)

    # -- helpers -----------------------------------------------------------------
    @property
    def index(self) -> int:
        """This group's position in ``optimizer.param_groups``, found by identity (``list.index``
        would compare the contents of every earlier group: a group is a Mapping)."""
        return next(i for i, group in enumerate(self._optimizer._groups) if group is self)

    @property
    def names(self) -> list[str]:
        """The parameter names (see :func:`stateopt.param_name`) of this group."""
        names = self._optimizer._registry.names
        return [names[i] for i in self._positions]

    def hyperparams(self) -> dict:
        """Every hyper-parameter value, dynamic ones as Python numbers when concrete."""
        return {key: to_python(self[key]) for key in self._optimizer._hyperparams}

    @property
    def lr_schedule(self) -> Callable | None:
        """The schedule ``count -> lr`` this group's lr follows, or ``None`` for a number.

        Assigning a number to ``group['lr']`` replaces the schedule for good (the
        number is the lr from then on); assigning a schedule brings one back.
        """
        return self._lr_schedule

    def __deepcopy__(self, memo: dict) -> ParamGroup:
        """A copy owning copies of its States (within an optimizer's deep copy, the optimizer's)."""
        return deepcopy_owning_states(self, memo)

    def __repr__(self) -> str:
        shown = ', '.join(f'{key}={lr_shown(self) if key == "lr" else repr(value)}'
                          for key, value in self.hyperparams().items()
                          if key == 'lr' or not callable(value))
        return f'ParamGroup({len(self._positions)} params, {shown})'


def lr_shown(group: ParamGroup) -> str:
    """A group's lr as reprs show it: the scheduler's or schedule's name, or the number."""
    scheduler = group._optimizer._scheduler
    if scheduler is not None:
        return type(scheduler).__name__
    if group._lr_schedule is not None:
        name = getattr(group._lr_schedule, '__name__', type(group._lr_schedule).__name__)
        return '<schedule>' if name in ('schedule', '<lambda>') else f'<schedule {name}>'
    return repr(to_python(group['lr']))


class ParamGroups(list):
    """An optimizer's param groups: a list that refuses to be changed in place.

    Appending a dict to it would not create a group (torch's optimizers keep their
    groups in a plain list); :meth:`OptaxOptimizer.add_param_group` does.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> opt = stateopt.SGD(lr=0.1).register_trainable_weights(
    ...     {'w': brainstate.ParamState(jnp.ones(2))})
    >>> len(opt.param_groups)
    1
    >>> opt.param_groups.append({'params': {}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: param_groups cannot be changed in place; add a group with opt.add_param_group(...
    """

    __module__ = 'stateopt'

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError('param_groups cannot be changed in place; add a group with '
                        'opt.add_param_group(states, lr=...) and edit one through its keys '
                        "(opt.param_groups[0]['lr'] = ...)")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
