"""Draws every scheduler's lr curve when the documentation is built.

Writes ``_generated/schedules/<name>.png`` and ``_generated/schedule_gallery.md``, which
the schedulers page includes, and ``_generated/schedules/schedule_overview.png``, eight of
them side by side for the front page, so each picture always shows the current code.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')

import brainstate  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

import stateopt  # noqa: E402

STEPS = 120
#: The schedules the front page shows, in the order shown.
OVERVIEW = ('StepLR', 'CosineAnnealingWarmRestarts', 'OneCycleLR', 'WarmupCosineSchedule',
            'CyclicLR triangular2', 'PolynomialLR', 'SequentialLR', 'ChainedScheduler')


def _gallery() -> list[tuple[str, str, object]]:
    """(name, constructor shown, scheduler factory) for every scheduler of the catalogue."""
    s = stateopt
    return [
        ('StepLR', 'StepLR(base_lr=0.1, step_size=30, gamma=0.5)',
         lambda: s.StepLR(base_lr=0.1, step_size=30, gamma=0.5)),
        ('MultiStepLR', 'MultiStepLR(base_lr=0.1, milestones=[30, 60, 90], gamma=0.3)',
         lambda: s.MultiStepLR(base_lr=0.1, milestones=[30, 60, 90], gamma=0.3)),
        ('ExponentialLR', 'ExponentialLR(base_lr=0.1, gamma=0.97)',
         lambda: s.ExponentialLR(base_lr=0.1, gamma=0.97)),
        ('ExponentialDecayLR', 'ExponentialDecayLR(base_lr=0.1, decay_steps=20, decay_rate=0.5)',
         lambda: s.ExponentialDecayLR(base_lr=0.1, decay_steps=20, decay_rate=0.5)),
        ('CosineAnnealingLR', 'CosineAnnealingLR(base_lr=0.1, T_max=80, eta_min=0.01)',
         lambda: s.CosineAnnealingLR(base_lr=0.1, T_max=80, eta_min=0.01)),
        ('CosineAnnealingWarmRestarts', 'CosineAnnealingWarmRestarts(base_lr=0.1, T_0=20, T_mult=2)',
         lambda: s.CosineAnnealingWarmRestarts(base_lr=0.1, T_0=20, T_mult=2)),
        ('PolynomialLR', 'PolynomialLR(base_lr=0.1, total_iters=100, power=2.0)',
         lambda: s.PolynomialLR(base_lr=0.1, total_iters=100, power=2.0)),
        ('LinearLR', 'LinearLR(base_lr=0.1, start_factor=0.1, end_factor=1.0, total_iters=50)',
         lambda: s.LinearLR(base_lr=0.1, start_factor=0.1, end_factor=1.0, total_iters=50)),
        ('ConstantLR', 'ConstantLR(base_lr=0.1, factor=0.5, total_iters=40)',
         lambda: s.ConstantLR(base_lr=0.1, factor=0.5, total_iters=40)),
        ('OneCycleLR', 'OneCycleLR(max_lr=0.1, total_steps=120)',
         lambda: s.OneCycleLR(max_lr=0.1, total_steps=STEPS)),
        ('OneCycleLR three-phase linear',
         "OneCycleLR(max_lr=0.1, total_steps=120, three_phase=True, anneal_strategy='linear')",
         lambda: s.OneCycleLR(max_lr=0.1, total_steps=STEPS, three_phase=True, anneal_strategy='linear')),
        ('CyclicLR triangular', "CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=20, mode='triangular')",
         lambda: s.CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=20, mode='triangular')),
        ('CyclicLR triangular2', "CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=20, mode='triangular2')",
         lambda: s.CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=20, mode='triangular2')),
        ('CyclicLR exp_range',
         "CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=20, mode='exp_range', gamma=0.99)",
         lambda: s.CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=20, mode='exp_range', gamma=0.99)),
        ('WarmupScheduler', 'WarmupScheduler(base_lr=0.1, warmup_epochs=30, warmup_start_lr=0.0)',
         lambda: s.WarmupScheduler(base_lr=0.1, warmup_epochs=30, warmup_start_lr=0.0)),
        ('WarmupCosineSchedule', 'WarmupCosineSchedule(base_lr=0.1, warmup_steps=20, total_steps=120)',
         lambda: s.WarmupCosineSchedule(base_lr=0.1, warmup_steps=20, total_steps=STEPS)),
        ('PiecewiseConstantSchedule',
         'PiecewiseConstantSchedule(base_lr=0.1, boundaries=[40, 80], values=[0.1, 0.05, 0.01])',
         lambda: s.PiecewiseConstantSchedule(base_lr=0.1, boundaries=[40, 80], values=[0.1, 0.05, 0.01])),
        ('LambdaLR', 'LambdaLR(base_lr=0.1, lr_lambda=lambda epoch: 1 / (1 + 0.05 * epoch))',
         lambda: s.LambdaLR(base_lr=0.1, lr_lambda=lambda epoch: 1 / (1 + 0.05 * epoch))),
        ('MultiplicativeLR', 'MultiplicativeLR(base_lr=0.1, lr_lambda=lambda epoch: 0.98)',
         lambda: s.MultiplicativeLR(base_lr=0.1, lr_lambda=lambda epoch: 0.98)),
        ('SequentialLR', 'SequentialLR(schedulers=[LinearLR(0.1, start_factor=0.1, total_iters=20), '
                         'CosineAnnealingLR(0.1, T_max=100)], milestones=[20])',
         lambda: s.SequentialLR(schedulers=[s.LinearLR(base_lr=0.1, start_factor=0.1, total_iters=20),
                                            s.CosineAnnealingLR(base_lr=0.1, T_max=100)],
                                milestones=[20])),
        ('ChainedScheduler', 'ChainedScheduler([ConstantLR(0.1, factor=0.5, total_iters=30), '
                             'ExponentialLR(0.1, gamma=0.98)])',
         lambda: s.ChainedScheduler([s.ConstantLR(base_lr=0.1, factor=0.5, total_iters=30),
                                     s.ExponentialLR(base_lr=0.1, gamma=0.98)])),
    ]


def _plateau_curve():
    """ReduceLROnPlateau follows a metric: drive it with one that stalls after step 30."""
    scheduler = stateopt.ReduceLROnPlateau(base_lr=0.1, factor=0.5, patience=10)
    lrs = []
    for step in range(STEPS):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.step(jnp.float32(max(1.0 - step / 30, 0.0)))
    return lrs


def _with_two_groups(make):
    """A fresh scheduler from ``make``, attached to an SGD with a second group added at ``lr=0.05``."""
    scheduler = make()
    optimizer = stateopt.SGD(lr=scheduler, momentum=0.9).register_trainable_weights(
        {'w': brainstate.ParamState(jnp.zeros(1))})
    optimizer.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, lr=0.05)
    return scheduler


def _overview(path: str) -> None:
    makers = {name: make for name, _, make in _gallery()}
    figure, grid = plt.subplots(2, 4, figsize=(9.2, 4.2), sharex=True, sharey=True, layout='constrained')
    for axes, name in zip(grid.flat, OVERVIEW):
        stateopt.plot_schedule(_with_two_groups(makers[name]), STEPS, ax=axes)
        axes.set_title(name, fontsize=9)
        axes.set(xlabel='', ylabel='')
        axes.get_legend().remove()
        axes.tick_params(labelsize=8)
    figure.supxlabel('step', fontsize=9)
    figure.supylabel('learning rate', fontsize=9)
    figure.legend(grid.flat[0].get_lines(), ['base lr 0.1', 'a group added with lr=0.05'],
                  loc='outside upper center', ncols=2, fontsize=8)
    figure.savefig(path, dpi=160)
    plt.close(figure)


def generate(app) -> None:
    out = os.path.join(app.srcdir, '_generated')
    os.makedirs(os.path.join(out, 'schedules'), exist_ok=True)
    _overview(os.path.join(out, 'schedules', 'schedule_overview.png'))
    lines = ['| schedule | lr of two param groups: base lr 0.1, and one added with `lr=0.05` (OneCycleLR and '
             'CyclicLR set absolute lrs, so their two curves coincide) |',
             '| --- | --- |']
    for name, shown, make in _gallery():
        figure, axes = stateopt.plot_schedule(_with_two_groups(make), STEPS)
        axes.set_title(name)
        file = name.replace(' ', '_') + '.png'
        figure.set_size_inches(4.2, 2.6)
        figure.tight_layout()
        figure.savefig(os.path.join(out, 'schedules', file), dpi=90)
        plt.close(figure)
        lines.append(f'| `{shown}` | ![{name}](/_generated/schedules/{file}) |')
    figure, axes = plt.subplots(figsize=(4.2, 2.6))
    axes.plot(_plateau_curve())
    axes.set(title='ReduceLROnPlateau', xlabel='step', ylabel='lr')
    figure.tight_layout()
    figure.savefig(os.path.join(out, 'schedules', 'ReduceLROnPlateau.png'), dpi=90)
    plt.close(figure)
    lines.append('| `ReduceLROnPlateau(base_lr=0.1, factor=0.5, patience=10)`, metric stalls from step 30 '
                 '| ![ReduceLROnPlateau](/_generated/schedules/ReduceLROnPlateau.png) |')
    with open(os.path.join(out, 'schedule_gallery.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def setup(app):
    app.connect('builder-inited', generate)
    return {'parallel_read_safe': True, 'version': '1'}
