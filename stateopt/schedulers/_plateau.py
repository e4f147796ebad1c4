"""ReduceLROnPlateau: the lr falls when a metric stops improving."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from .._hyper import check_number
from ._base import LRScheduler
from ._common import F32, I32, LRs, _choice, _f32, _int, _pick


class ReduceLROnPlateau(LRScheduler):
    r"""Reduce the lr when a metric stops improving (torch.optim.lr_scheduler.ReduceLROnPlateau).

    ``step(metric)``: a metric better than ``best`` (for ``mode='min'``: below
    ``best * (1 - threshold)``, or ``best - threshold`` with ``threshold_mode='abs'``)
    becomes ``best`` and resets the count of bad steps; otherwise the count grows.
    During ``cooldown`` steps after a reduction the count stays 0. When it exceeds
    ``patience``, each group's lr becomes ``max(lr * factor, min_lr_g)`` if that lowers
    it by more than ``eps``. The comparisons and counters are ``jnp`` operations, so
    this steps inside ``jit`` (and inside SequentialLR and ChainedScheduler).

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.ReduceLROnPlateau(base_lr=1.0, factor=0.5, patience=1)
    >>> for loss in [1.0, 1.0, 1.0, 1.0, 1.0]:
    ...     sched.step(loss)
    >>> sched.get_last_lr()
    [0.25]
    """

    __module__ = 'stateopt'
    _extra_counters = ('best', 'num_bad_epochs', 'cooldown_counter')
    _torch_params = ('mode', 'factor', 'patience', 'threshold', 'threshold_mode', 'cooldown', 'min_lr', 'eps')

    #: The docs of the parameters only this scheduler has (the others: SHARED_PARAMETER_DOCS).
    parameter_docs = {
        'mode': "``'min'`` (the metric should fall) or ``'max'`` (it should rise).",
        'factor': 'The factor the lr is multiplied by when the metric stalls.',
        'patience': 'The steps without improvement tolerated before the lr falls.',
        'threshold': 'The least change that counts as an improvement.',
        'threshold_mode': "``'rel'`` (relative to the best) or ``'abs'``: how ``threshold`` applies.",
        'cooldown': 'The steps after a reduction before the count of bad steps starts again.',
        'min_lr': 'The lowest lr (one value, or one per group).',
        'eps': 'A reduction smaller than this is not made.',
    }

    def __init__(self, base_lr: LRs = 1e-3, mode: str = 'min', factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = 'rel', cooldown: int = 0,
                 min_lr: LRs = 0.0, eps: float = 1e-8, last_epoch: int = 0):
        self.mode = _choice('mode', mode, ('min', 'max'))
        self.factor = check_number('factor', factor, low=0.0, high=1.0, high_open=True)
        self.patience = _int('patience', patience, 0)
        self.threshold = check_number('threshold', threshold, low=0.0)
        self.threshold_mode = _choice('threshold_mode', threshold_mode, ('rel', 'abs'))
        self.cooldown = _int('cooldown', cooldown, 0)
        self.min_lrs = self._per_group_param('min_lr', min_lr, low=0.0)
        self.eps = check_number('eps', eps, low=0.0)
        super().__init__(base_lr, last_epoch)

    @property
    def mode_worse(self) -> float:
        """The worst metric for ``mode`` (``best`` at a fresh start): ``inf`` for ``'min'``, else ``-inf``."""
        return math.inf if self.mode == 'min' else -math.inf

    @property
    def _uses_metric(self) -> bool:
        return True

    def _counters_at(self, epoch):
        return {'last_epoch': jnp.asarray(epoch, I32), 'best': _f32(self.mode_worse),
                'num_bad_epochs': jnp.asarray(0, I32), 'cooldown_counter': jnp.asarray(0, I32)}

    def lr_at(self, base, epoch, group):
        return base

    def next_lr(self, lr, base, epoch, group):
        return lr

    def _schedule_lr(self, count, base):
        return self._root()._read_values()['lr'][0]

    def _is_better(self, metric, best):
        sign = 1.0 if self.mode == 'max' else -1.0
        if self.threshold_mode == 'rel':
            return sign * metric > sign * best * (1.0 + sign * self.threshold)
        return sign * metric > sign * best + self.threshold

    def _advance(self, state, values, bases, groups, epoch=None, metric=None):
        epoch = optax.safe_increment(state['last_epoch']) if epoch is None else epoch
        if metric is None:  # a schedule preview: no metric, no reduction
            return {**state, 'last_epoch': epoch}, values
        better = self._is_better(metric, state['best'])
        bad = jnp.where(better, 0, state['num_bad_epochs'] + 1)
        cooling = state['cooldown_counter'] > 0
        cooldown = jnp.where(cooling, state['cooldown_counter'] - 1, state['cooldown_counter'])
        bad = jnp.where(cooling, 0, bad)
        reduce = bad > self.patience
        lrs = []
        for lr, g in zip(values['lr'], groups):
            lowered = jnp.maximum(lr * self.factor, _pick(self.min_lrs, g))
            lrs.append(jnp.where(reduce & (lr - lowered > self.eps), lowered, lr))
        state = {'last_epoch': jnp.asarray(epoch, I32), 'best': jnp.where(better, metric, state['best']),
                 'num_bad_epochs': jnp.where(reduce, 0, bad),
                 'cooldown_counter': jnp.where(reduce, self.cooldown, cooldown)}
        return state, {**values, 'lr': tuple(lrs)}

    def step(self, metric: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Observe ``metric`` (a scalar, traced or not) and reduce the lrs on a plateau."""
        self._require_root('step')
        self._run(None if epoch is None else self._epoch_input(epoch), _metric_input(metric))


def _metric_input(metric: Any) -> jax.Array:
    if metric is None:
        raise ValueError('this scheduler reduces the lr on a plateau of a metric: call step(metric)')
    value = jnp.asarray(metric, F32)
    if value.shape != ():
        raise ValueError(f'metric must be a scalar, got an array of shape {value.shape}')
    return value
