"""Cosine annealing: CosineAnnealingLR, CosineAnnealingWarmRestarts, WarmupCosineSchedule."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from .._hyper import check_number
from .._trace import is_traced
from ._base import LRScheduler
from ._common import F32, I32, LRs, _cos_weight, _f32, _int


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from ``b_g`` to ``eta_min`` over ``T_max`` steps (torch's CosineAnnealingLR).

    ``lr_t = eta_min + (b_g - eta_min) * (1 + cos(pi t / T_max)) / 2``; past ``T_max`` the
    cosine continues, rising back to ``b_g`` at ``2 T_max``, as torch's. Stepping uses
    torch's recursive form, which continues from the group's current lr.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.CosineAnnealingLR(base_lr=1.0, T_max=2)
    >>> [round(float(sched(t)), 6) for t in range(5)]
    [1.0, 0.5, 0.0, 0.5, 1.0]
    """

    __module__ = 'stateopt'

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'T_max': 'The steps of the half cosine from ``base_lr`` to ``eta_min``.',
    }

    def __init__(self, base_lr: LRs = 1e-3, T_max: int = 50, eta_min: float = 0.0, last_epoch: int = 0):
        self.T_max = _int('T_max', T_max, 1)
        self.eta_min = check_number('eta_min', eta_min, low=0.0)
        super().__init__(base_lr, last_epoch)

    def lr_at(self, base, epoch, group):
        return self.eta_min + (base - self.eta_min) * _cos_weight(epoch, self.T_max)

    def next_lr(self, lr, base, epoch, group):
        before = _cos_weight(epoch - 1, self.T_max)
        at_bottom = before == 0  # torch's branch (t - 1 - T_max) % (2 T_max) == 0
        ratio = _cos_weight(epoch, self.T_max) / jnp.where(at_bottom, 1.0, before)
        rise = lr + (base - self.eta_min) * _cos_weight(self.T_max - 1, self.T_max)
        stepped = jnp.where(at_bottom, rise, ratio * (lr - self.eta_min) + self.eta_min)
        return jnp.where(epoch == 0, lr, stepped)


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing with warm restarts (SGDR; torch's CosineAnnealingWarmRestarts).

    ``lr = eta_min + (b_g - eta_min) * (1 + cos(pi T_cur / T_i)) / 2``, where ``T_cur``
    counts the steps since the last restart and the ``i``-th cycle lasts
    ``T_i = T_0 * T_mult ** i`` steps. ``step(epoch)`` accepts fractional epochs.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.CosineAnnealingWarmRestarts(base_lr=1.0, T_0=2, T_mult=2)
    >>> [round(float(sched(t)), 6) for t in range(7)]
    [1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0]
    """

    __module__ = 'stateopt'
    _extra_counters = ('T_cur', 'T_i')

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'T_0': 'The steps of the first cycle.',
        'T_mult': 'The factor each cycle is longer than the one before.',
    }

    def __init__(self, base_lr: LRs = 1e-3, T_0: int = 10, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = 0):
        self.T_0 = _int('T_0', T_0, 1)
        self.T_mult = _int('T_mult', T_mult, 1)
        self.eta_min = check_number('eta_min', eta_min, low=0.0)
        starts, lengths, cycle = [0], [self.T_0], self.T_0
        while self.T_mult > 1 and starts[-1] + cycle * self.T_mult < 2 ** 31:
            starts.append(starts[-1] + cycle)
            cycle *= self.T_mult
            lengths.append(cycle)
        self._cycle_starts, self._cycle_lengths = starts, lengths
        super().__init__(base_lr, last_epoch)

    def _position(self, epoch: Any) -> tuple[jax.Array, jax.Array]:
        """``(T_cur, T_i)`` at ``epoch`` (an integer or fractional epoch)."""
        epoch = _f32(epoch)
        if self.T_mult == 1:
            return jnp.mod(epoch, self.T_0), jnp.asarray(self.T_0, I32)
        cycle = jnp.sum(epoch >= jnp.asarray(self._cycle_starts[1:], F32)).astype(I32)
        start = jnp.asarray(self._cycle_starts, F32)[cycle]
        return epoch - start, jnp.asarray(self._cycle_lengths, I32)[cycle]

    def _counters_at(self, epoch):
        t_cur, t_i = self._position(epoch)
        return {'last_epoch': jnp.asarray(epoch, I32), 'T_cur': t_cur, 'T_i': t_i}

    def _lr(self, base, state):
        return self.eta_min + (base - self.eta_min) * _cos_weight(state['T_cur'], state['T_i'])

    def lr_at(self, base, epoch, group):
        return self._lr(base, self._counters_at(epoch))

    def _joining_values(self, values, bases, groups, state):
        return {**values, 'lr': tuple(_f32(self._lr(base, state)) for base in bases)}

    def _initial_step(self, values, bases, groups):
        return self._joining_values(values, bases, groups, self._counters_at(0))

    def _epoch_input(self, epoch):
        if is_traced(epoch):
            return _f32(epoch)
        return _f32(check_number('epoch', epoch, low=0.0))

    def _advance(self, state, values, bases, groups, epoch=None, metric=None):
        if epoch is None:
            t_cur = state['T_cur'] + 1
            restart = t_cur >= state['T_i']
            state = {'last_epoch': optax.safe_increment(state['last_epoch']),
                     'T_cur': jnp.where(restart, jnp.mod(t_cur, _f32(state['T_i'])), t_cur),
                     'T_i': jnp.where(restart, state['T_i'] * self.T_mult, state['T_i'])}
        else:
            t_cur, t_i = self._position(epoch)
            state = {'last_epoch': jnp.floor(epoch).astype(I32), 'T_cur': t_cur, 'T_i': t_i}
        return state, self._joining_values(values, bases, groups, state)


class WarmupCosineSchedule(LRScheduler):
    r"""Linear warm-up to the base lr, then cosine decay to ``eta_min`` at ``total_steps``.

    ``lr_t = s + (b_g - s) t / W`` for ``t < W`` (``s`` = ``warmup_start_lr``, ``W`` =
    ``warmup_steps``), then ``eta_min + (b_g - eta_min) (1 + cos(pi p)) / 2`` with
    ``p = min((t - W) / (total_steps - W), 1)``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.WarmupCosineSchedule(base_lr=1.0, warmup_steps=2, total_steps=4)
    >>> [round(float(sched(t)), 6) for t in range(6)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """

    __module__ = 'stateopt'

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'warmup_steps': 'The steps of the linear warm-up to ``base_lr``.',
        'total_steps': 'The steps of warm-up and cosine together; the lr stays at ``eta_min`` after.',
    }

    def __init__(self, base_lr: LRs = 1e-3, warmup_steps: int = 1000, total_steps: int = 10000,
                 warmup_start_lr: float = 0.0, eta_min: float = 0.0, last_epoch: int = 0):
        self.warmup_steps = _int('warmup_steps', warmup_steps, 0)
        self.total_steps = _int('total_steps', total_steps, self.warmup_steps + 1)
        self.warmup_start_lr = check_number('warmup_start_lr', warmup_start_lr, low=0.0)
        self.eta_min = check_number('eta_min', eta_min, low=0.0)
        super().__init__(base_lr, last_epoch)

    def lr_at(self, base, epoch, group):
        warm = self.warmup_start_lr + (base - self.warmup_start_lr) * _f32(epoch) / max(self.warmup_steps, 1)
        decay = self.total_steps - self.warmup_steps
        done = jnp.clip(epoch - self.warmup_steps, 0, decay)
        cosine = self.eta_min + (base - self.eta_min) * _cos_weight(done, decay)
        return jnp.where(epoch < self.warmup_steps, warm, cosine)
