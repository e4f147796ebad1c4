"""Cycles of the lr (and momentum): OneCycleLR, CyclicLR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._hyper import check_number
from ._base import LRScheduler
from ._common import I32, LRs, _choice, _f32, _int, _pick


class _CyclesMomentum(LRScheduler):
    """Schedulers that set absolute lrs and cycle the momentum (or Adam's beta1) with them."""

    _absolute = True

    @property
    def _cycles_momentum(self) -> bool:
        return self.cycle_momentum

    def _set_momenta(self, cycle_momentum: bool, base_momentum: Any, max_momentum: Any) -> None:
        if not isinstance(cycle_momentum, bool):
            raise ValueError(f'cycle_momentum must be True or False, got {cycle_momentum!r}')
        self.cycle_momentum = cycle_momentum
        self.base_momentums = self._per_group_param('base_momentum', base_momentum, low=0.0, high=1.0)
        self.max_momentums = self._per_group_param('max_momentum', max_momentum, low=0.0, high=1.0)


class OneCycleLR(_CyclesMomentum):
    r"""The 1cycle policy (torch.optim.lr_scheduler.OneCycleLR).

    The lr anneals from ``max_lr / div_factor`` up to ``max_lr`` over the first
    ``pct_start * total_steps - 1`` steps, then down to ``max_lr / div_factor /
    final_div_factor`` at step ``total_steps - 1`` (``three_phase``: up, back down to the
    initial lr, then to the final lr). Each phase anneals by
    ``end + (start - end) (1 + cos(pi p)) / 2`` (``'cos'``) or linearly, with ``p`` the
    fraction of the phase done. The momentum (or Adam's beta1) cycles the opposite way
    between ``max_momentum`` and ``base_momentum`` when the optimizer has one. The lrs
    are absolute, as in torch: ``max_lr`` (one value, or one per group) sets every
    group's. From step ``total_steps - 1`` on the lr stays at the final lr (torch
    extrapolates the last phase at ``total_steps``, possibly below zero, then raises).

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.OneCycleLR(max_lr=1.0, total_steps=5, pct_start=0.4,
    ...                             anneal_strategy='linear', div_factor=10.0, final_div_factor=10.0)
    >>> [round(float(sched(t)), 6) for t in range(5)]
    [0.1, 1.0, 0.67, 0.34, 0.01]
    """

    __module__ = 'stateopt'
    _torch_params = ('max_lr', 'total_steps', 'epochs', 'steps_per_epoch', 'pct_start', 'anneal_strategy',
                     'cycle_momentum', 'base_momentum', 'max_momentum', 'div_factor', 'final_div_factor',
                     'three_phase', 'last_epoch')

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'max_lr': "The peak lr (one value, or one per group); every group's lrs follow from it.",
        'total_steps': 'The steps of the cycle (or give ``epochs`` and ``steps_per_epoch``).',
        'epochs': "With ``steps_per_epoch``, the cycle's length when ``total_steps`` is None.",
        'steps_per_epoch': "With ``epochs``, the cycle's length when ``total_steps`` is None.",
        'pct_start': 'The fraction of the cycle spent raising the lr.',
        'anneal_strategy': "``'cos'`` or ``'linear'``: how each phase anneals.",
        'div_factor': 'The initial lr is ``max_lr / div_factor``.',
        'final_div_factor': 'The final lr is the initial lr divided by this.',
        'three_phase': 'Go up, back down to the initial lr, then to the final lr.',
    }

    def __init__(self, max_lr: LRs = 0.01, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3, anneal_strategy: str = 'cos',
                 div_factor: float = 25.0, final_div_factor: float = 1e4, last_epoch: int = 0, *,
                 three_phase: bool = False, cycle_momentum: bool = True,
                 base_momentum: LRs = 0.85, max_momentum: LRs = 0.95):
        if total_steps is not None:
            self.total_steps = _int('total_steps', total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = _int('epochs', epochs, 1) * _int('steps_per_epoch', steps_per_epoch, 1)
        else:
            raise ValueError('OneCycleLR needs total_steps, or both epochs and steps_per_epoch')
        self.max_lrs = self._per_group_param('max_lr', max_lr, low=0.0, low_open=True)
        self.pct_start = check_number('pct_start', pct_start, low=0.0, high=1.0)
        self.anneal_strategy = _choice('anneal_strategy', anneal_strategy, ('cos', 'linear'))
        self.div_factor = check_number('div_factor', div_factor, low=0.0, low_open=True)
        self.final_div_factor = check_number('final_div_factor', final_div_factor, low=0.0, low_open=True)
        if not isinstance(three_phase, bool):
            raise ValueError(f'three_phase must be True or False, got {three_phase!r}')
        self.three_phase = three_phase
        self._set_momenta(cycle_momentum, base_momentum, max_momentum)
        warm = float(self.pct_start * self.total_steps) - 1
        ends = [warm, 2 * warm, self.total_steps - 1.0] if three_phase else [warm, self.total_steps - 1.0]
        starts = [0.0, *ends[:-1]]
        if any(end == start for start, end in zip(starts, ends)):
            raise ValueError(f'pct_start={pct_start!r} with total_steps={self.total_steps} gives a phase '
                             f'of zero steps; change pct_start')
        self._phases = list(zip(starts, ends))
        super().__init__([m / self.div_factor for m in self.max_lrs], last_epoch)

    @property
    def min_lrs(self) -> list[float]:
        """Each group's final lr, ``max_lr / div_factor / final_div_factor`` (torch's ``min_lr``)."""
        return [peak / self.div_factor / self.final_div_factor for peak in self.max_lrs]

    def _anneal(self, start, end, epoch, first, last):
        if self.anneal_strategy == 'cos':
            return end + (start - end) * jnp.square(jnp.sin(jnp.pi / 2 * (last - epoch) / (last - first)))
        return start + (end - start) * (epoch - first) / (last - first)

    def _along(self, points: list, epoch: Any) -> jax.Array:
        """The value at ``epoch`` annealing through ``points`` (one per phase boundary)."""
        epoch = _f32(epoch)
        first, last = self._phases[-1]
        value = self._anneal(points[-2], points[-1], epoch, first, last)
        for i in reversed(range(len(self._phases) - 1)):
            first, last = self._phases[i]
            phase = self._anneal(points[i], points[i + 1], epoch, first, last)
            value = jnp.where(epoch <= last, phase, value)
        return jnp.where(epoch >= self.total_steps - 1, points[-1], value)

    def lr_at(self, base, epoch, group):
        peak = _pick(self.max_lrs, group)
        initial = peak / self.div_factor
        points = [initial, peak, initial] if self.three_phase else [initial, peak]
        return self._along([*points, _pick(self.min_lrs, group)], epoch)

    def _momentum(self, state, group):
        low, high = _pick(self.base_momentums, group), _pick(self.max_momentums, group)
        points = [high, low, high, high] if self.three_phase else [high, low, high]
        return self._along(points, state['last_epoch'])


class CyclicLR(_CyclesMomentum):
    r"""Cyclical learning rates (torch.optim.lr_scheduler.CyclicLR).

    With ``C = step_size_up + step_size_down``, cycle ``c = 1 + floor(t / C)`` and
    ``x = (t mod C)``, the height is ``h = x / step_size_up`` while rising and
    ``(C - x) / step_size_down`` while falling, and ``lr = base_lr + (max_lr - base_lr) * h
    * s``, with ``s = 1`` (``'triangular'``), ``1 / 2 ** (c - 1)`` (``'triangular2'``),
    ``gamma ** t`` (``'exp_range'``) or ``scale_fn`` of ``c`` or ``t`` (by ``scale_mode``).
    The momentum cycles as ``max_momentum - (max_momentum - base_momentum) * h * s`` when
    the optimizer has one. The lrs are absolute, as in torch: ``base_lr`` and ``max_lr``
    (one value, or one per group) set every group's.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.CyclicLR(base_lr=0.1, max_lr=0.5, step_size_up=2, mode='triangular2')
    >>> [round(float(sched(t)), 6) for t in range(7)]
    [0.1, 0.3, 0.5, 0.3, 0.1, 0.2, 0.3]
    """

    __module__ = 'stateopt'
    _torch_params = ('base_lr', 'max_lr', 'step_size_up', 'step_size_down', 'mode', 'gamma', 'scale_fn',
                     'scale_mode', 'cycle_momentum', 'base_momentum', 'max_momentum', 'last_epoch')

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'max_lr': 'The upper lr of the cycle (one value, or one per group).',
        'step_size_up': 'The steps of the rising half of a cycle.',
        'step_size_down': 'The steps of the falling half (``None``: ``step_size_up``).',
        'mode': "``'triangular'``, ``'triangular2'`` (the amplitude halves each cycle) or "
                "``'exp_range'`` (it shrinks by ``gamma`` per step).",
        'gamma': "The amplitude's factor per step in ``'exp_range'`` mode.",
        'scale_fn': 'A custom amplitude ``x -> scale`` (traceable with ``jnp``), replacing ``mode``.',
        'scale_mode': "``'cycle'`` or ``'iterations'``: what ``scale_fn`` is a function of.",
    }

    def __init__(self, base_lr: LRs = 1e-3, max_lr: LRs = 0.01, step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = 'triangular', gamma: float = 1.0,
                 scale_fn: Callable | None = None, scale_mode: str = 'cycle', last_epoch: int = 0, *,
                 cycle_momentum: bool = True, base_momentum: LRs = 0.8, max_momentum: LRs = 0.9):
        self._per_group_param('base_lr', base_lr, low=0.0)
        self.max_lrs = self._per_group_param('max_lr', max_lr, low=0.0)
        self.step_size_up = _int('step_size_up', step_size_up, 1)
        self.step_size_down = self.step_size_up if step_size_down is None else \
            _int('step_size_down', step_size_down, 1)
        _choice('scale_mode', scale_mode, ('cycle', 'iterations'))   # checked even where mode sets it
        if scale_fn is None:
            self.mode = _choice('mode', mode, ('triangular', 'triangular2', 'exp_range'))
            scale_mode = 'iterations' if mode == 'exp_range' else 'cycle'
        elif not callable(scale_fn):
            raise ValueError(f'scale_fn must be a function or None, got {scale_fn!r}')
        else:
            self.mode = mode
        self.scale_fn = scale_fn
        self.scale_mode = _choice('scale_mode', scale_mode, ('cycle', 'iterations'))
        self.gamma = check_number('gamma', gamma, low=0.0, low_open=True)
        self._set_momenta(cycle_momentum, base_momentum, max_momentum)
        super().__init__(base_lr, last_epoch)

    def _height(self, epoch: Any) -> jax.Array:
        """``h * s`` at ``epoch``."""
        epoch = jnp.asarray(epoch, I32)
        size = self.step_size_up + self.step_size_down
        cycle = epoch // size + 1
        position = _f32(epoch % size)
        rising = position <= self.step_size_up
        height = jnp.where(rising, position / self.step_size_up, (size - position) / self.step_size_down)
        if self.scale_fn is not None:
            scale = self.scale_fn(cycle if self.scale_mode == 'cycle' else epoch)
        elif self.mode == 'triangular':
            scale = 1.0
        elif self.mode == 'triangular2':
            scale = jnp.power(_f32(0.5), cycle - 1)
        else:
            scale = jnp.power(_f32(self.gamma), epoch)
        return height * _f32(scale)

    def lr_at(self, base, epoch, group):
        low, high = _pick(self._base_list, group), _pick(self.max_lrs, group)
        return low + (high - low) * self._height(epoch)

    def _momentum(self, state, group):
        low, high = _pick(self.base_momentums, group), _pick(self.max_momentums, group)
        return high - (high - low) * self._height(state['last_epoch'])
