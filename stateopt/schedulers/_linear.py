"""Linear ramps and warm-ups: LinearLR, ConstantLR, WarmupScheduler."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from .._hyper import check_number
from ._base import LRScheduler
from ._common import LRs, _f32, _int
from ._protocol import _check_optimizer


class LinearLR(LRScheduler):
    r"""Scale the lr linearly from ``start_factor`` to ``end_factor`` (torch's LinearLR).

    ``lr_t = b_g * (s + (e - s) * min(t, total_iters) / total_iters)`` with ``s, e`` the
    start and end factors; stepping applies torch's ratio of consecutive factors.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.LinearLR(base_lr=0.1, start_factor=0.5, total_iters=2)
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [0.05, 0.075, 0.1, 0.1]
    """

    __module__ = 'stateopt'

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'start_factor': 'The factor of the base lr at step 0.',
        'end_factor': 'The factor of the base lr at step ``total_iters`` and after.',
    }

    def __init__(self, base_lr: LRs = 1e-3, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = 0):
        self.start_factor = check_number('start_factor', start_factor, low=0.0, high=1.0)
        self.end_factor = check_number('end_factor', end_factor, low=0.0, high=1.0)
        self.total_iters = _int('total_iters', total_iters, 1)
        super().__init__(base_lr, last_epoch)

    def lr_at(self, base, epoch, group):
        done = jnp.minimum(epoch, self.total_iters) / self.total_iters
        return base * (self.start_factor + (self.end_factor - self.start_factor) * done)

    def next_lr(self, lr, base, epoch, group):
        change = self.end_factor - self.start_factor
        ratio = 1.0 + change / (self.total_iters * self.start_factor + (epoch - 1) * change)
        stepped = jnp.where(epoch > self.total_iters, lr, lr * ratio)
        if self.start_factor == 0.0:  # from a zero lr no ratio exists: the first step takes the closed form
            stepped = jnp.where(epoch == 1, self.lr_at(base, epoch, group), stepped)
        return jnp.where(epoch == 0, lr * self.start_factor, stepped)


class ConstantLR(LRScheduler):
    r"""Scale the lr by ``factor`` for the first ``total_iters`` steps (torch's ConstantLR).

    ``lr_t = b_g * factor`` for ``t < total_iters``, then ``b_g``; stepping divides the
    current lr by ``factor`` at ``total_iters``. ``total_iters=0`` never applies the
    factor: the lr stays ``b_g`` (braintools' constant schedule, ``ConstantLR(base_lr=lr,
    factor=1.0, total_iters=0)``).

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.ConstantLR(base_lr=0.1, factor=0.5, total_iters=2)
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [0.05, 0.05, 0.1, 0.1]
    """

    __module__ = 'stateopt'

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'factor': 'The factor of the base lr until step ``total_iters``.',
    }

    def __init__(self, base_lr: LRs = 1e-3, factor: float = 1.0 / 3, total_iters: int = 5,
                 last_epoch: int = 0):
        self.factor = check_number('factor', factor, low=0.0, high=1.0, low_open=True)
        self.total_iters = _int('total_iters', total_iters, 0)
        super().__init__(base_lr, last_epoch)

    @classmethod
    def following(cls, optimizer: Any) -> ConstantLR:
        """A constant schedule over ``optimizer``'s groups, as braintools makes for a number ``lr``.

        It reads and sets every group's lr as an attached scheduler does (``get_last_lr``,
        ``apply``, ``current_lrs``), and stepping never changes them; it does not drive
        the optimizer (a scheduler attached later replaces it, and the optimizer's state
        dict leaves it out). ``optimizer.lr_scheduler`` returns one for a number ``lr``.

        Parameters
        ----------
        optimizer : OptaxOptimizer
            The optimizer whose groups' lrs it follows.

        Examples
        --------
        >>> import stateopt
        >>> opt = stateopt.SGD(lr=0.1)
        >>> sched = stateopt.ConstantLR.following(opt)
        >>> sched.step(); sched.get_last_lr()
        [0.1]
        """
        _check_optimizer(optimizer, 'ConstantLR.following')
        groups = optimizer.param_groups
        constant = cls(base_lr=groups[0].initial_lr, factor=1.0, total_iters=0)
        constant.optimizer, constant._lrs = optimizer, None
        constant._set_bases(tuple(_f32(group.initial_lr) for group in groups))
        return constant

    def _read_values(self) -> dict:
        if self.optimizer is not None and len(self._bases.value) != len(self.optimizer.param_groups):
            self._set_bases(tuple(_f32(group.initial_lr) for group in self.optimizer.param_groups))
        return super()._read_values()

    def lr_at(self, base, epoch, group):
        return base * jnp.where(epoch < self.total_iters, self.factor, 1.0)

    def next_lr(self, lr, base, epoch, group):
        if self.total_iters == 0:
            return lr
        restore = jnp.where(epoch == self.total_iters, 1.0 / self.factor, 1.0)
        return lr * jnp.where(epoch == 0, self.factor, restore)


class WarmupScheduler(LRScheduler):
    r"""Linear warm-up from ``warmup_start_lr`` to the base lr, then constant.

    ``lr_t = warmup_start_lr + (b_g - warmup_start_lr) * min(t / warmup_epochs, 1)``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.WarmupScheduler(base_lr=0.1, warmup_epochs=4)
    >>> [round(float(sched(t)), 6) for t in range(6)]
    [0.0, 0.025, 0.05, 0.075, 0.1, 0.1]
    """

    __module__ = 'stateopt'

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'warmup_epochs': 'The steps of the linear warm-up to ``base_lr``.',
    }

    def __init__(self, base_lr: LRs = 1e-3, warmup_epochs: int = 5, warmup_start_lr: float = 0.0,
                 last_epoch: int = 0):
        self.warmup_epochs = _int('warmup_epochs', warmup_epochs, 0)
        self.warmup_start_lr = check_number('warmup_start_lr', warmup_start_lr, low=0.0)
        super().__init__(base_lr, last_epoch)

    def lr_at(self, base, epoch, group):
        done = jnp.minimum(_f32(epoch) / max(self.warmup_epochs, 1), 1.0)
        return self.warmup_start_lr + (base - self.warmup_start_lr) * done
