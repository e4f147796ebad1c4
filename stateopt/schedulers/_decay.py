"""Step and exponential decays: StepLR, MultiStepLR, ExponentialLR, PolynomialLR, ExponentialDecayLR,
PiecewiseConstantSchedule."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from .._hyper import check_number
from ._base import LRScheduler
from ._common import F32, I32, LRs, _f32, _int, _per_group


class StepLR(LRScheduler):
    r"""Decay the lr by ``gamma`` every ``step_size`` steps (torch.optim.lr_scheduler.StepLR).

    ``lr_t = b_g * gamma ** floor(t / step_size)``; stepping multiplies the group's
    current lr by ``gamma`` at every multiple of ``step_size`` (torch's chainable form).

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.StepLR(base_lr=0.1, step_size=2, gamma=0.5)
    >>> [round(float(sched(t)), 6) for t in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """

    __module__ = 'stateopt'

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'step_size': 'The steps between two decays.',
    }

    def __init__(self, base_lr: LRs = 1e-3, step_size: int = 30, gamma: float = 0.1, last_epoch: int = 0):
        self.step_size = _int('step_size', step_size, 1)
        self.gamma = check_number('gamma', gamma, low=0.0)
        super().__init__(base_lr, last_epoch)

    def lr_at(self, base, epoch, group):
        return base * jnp.power(_f32(self.gamma), epoch // self.step_size)

    def next_lr(self, lr, base, epoch, group):
        return jnp.where((epoch > 0) & (epoch % self.step_size == 0), lr * self.gamma, lr)


class MultiStepLR(LRScheduler):
    r"""Decay the lr by ``gamma`` at each milestone (torch.optim.lr_scheduler.MultiStepLR).

    ``lr_t = b_g * gamma ** (number of milestones <= t)``; a milestone listed twice
    decays twice.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.MultiStepLR(base_lr=1.0, milestones=[1, 3], gamma=0.1)
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [1.0, 0.1, 0.1, 0.01]
    """

    __module__ = 'stateopt'

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'milestones': 'The steps at which the lr decays, increasing.',
    }

    def __init__(self, base_lr: LRs = 1e-3, milestones: Sequence[int] = (30, 60, 90), gamma: float = 0.1,
                 last_epoch: int = 0):
        if not isinstance(milestones, (list, tuple)):
            raise ValueError(f'milestones must be a list of integers, got {milestones!r}')
        self.milestones = sorted(_int(f'milestones[{i}]', m, 0) for i, m in enumerate(milestones))
        self.gamma = check_number('gamma', gamma, low=0.0)
        super().__init__(base_lr, last_epoch)

    def _count(self, epoch, reached: Callable) -> jax.Array:
        if not self.milestones:
            return jnp.zeros((), I32)
        return jnp.sum(reached(jnp.asarray(self.milestones, I32), epoch)).astype(I32)

    def lr_at(self, base, epoch, group):
        return base * jnp.power(_f32(self.gamma), self._count(epoch, jnp.less_equal))

    def next_lr(self, lr, base, epoch, group):
        return lr * jnp.power(_f32(self.gamma), self._count(epoch, jnp.equal))


class ExponentialLR(LRScheduler):
    r"""Decay the lr by ``gamma`` every step (torch.optim.lr_scheduler.ExponentialLR).

    ``lr_t = b_g * gamma ** t``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.ExponentialLR(base_lr=1.0, gamma=0.5)
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [1.0, 0.5, 0.25, 0.125]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, gamma: float = 0.95, last_epoch: int = 0):
        self.gamma = check_number('gamma', gamma, low=0.0)
        super().__init__(base_lr, last_epoch)

    def lr_at(self, base, epoch, group):
        return base * jnp.power(_f32(self.gamma), epoch)

    def next_lr(self, lr, base, epoch, group):
        return jnp.where(epoch == 0, lr, lr * self.gamma)


class PolynomialLR(LRScheduler):
    r"""Decay the lr polynomially to zero over ``total_iters`` steps (torch's PolynomialLR).

    ``lr_t = b_g * (1 - min(t, total_iters) / total_iters) ** power``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.PolynomialLR(base_lr=0.1, total_iters=4, power=2.0)
    >>> [round(float(sched(t)), 6) for t in range(6)]
    [0.1, 0.05625, 0.025, 0.00625, 0.0, 0.0]
    """

    __module__ = 'stateopt'

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'power': 'The power of the polynomial decay.',
    }

    def __init__(self, base_lr: LRs = 1e-3, total_iters: int = 5, power: float = 1.0, last_epoch: int = 0):
        self.total_iters = _int('total_iters', total_iters, 1)
        self.power = check_number('power', power, low=0.0)
        super().__init__(base_lr, last_epoch)

    def lr_at(self, base, epoch, group):
        remaining = (self.total_iters - jnp.minimum(epoch, self.total_iters)) / self.total_iters
        return base * jnp.power(_f32(remaining), self.power)

    def next_lr(self, lr, base, epoch, group):
        left = _f32(self.total_iters - epoch)
        ratio = jnp.power(left / jnp.maximum(left + 1, 1), self.power)
        return jnp.where((epoch == 0) | (epoch > self.total_iters), lr, lr * ratio)


