"""The scheduler table every scheduler test runs over.

Each row is a constructor (a class name and its arguments, read by both the tests and the
torch fixture script), the optimizer it drives, the metric fed to ReduceLROnPlateau, and
where its expected lrs come from: torch's goldens (``fixtures/torch_schedules.npz``, written
by ``fixtures/make_torch_schedules.py``) or a closed form written here. Group 0 starts at
``BASE_LR``; group 1 is added with ``GROUP_LR``. Testing a new scheduler is adding a row.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BASE_LR = 0.1
GROUP_LR = 0.03
STEPS = 60
GOLDEN = pathlib.Path(__file__).parent / 'fixtures' / 'torch_schedules.npz'


@dataclass(frozen=True)
class Spec:
    """A scheduler constructor: ``cls(base_lr=BASE_LR, **kwargs)``, children first for composites."""

    cls: str
    kwargs: dict = field(default_factory=dict)
    children: tuple = ()

    @property
    def takes_base_lr(self) -> bool:
        return self.cls not in ('OneCycleLR', 'CyclicLR', 'SequentialLR', 'ChainedScheduler')


@dataclass(frozen=True)
class Row:
    id: str
    spec: Spec
    optimizer: str = 'sgd'           # 'sgd' (no momentum), 'sgd-momentum' (0.9) or 'adam'
    metrics: tuple | None = None     # one metric per step, for ReduceLROnPlateau
    closed_form: Callable | None = None  # (bases (2,), steps (n,)) -> lrs (n, 2); None: torch golden
    momentum: bool = False           # torch's goldens include the cycled momentum (or beta1)


def _plateau_metrics() -> tuple:
    """Improving by 10% a step, then flat within 0.2% (no borderline comparisons in float32)."""
    values, level = [], 1.0
    for t in range(STEPS):
        if t < 10 or 25 <= t < 31:
            level *= 0.9
            values.append(level)
        else:
            values.append(level * (1 + 0.002 * (t % 2)))
    return tuple(values)


def _rising_metrics() -> tuple:
    """For mode='max', threshold_mode='abs': rises by 0.5 for a while, then wobbles by 0.01."""
    return tuple(0.5 * min(t, 12) + 0.01 * (t % 3) for t in range(STEPS))


# -- closed forms of the schedules torch does not have ---------------------------------------------

def _exp_decay(decay_steps, decay_rate, begin=0, staircase=False, end_value=None):
    def lrs(bases, t):
        exponent = np.maximum(t - begin, 0) / decay_steps
        exponent = np.floor(exponent) if staircase else exponent
        out = bases[None, :] * decay_rate ** exponent[:, None]
        return out if end_value is None else np.maximum(out, end_value)
    return lrs


def _warmup(epochs, start):
    return lambda bases, t: start + (bases[None, :] - start) * np.minimum(t / epochs, 1.0)[:, None]


def _warmup_cosine(warmup, total, start, eta_min):
    def lrs(bases, t):
        t = t[:, None].astype(float)
        warm = start + (bases - start) * t / warmup
        progress = np.clip((t - warmup) / (total - warmup), 0.0, 1.0)
        cosine = eta_min + (bases - eta_min) * (1 + np.cos(np.pi * progress)) / 2
        return np.where(t < warmup, warm, cosine)
    return lrs


def _linear_from_zero(bases, t):
    """braintools' warm-up from a zero lr: b_g * min(t, 4) / 4."""
    return bases[None, :] * (np.minimum(t, 4) / 4)[:, None]


def _piecewise(boundaries, values):
    def lrs(bases, t):
        phase = np.searchsorted(boundaries, t, side='right')
        return np.asarray(values)[phase][:, None] * bases[None, :] / bases[0]
    return lrs


def _constant(bases, t):
    return np.broadcast_to(bases, (len(t), len(bases)))


def _lambda(t):
    return 1.0 / (1.0 + 0.05 * t)


def _multiplier(t):
    return 0.9 + 0.1 / (1.0 + t)


