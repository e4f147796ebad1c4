"""Schedulers made of schedulers: SequentialLR, ChainedScheduler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._trace import is_traced
from ._base import LRScheduler
from ._common import I32, _check_lengths, _f32, _int, _like, _pick, _tree_where
from ._plateau import _metric_input
from ._protocol import Driven, _check_optimizer


class _Composite(LRScheduler):
    """A scheduler made of child schedulers that share the groups' lrs."""

    #: Whether each child may have its own base lr (as a multiple of the composite's).
    _own_bases = False

    def _child_bases(self, child: LRScheduler, bases: tuple, groups: tuple) -> tuple:
        """The base lrs ``child`` schedules from: each group's, times the child's ratio to the first's."""
        if child._absolute or child._base_list == self._base_list:
            return bases
        return tuple(base * (_pick(child._base_list, g) / _pick(self._base_list, g))
                     for base, g in zip(bases, groups))

    def _adopt(self, schedulers: Any) -> None:
        if not isinstance(schedulers, (list, tuple)) or not schedulers:
            raise ValueError(f'schedulers must be a non-empty list of schedulers, got {schedulers!r}')
        seen = set()
        for i, child in enumerate(schedulers):
            if not isinstance(child, LRScheduler):
                raise ValueError(f'schedulers[{i}] is a {type(child).__name__}, not a stateopt scheduler')
            if id(child) in seen:
                raise ValueError(f'schedulers[{i}] appears twice; pass distinct schedulers')
            seen.add(id(child))
            if child._parent is not None or child.optimizer is not None:
                raise ValueError(f'schedulers[{i}] is already attached or part of another scheduler; build '
                                 f'the schedulers of a {type(self).__name__} without the optimizer and give '
                                 f'the optimizer to the {type(self).__name__}')
            epoch = child.last_epoch.value
            if not is_traced(epoch) and epoch != 0:
                raise ValueError(f'schedulers[{i}] has been stepped (last_epoch={int(epoch)}); '
                                 f'pass fresh schedulers')
        relative = [(i, c) for i, c in enumerate(schedulers) if not c._absolute]
        for i, child in relative[1:]:
            first, other = relative[0]
            if child._base_list != other._base_list and not self._own_bases:
                raise ValueError(
                    f'schedulers[{i}] has base_lr={_shown(child._base_list)}, but schedulers[{first}] has '
                    f'base_lr={_shown(other._base_list)}; the schedulers of a {type(self).__name__} '
                    f'share each group\'s base lr')
        _check_lengths(type(self).__name__, {f'schedulers[{i}].{name}': count
                                             for i, child in enumerate(schedulers)
                                             for name, count in child._group_lists().items()})
        self._schedulers = list(schedulers)
        self._absolute = not relative
        self._base_list = (relative[0][1] if relative else schedulers[0])._base_list
        for i, child in relative:
            if child._base_list != self._base_list and 0.0 in self._base_list:
                raise ValueError(f'schedulers[{i}] has base_lr={_shown(child._base_list)}, but the first '
                                 f'scheduler\'s base_lr={_shown(self._base_list)} has a zero, so the ratio '
                                 f'of the two is undefined; give the first scheduler a positive base_lr')
        for child in self._schedulers:
            child._join(self)

    @property
    def schedulers(self) -> list[LRScheduler]:
        """The child schedulers."""
        return list(self._schedulers)

    def _group_lists(self):
        return {f'schedulers[{i}].{name}': count for i, child in enumerate(self._schedulers)
                for name, count in child._group_lists().items()}

    def _given_base(self):
        return next((base for child in self._schedulers if (base := child._given_base()) is not None), None)

    def _rebase(self, lr):
        for child in self._schedulers:
            child._rebase(lr)
        super()._rebase(lr)

    def _tree(self):
        yield self
        for child in self._schedulers:
            yield from child._tree()

    def _attach_torch_form(self, optimizer):
        """Take group 0's base lr from ``optimizer`` too, then attach; on error free the children."""
        _check_optimizer(optimizer, f'{type(self).__name__}(..., optimizer)')
        lr = optimizer.param_groups[0].initial_lr
        given = self._given_base()
        saved = [(scheduler, scheduler._base_list) for scheduler in self._tree()]
        try:
            if given is not None and given != (lr,):
                raise ValueError(
                    f'{type(self).__name__} with an optimizer takes each group\'s base lr from the optimizer '
                    f'(group 0: {lr}), but its schedulers were built with base_lr={_shown(given)}; build '
                    f'them without base_lr')
            self._rebase(lr)
            self._setup_states(0)
            self.attach_optimizer(optimizer)
        except Exception:
            for scheduler, base_list in saved:
                scheduler._base_list = base_list
            for child in self._schedulers:
                child._setup_states(0)
            raise

    @property
    def _cycles_momentum(self) -> bool:
        return any(child._cycles_momentum for child in self._schedulers)

    @property
    def _uses_metric(self) -> bool:
        return any(child._uses_metric for child in self._schedulers)

    def _group_base(self, group, initial_lr):
        if self._absolute:
            return self._schedulers[0]._group_base(group, initial_lr)
        return initial_lr

    def _counters(self):
        children = [child._counters() for child in self._schedulers]
        return {'last_epoch': self.last_epoch, 'schedulers': children}

    def _counters_at(self, epoch):
        return {'last_epoch': jnp.asarray(epoch, I32),
                'schedulers': [child._counters_at(0) for child in self._schedulers]}

    def _setup_composite(self, start: int) -> None:
        self._setup_states(0)
        for _ in range(start):
            self._run(None, None)

    def _simulate(self, values: dict, bases: tuple, groups: tuple, count: Any) -> tuple[dict, dict]:
        """The counters and ``values`` after ``count`` metric-free steps from a fresh start."""
        start = (self._counters_at(0), self._initial_step({**values, 'lr': bases}, bases, groups))
        if not is_traced(count) and count == 0:
            return start

        def body(_, carry):
            return _like(self._step_once(*carry, bases, groups), carry)

        return jax.lax.fori_loop(0, jnp.asarray(count, I32), body, _like(start, start))

    def _advance(self, state, values, bases, groups, epoch=None, metric=None):
        if epoch is None:
            return self._step_once(state, values, bases, groups, metric)
        return self._simulate(values, tuple(map(_f32, bases)), groups, epoch)

    def _step_once(self, state: dict, values: dict, bases: tuple, groups: tuple, metric: Any = None):
        """One step of every child as the composite runs them."""
        raise NotImplementedError

    def _joining_values(self, values, bases, groups, state):
        return self._simulate(values, tuple(map(_f32, bases)), groups, state['last_epoch'])[1]

    def _values_on_switch(self, values, bases, groups):
        return self._initial_step({**values, 'lr': bases}, bases, groups)

    def _schedule_lr(self, count, base):
        return self._simulate({'lr': (base,), 'momentum': None}, (_f32(base),), (0,), count)[1]['lr'][0]

    def _bind_children(self, optimizer):
        for child in self._schedulers:
            child.optimizer = optimizer
            child._bind_children(optimizer)

    def step(self, metric: Any = None, epoch: int | None = None) -> None:  # type: ignore[override]
        """Advance one step, or jump to ``epoch``; ``metric`` feeds the ReduceLROnPlateau schedulers inside.

        A composite without a ReduceLROnPlateau takes no metric, so its one positional
        argument is the epoch, as braintools' ``step(epoch)``. Jumping replays the
        steps from a fresh start (exact for the recursive children too); a composite
        holding a ReduceLROnPlateau cannot jump, since its lr depends on the metrics seen.
        """
        self._require_root('step')
        if self._uses_metric:
            if epoch is not None:
                raise ValueError(f'this {type(self).__name__} holds a ReduceLROnPlateau, whose lr depends on '
                                 f'every metric seen, so it cannot jump to epoch={epoch!r}; call '
                                 f'step(metric) once per step')
            self._run(None, _metric_input(metric))
            return
        if metric is not None:
            if epoch is not None:
                raise ValueError(f'this {type(self).__name__} holds no ReduceLROnPlateau, so it takes no '
                                 f'metric; call step(epoch={epoch!r})')
            if not is_traced(metric) and (isinstance(metric, bool)
                                          or not isinstance(metric, (int, np.integer))):
                raise ValueError(f'this {type(self).__name__} holds no ReduceLROnPlateau, so it takes no '
                                 f'metric: its one argument is the epoch to jump to (an integer), got '
                                 f'{metric!r}')
            epoch = metric
        self._run(None if epoch is None else self._epoch_input(epoch), None)