class ExponentialDecayLR(LRScheduler):
    r"""optax's exponential decay, with an optional staircase and floor (or ceiling).

    ``lr_t = b_g * decay_rate ** (max(t - transition_begin, 0) / decay_steps)``, the
    exponent floored when ``staircase``; ``end_value`` bounds it (below when
    ``decay_rate < 1``, above otherwise).

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.ExponentialDecayLR(base_lr=1.0, decay_steps=2, decay_rate=0.25, staircase=True)
    >>> [round(float(sched(t)), 6) for t in range(5)]
    [1.0, 1.0, 0.25, 0.25, 0.0625]
    """

    __module__ = 'stateopt'

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'decay_steps': 'The steps over which the lr falls by one ``decay_rate``.',
        'decay_rate': 'The factor per ``decay_steps`` steps.',
        'transition_begin': 'The steps the lr stays at ``base_lr`` before decaying.',
        'staircase': 'Decay in whole steps of ``decay_steps`` instead of continuously.',
        'end_value': 'A bound the lr does not pass (``None``: none).',
    }

    def __init__(self, base_lr: LRs = 1e-3, decay_steps: int = 1000, decay_rate: float = 0.96,
                 transition_begin: int = 0, staircase: bool = False, end_value: float | None = None,
                 last_epoch: int = 0):
        self.decay_steps = _int('decay_steps', decay_steps, 1)
        self.decay_rate = check_number('decay_rate', decay_rate, low=0.0, low_open=True)
        self.transition_begin = _int('transition_begin', transition_begin, 0)
        if not isinstance(staircase, bool):
            raise ValueError(f'staircase must be True or False, got {staircase!r}')
        self.staircase = staircase
        self.end_value = None if end_value is None else check_number('end_value', end_value, low=0.0)
        super().__init__(base_lr, last_epoch)

    def lr_at(self, base, epoch, group):
        exponent = _f32(jnp.maximum(epoch - self.transition_begin, 0)) / self.decay_steps
        lr = base * jnp.power(_f32(self.decay_rate), jnp.floor(exponent) if self.staircase else exponent)
        if self.end_value is None:
            return lr
        bound = jnp.maximum if self.decay_rate < 1 else jnp.minimum
        return bound(lr, self.end_value)


class PiecewiseConstantSchedule(LRScheduler):
    r"""Constant lrs between step boundaries.

    ``values[k]`` is group 0's lr from ``boundaries[k - 1]`` (inclusive) to
    ``boundaries[k]``; every other group keeps its ratio to group 0:
    ``lr_t = values[k(t)] * b_g / base_lr``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.PiecewiseConstantSchedule(base_lr=0.1, boundaries=[2, 3],
    ...                                           values=[0.1, 0.01, 0.001])
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [0.1, 0.1, 0.01, 0.001]
    """

    __module__ = 'stateopt'

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'boundaries': 'The steps at which the lr changes, increasing.',
        'values': 'The factor of the base lr from each boundary on (one per boundary).',
    }

    def __init__(self, base_lr: LRs = 1e-3, boundaries: Sequence[int] | None = None,
                 values: Sequence[float] | None = None, last_epoch: int = 0):
        boundaries = [1000, 2000] if boundaries is None else boundaries
        values = [1.0, 0.1, 0.01] if values is None else values
        if not isinstance(boundaries, (list, tuple)):
            raise ValueError(f'boundaries must be a list of integers, got {boundaries!r}')
        if not isinstance(values, (list, tuple)) or len(values) != len(boundaries) + 1:
            raise ValueError(f'values must be a list of len(boundaries) + 1 = {len(boundaries) + 1} '
                             f'numbers, got {values!r}')
        self.boundaries = [_int(f'boundaries[{i}]', b, 0) for i, b in enumerate(boundaries)]
        if self.boundaries != sorted(self.boundaries):
            raise ValueError(f'boundaries must be in increasing order, got {list(boundaries)}')
        self.values = [check_number(f'values[{i}]', v, low=0.0) for i, v in enumerate(values)]
        _per_group('base_lr', base_lr, low=0.0, low_open=True)
        super().__init__(base_lr, last_epoch)

    def lr_at(self, base, epoch, group):
        phase = jnp.searchsorted(jnp.asarray(self.boundaries, I32), epoch, side='right')
        return jnp.asarray(self.values, F32)[phase] * (base / self._base_list[0])