S = Spec
ROWS = [
    Row('step', S('StepLR', dict(step_size=7, gamma=0.5))),
    Row('multistep', S('MultiStepLR', dict(milestones=[5, 12, 12, 30], gamma=0.3))),
    Row('multistep-at-zero', S('MultiStepLR', dict(milestones=[0, 20], gamma=0.5))),
    Row('constant', S('ConstantLR', dict(factor=0.25, total_iters=9))),
    Row('linear', S('LinearLR', dict(start_factor=0.2, end_factor=0.9, total_iters=17))),
    Row('exponential', S('ExponentialLR', dict(gamma=0.93))),
    Row('polynomial', S('PolynomialLR', dict(total_iters=40, power=1.7))),
    Row('cosine', S('CosineAnnealingLR', dict(T_max=20, eta_min=0.001))),
    Row('warm-restarts', S('CosineAnnealingWarmRestarts', dict(T_0=7, eta_min=0.002))),
    Row('warm-restarts-mult', S('CosineAnnealingWarmRestarts', dict(T_0=3, T_mult=2))),
    Row('lambda', S('LambdaLR', dict(lr_lambda=_lambda))),
    Row('multiplicative', S('MultiplicativeLR', dict(lr_lambda=_multiplier))),
    Row('one-cycle', S('OneCycleLR', dict(max_lr=[1.0, 0.4], total_steps=STEPS)),
        optimizer='sgd-momentum', momentum=True),
    Row('one-cycle-three-phase-linear',
        S('OneCycleLR', dict(max_lr=0.5, total_steps=STEPS, pct_start=0.25, anneal_strategy='linear',
                             three_phase=True, div_factor=10.0, final_div_factor=100.0,
                             cycle_momentum=False))),
    Row('one-cycle-adam', S('OneCycleLR', dict(max_lr=0.2, epochs=6, steps_per_epoch=10, pct_start=0.4)),
        optimizer='adam', momentum=True),
    Row('cyclic', S('CyclicLR', dict(base_lr=[0.01, 0.02], max_lr=[0.1, 0.05], step_size_up=5,
                                     step_size_down=8)),
        optimizer='sgd-momentum', momentum=True),
    Row('cyclic-triangular2', S('CyclicLR', dict(base_lr=0.01, max_lr=0.1, step_size_up=4,
                                                 mode='triangular2', cycle_momentum=False))),
    Row('cyclic-exp-range', S('CyclicLR', dict(base_lr=0.01, max_lr=0.1, step_size_up=6, mode='exp_range',
                                               gamma=0.97, cycle_momentum=False))),
    Row('plateau', S('ReduceLROnPlateau', dict(factor=0.5, patience=2, threshold=0.01, cooldown=2,
                                               min_lr=[0.01, 0.0], eps=1e-3)),
        metrics=_plateau_metrics()),
    Row('plateau-max-abs', S('ReduceLROnPlateau', dict(mode='max', factor=0.3, patience=1, threshold=0.1,
                                                       threshold_mode='abs')),
        metrics=_rising_metrics()),
    Row('sequential', S('SequentialLR', dict(milestones=[5, 30]), children=(
        S('LinearLR', dict(start_factor=0.1, total_iters=5)),
        S('CosineAnnealingLR', dict(T_max=20)),
        S('ExponentialLR', dict(gamma=0.9))))),
    Row('sequential-multiplicative', S('SequentialLR', dict(milestones=[10]), children=(
        S('ConstantLR', dict(factor=0.5, total_iters=3)),
        S('MultiplicativeLR', dict(lr_lambda=_multiplier))))),
    Row('chained', S('ChainedScheduler', children=(
        S('ConstantLR', dict(factor=0.5, total_iters=10)),
        S('ExponentialLR', dict(gamma=0.95)),
        S('StepLR', dict(step_size=15, gamma=0.5))))),
    Row('chained-cyclic', S('ChainedScheduler', children=(
        S('CyclicLR', dict(base_lr=0.01, max_lr=0.1, step_size_up=5, cycle_momentum=False)),
        S('ExponentialLR', dict(gamma=0.98))))),
    Row('sequential-plateau', S('SequentialLR', dict(milestones=[5]), children=(
        S('LinearLR', dict(start_factor=0.2, total_iters=5)),
        S('ReduceLROnPlateau', dict(factor=0.5, patience=3)))),
        metrics=_plateau_metrics()),
    Row('chained-plateau', S('ChainedScheduler', children=(
        S('ExponentialLR', dict(gamma=0.97)),
        S('ReduceLROnPlateau', dict(factor=0.5, patience=2, threshold=0.01)))),
        metrics=_plateau_metrics()),
    Row('constant-base', S('LRScheduler'), closed_form=_constant),
    Row('constant-no-iters', S('ConstantLR', dict(factor=0.5, total_iters=0)), closed_form=_constant),
    Row('linear-from-zero', S('LinearLR', dict(start_factor=0.0, total_iters=4)),
        closed_form=_linear_from_zero),
    Row('exp-decay', S('ExponentialDecayLR', dict(decay_steps=10, decay_rate=0.5, transition_begin=5,
                                                   end_value=0.01)),
        closed_form=_exp_decay(10, 0.5, begin=5, end_value=0.01)),
    Row('exp-decay-staircase', S('ExponentialDecayLR', dict(decay_steps=7, decay_rate=0.8, staircase=True)),
        closed_form=_exp_decay(7, 0.8, staircase=True)),
    Row('warmup', S('WarmupScheduler', dict(warmup_epochs=8, warmup_start_lr=0.01)),
        closed_form=_warmup(8, 0.01)),
    Row('warmup-cosine', S('WarmupCosineSchedule', dict(warmup_steps=10, total_steps=45,
                                                        warmup_start_lr=0.005, eta_min=0.001)),
        closed_form=_warmup_cosine(10, 45, 0.005, 0.001)),
    Row('piecewise', S('PiecewiseConstantSchedule', dict(boundaries=[10, 25, 40],
                                                         values=[0.1, 0.05, 0.01, 0.001])),
        closed_form=_piecewise([10, 25, 40], [0.1, 0.05, 0.01, 0.001])),
]