def _shown(base_list: tuple) -> Any:
    return base_list[0] if len(base_list) == 1 else list(base_list)


class SequentialLR(_Composite):
    r"""Run ``schedulers[i]`` from ``milestones[i - 1]`` on (torch.optim.lr_scheduler.SequentialLR).

    At step ``t`` the scheduler ``i = number of milestones <= t`` is active, at its own
    step ``t - milestones[i - 1]``; at its milestone it starts afresh (torch's
    ``_update_lr(0)``), then steps on from the lr it set. The switch is traced
    (``jnp.where`` over the candidates), so it is exact inside ``jit``. Any scheduler
    may be a child, ReduceLROnPlateau included: then call ``step(metric)``. A child's
    ``state_dict`` holds its own counters. torch's form,
    ``SequentialLR(optimizer, schedulers, milestones)``, takes children built without
    the optimizer (nor ``base_lr``: the optimizer's lrs are the base lrs). A child
    built with its own ``base_lr`` (as braintools allows) runs each group from
    ``b_g * child.base_lr / first.base_lr``, the first relative child's base being the
    composite's: group 0 then follows the child's own base lr.

    Examples
    --------
    >>> import stateopt
    >>> warmup = stateopt.LinearLR(base_lr=1.0, start_factor=0.5, total_iters=2)
    >>> decay = stateopt.ExponentialLR(base_lr=1.0, gamma=0.5)
    >>> sched = stateopt.SequentialLR([warmup, decay], milestones=[2])
    >>> [round(float(sched(t)), 6) for t in range(5)]
    [0.5, 0.75, 1.0, 0.5, 0.25]
    """

    __module__ = 'stateopt'
    _own_bases = True

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'schedulers': 'The schedulers, built without an optimizer, run one after the other.',
        'milestones': 'The steps at which the next scheduler takes over (one fewer than the schedulers).',
    }

    def __init__(self, schedulers: Sequence[LRScheduler], milestones: Sequence[int], last_epoch: int = 0):
        if not isinstance(milestones, (list, tuple)):
            raise ValueError(f'milestones must be a list of integers, got {milestones!r}')
        self.milestones = [_int(f'milestones[{i}]', m, 1) for i, m in enumerate(milestones)]
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError(f'milestones must be strictly increasing, got {list(milestones)}')
        if isinstance(schedulers, (list, tuple)) and len(schedulers) != len(self.milestones) + 1:
            raise ValueError(f'SequentialLR needs one scheduler more than milestones; got '
                             f'{len(schedulers)} schedulers and {len(self.milestones)} milestones')
        self._adopt(schedulers)
        self._setup_composite(_int('last_epoch', last_epoch, 0))

    @property
    def current_scheduler_idx(self) -> jax.Array:
        """The index of the scheduler active at the current step (the number of milestones passed)."""
        return jnp.searchsorted(jnp.asarray(self.milestones, I32), self.last_epoch.value, side='right')

    def _initial_step(self, values, bases, groups):
        first = self._schedulers[0]
        return first._initial_step(values, self._child_bases(first, bases, groups), groups)

    def _step_once(self, state, values, bases, groups, metric=None):
        step = optax.safe_increment(state['last_epoch'])
        active = jnp.searchsorted(jnp.asarray(self.milestones, I32), step, side='right')
        children, chosen = [], values
        for i, (child, own) in enumerate(zip(self._schedulers, state['schedulers'])):
            own_bases = self._child_bases(child, bases, groups)
            new_state, new_values = child._advance(own, values, own_bases, groups, None, metric)
            if i > 0:
                switching = step == self.milestones[i - 1]
                new_state = _tree_where(switching, child._counters_at(0), new_state)
                switched = child._values_on_switch(values, own_bases, groups)
                new_values = _tree_where(switching, switched, new_values)
            children.append(_like(_tree_where(active == i, new_state, own), own))
            chosen = _tree_where(active == i, new_values, chosen)
        return {'last_epoch': step, 'schedulers': children}, chosen


