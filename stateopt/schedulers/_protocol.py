"""The scheduler's side of the protocol with the optimizer it drives.

A scheduler reads ``optimizer.param_groups`` (``group['lr']``, ``group.initial_lr``,
``group.lr_schedule``, the cycled ``'momentum'`` or ``'betas'``), sets values with
``group.assign``, announces itself with ``optimizer.scheduler_attached``, and is told of
new groups by ``check_new_group`` and ``group_added``. :class:`Driven` names the
optimizer's side; this package imports no optimizer module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .._placement import mesh_of, placed
from ._common import _f32


def _group_values(groups: Sequence, momentum_key: str | None) -> dict:
    """The lrs of ``groups`` and, when a scheduler cycles it, their momentum (or beta1)."""
    momenta = None
    if momentum_key == 'betas':
        momenta = tuple(group['betas'][0] for group in groups)
    elif momentum_key == 'momentum':
        momenta = tuple(group['momentum'] for group in groups)
    return {'lr': tuple(group['lr'] for group in groups), 'momentum': momenta}


@runtime_checkable
class Driven(Protocol):
    """What a scheduler uses of the optimizer it drives: the public protocol, and nothing else.

    ``param_groups`` (each group's ``['lr']``, ``initial_lr``, ``index``, ``lr_schedule`` and
    ``assign(name, value)``), ``defaults`` (which momentum a cycling scheduler varies) and
    ``scheduler_attached(scheduler, cycles, first)``; the optimizer in turn calls the
    scheduler's ``check_new_group`` and ``group_added``. Every stateopt optimizer has it.

    Examples
    --------
    >>> import stateopt
    >>> from stateopt.schedulers import Driven
    >>> isinstance(stateopt.SGD(lr=0.1), Driven)
    True
    """

    param_groups: Any
    defaults: Any

    def scheduler_attached(self, scheduler: Any, cycles: str | None = None, first: Any = None) -> None:
        """Be driven by ``scheduler`` from now on."""


def _check_optimizer(value: Any, what: str) -> None:
    if not isinstance(value, Driven):
        raise TypeError(f'{what} expects a stateopt optimizer (such as stateopt.SGD(...) or '
                        f'stateopt.AdamW(...)), or an object with the same param_groups, defaults and '
                        f'scheduler_attached, got {type(value).__name__}: {value!r}')


class Driving:
    """The part of :class:`LRScheduler` that reads and writes the groups of the optimizer it drives."""

    def _read_values(self) -> dict:
        if self.optimizer is None:
            return {'lr': tuple(self._lrs.value), 'momentum': None}
        return _group_values(self.optimizer.param_groups, self._momentum_key)

    def _write_values(self, values: dict, groups: Sequence | None = None) -> None:
        if self.optimizer is None:
            self._lrs.value = tuple(values['lr'])
            return
        groups = self.optimizer.param_groups if groups is None else groups
        for group, lr in zip(groups, values['lr']):
            group.assign('lr', lr)
        for group, momentum in zip(groups, values['momentum'] or ()):
            if self._momentum_key == 'betas':
                group.assign('betas', (momentum, group['betas'][1]))
            else:
                group.assign('momentum', momentum)

    def attach_optimizer(self, optimizer: Any) -> None:
        """Drive every param group of ``optimizer`` (done by ``OptimizerClass(lr=scheduler)``).

        Each group's lr becomes the schedule's value at the current step for that
        group's base lr; group 0 continues from this scheduler's own lr. A ``base_lr``
        list (braintools' form) gives the base lr of the groups it lists, in order;
        the others take their ``lr``. Afterwards the groups' lr States are the only copy
        of the lrs.

        A per-group list (``max_lr=[...]``, ``min_lr=[...]``, ...) must have one value
        per group. While the optimizer has no parameters yet (``OptimizerClass(lr=
        scheduler)``) it may have more, for the groups still to be added; stepping
        checks that they all were.

        Raises
        ------
        TypeError
            ``optimizer`` is not a stateopt optimizer.
        ValueError
            The scheduler is attached elsewhere, the optimizer has another scheduler or a
            group with its own lr schedule, a per-group list does not match the groups, or a
            group cannot vary the momentum this scheduler cycles. Nothing changes.
        """
        _check_optimizer(optimizer, f'{type(self).__name__}.attach_optimizer')
        self._require_root('attach')
        if self.optimizer is optimizer:
            return
        if self.optimizer is not None:
            raise ValueError(f'this {type(self).__name__} is already attached to another optimizer')
        groups = optimizer.param_groups
        for group in groups:
            if group.lr_schedule is not None:
                raise ValueError(
                    f'param group {group.index} has its own lr schedule (lr={group.lr_schedule!r}), which a '
                    f'scheduler cannot drive; give the optimizer a number lr (torch\'s form takes it as the '
                    f'base lr), or pass the scheduler as its lr=')
        self._check_group_lists(len(groups), pending=not any(group.names for group in groups))
        key = None
        if self._cycles_momentum:
            hyperparams = optimizer.defaults
            key = 'betas' if 'betas' in hyperparams else 'momentum' if 'momentum' in hyperparams else None
        bases = tuple(_f32(self._group_base(g, self.base_lr if g == 0 else group.initial_lr))
                      for g, group in enumerate(groups))
        values = self._joining_values(_group_values(groups, key), bases, tuple(range(len(groups))),
                                      self._state())
        own = tuple(self._lrs.value)
        optimizer.scheduler_attached(self, key, values['momentum'])
        self.optimizer, self._momentum_key = optimizer, key
        self._set_bases(bases)
        self._lrs = None
        self._write_values({**values, 'lr': own + values['lr'][len(own):]})
        self._bind_children(optimizer)

    def _group_lists(self) -> dict[str, int]:
        """The per-group list parameters given as lists, ``{name: number of values}``."""
        return dict(self._listed)

    def _check_group_lists(self, groups: int, pending: bool = False) -> None:
        """Refuse a per-group list without one value per group (``pending``: more may come)."""
        for name, count in self._group_lists().items():
            if count < groups or (count > groups and not pending):
                raise ValueError(
                    f'{type(self).__name__}: {name} has {count} values (one per param group), but the '
                    f'optimizer has {groups} param group{"s" if groups != 1 else ""}; give one value per '
                    f'group, or a single value for all groups')

    def _set_bases(self, bases: tuple) -> None:
        """Store the groups' base lrs beside their lrs: on the parameters' mesh when they are sharded,
        and the epoch counters with them."""
        groups = () if self.optimizer is None else self.optimizer.param_groups
        mesh = mesh_of([group['lr'] for group in groups])
        self._bases.value = placed(bases, mesh)
        for name in ('last_epoch', *self._extra_counters):
            state = getattr(self, name)
            state.value = placed(state.value, mesh)

    def _bind_children(self, optimizer: Any) -> None:
        """Composites point their children at ``optimizer``."""

    def check_new_group(self, hyperparams: Mapping) -> None:
        """Refuse, before the optimizer adds it, a group this scheduler cannot drive.

        Called by the optimizer's ``add_param_group`` with the new group's
        hyper-parameters; a group past the end of a per-group list is refused.

        Parameters
        ----------
        hyperparams : dict
            The new group's hyper-parameters, checked by the optimizer.
        """
        groups = len(self.optimizer.param_groups)
        for name, count in self._group_lists().items():
            if count <= groups:
                raise ValueError(
                    f'{type(self).__name__}: {name} has {count} values (one per param group) and the '
                    f'optimizer already has {groups} param group{"s" if groups != 1 else ""}, so a new group '
                    f'would have none; list one value per group when building the scheduler, or give a '
                    f'single value for all groups')

    def group_added(self, group: Any) -> None:
        """Schedule a new group from the current step (the optimizer calls this after ``add_param_group``).

        Parameters
        ----------
        group : ParamGroup
            The new group, ``optimizer.param_groups[-1]``.
        """
        index = group.index
        base = _f32(self._group_base(index, group.initial_lr))
        self._set_bases((*self._bases.value, base))
        values = self._read_values()
        mine = {'lr': values['lr'][index:index + 1],
                'momentum': None if values['momentum'] is None else values['momentum'][index:index + 1]}
        values = self._joining_values(mine, (base,), (index,), self._state())
        self._write_values(values, [group])