#: Rows whose schedule does not depend on a metric (usable as optax schedules).
SCHEDULES = [row for row in ROWS if row.metrics is None]


def build(spec: Spec) -> Any:
    """The stateopt scheduler of ``spec``."""
    import stateopt

    cls = getattr(stateopt, spec.cls)
    if spec.children:
        return cls([build(child) for child in spec.children], **spec.kwargs)
    extra = {'base_lr': BASE_LR} if spec.takes_base_lr else {}
    return cls(**extra, **spec.kwargs)


def expected(row: Row) -> dict:
    """``{'lr': (STEPS, 2)[, 'momentum': (STEPS, 2)]}``: the lrs before each step, per group."""
    if row.closed_form is not None:
        return {'lr': row.closed_form(np.array([BASE_LR, GROUP_LR]), np.arange(STEPS))}
    with np.load(GOLDEN) as golden:
        out = {'lr': golden[f'{row.id}/lr']}
        if row.momentum:
            out['momentum'] = golden[f'{row.id}/momentum']
    return out


# -- torch's SGD(momentum=0) with a scheduler that cycles the momentum ---------------------------------

CYCLED_GOLDEN = pathlib.Path(__file__).parent / 'fixtures' / 'torch_cycled_momentum.npz'
CYCLED_STEPS = 30
#: Group 0 holds 'w' (lr BASE_LR), group 1 holds 'b' (lr GROUP_LR); both start here.
CYCLED_START = {'w': [1.0, -2.0, 0.5], 'b': [0.3, -0.7]}

#: id -> (the scheduler, the SGD keywords besides lr and momentum=0).
CYCLED_MOMENTUM = {
    'one-cycle': (Spec('OneCycleLR', dict(max_lr=[0.2, 0.1], total_steps=CYCLED_STEPS)), {}),
    'one-cycle-three-phase': (Spec('OneCycleLR', dict(max_lr=0.3, total_steps=CYCLED_STEPS, three_phase=True,
                                                      base_momentum=[0.8, 0.7], max_momentum=[0.9, 0.95])),
                              {}),
    'cyclic-dampening': (Spec('CyclicLR', dict(base_lr=0.01, max_lr=0.1, step_size_up=4, step_size_down=6)),
                         dict(dampening=0.3, weight_decay=0.01)),
}


def cycled_loss(w: Any, b: Any) -> Any:
    """A small fixed problem (torch tensors or jax arrays): a quadratic with one coupling term."""
    return (1.5 * (w[0] - 0.2) ** 2 + 0.5 * (w[1] + 1.0) ** 2 + 2.0 * (w[2] - 0.4) ** 2
            + (b[0] - 0.1) ** 2 + 0.8 * (b[1] + 0.3) ** 2 + 0.6 * (w[0] * b[1] - 0.25) ** 2)