class ChainedScheduler(_Composite):
    r"""Step every scheduler in turn on the same lrs (torch.optim.lr_scheduler.ChainedScheduler).

    Each step, each scheduler transforms the lr the previous one left, as in torch:
    the recursive ones multiply it (so ``ExponentialLR`` after ``ConstantLR`` gives
    their product), the closed-form ones (LambdaLR, CyclicLR, OneCycleLR,
    CosineAnnealingWarmRestarts and the braintools schedules) set it. Any scheduler
    may be chained, ReduceLROnPlateau included: then call ``step(metric)``. Given
    ``optimizer`` (torch's signature), it attaches to it, every group's base lr being
    its lr there; the children are then built without the optimizer (nor ``base_lr``).
    Children built with their own ``base_lr`` (as braintools allows) start from the
    first's: a closed-form child sets ``b_g * child.base_lr / first.base_lr``, a
    recursive one multiplies, so ``[ConstantLR(factor=0.1), MultiStepLR(base_lr=0.1)]``
    starts at ``0.1`` times the first's base lr, as in braintools.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.ChainedScheduler([
    ...     stateopt.ConstantLR(base_lr=1.0, factor=0.5, total_iters=2),
    ...     stateopt.ExponentialLR(base_lr=1.0, gamma=0.9)])
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [0.5, 0.45, 0.81, 0.729]
    """

    __module__ = 'stateopt'
    _own_bases = True

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'schedulers': 'The schedulers, built without an optimizer, all stepped at every step.',
        'optimizer': "The optimizer to drive (torch's form), or ``None``.",
    }

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Driven | None = None):
        self._adopt(schedulers)
        self._setup_composite(0)
        if optimizer is not None:
            self._attach_torch_form(optimizer)

    def _initial_step(self, values, bases, groups):
        for child in self._schedulers:
            values = child._initial_step(values, self._child_bases(child, bases, groups), groups)
        return values

    def _step_once(self, state, values, bases, groups, metric=None):
        children = []
        for child, own in zip(self._schedulers, state['schedulers']):
            own_bases = self._child_bases(child, bases, groups)
            own_new, values = child._advance(own, values, own_bases, groups, None, metric)
            children.append(_like(own_new, own))
        return {'last_epoch': optax.safe_increment(state['last_epoch']), 'schedulers': children}, values
