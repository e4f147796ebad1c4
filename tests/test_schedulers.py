"""Scheduler tests, run over the scheduler table (tests/scheduler_table.py).

Expected lrs are torch 2.13's (golden fixtures) or closed forms written in the table; the
optimizer's parameter deltas are checked against SGD's and Adam's rules written here.
"""

import math

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_close_f32
from scheduler_table import (
    BASE_LR,
    CYCLED_GOLDEN,
    CYCLED_MOMENTUM,
    CYCLED_START,
    CYCLED_STEPS,
    GROUP_LR,
    ROWS,
    SCHEDULES,
    STEPS,
    Spec,
    build,
    cycled_loss,
    expected,
)

import stateopt

#: float32 steps of arithmetic between an lr and its reference: a closed form of a few operations, or up
#: to 60 steps of a recursive form that rounds once or twice each (torch computes in float64)
LR_STEPS = 4
GRADS = {'w': jnp.ones(1), 'b': jnp.ones(1)}
ROUND_TRIP = ['step', 'warm-restarts-mult', 'one-cycle', 'plateau', 'sequential-multiplicative',
              'sequential-plateau', 'chained-plateau']


def ids(rows):
    return [row.id for row in rows]


def _halving(t):
    return 1 / (1 + t)


def _nine_tenths(t):
    return 0.9


def make(row, scheduler=None, group_lr=GROUP_LR):
    """An optimizer driven by the row's scheduler, with params 'w' (group 0) and 'b' (group 1)."""
    scheduler = build(row.spec) if scheduler is None else scheduler
    params = {'w': brainstate.ParamState(jnp.zeros(1)), 'b': brainstate.ParamState(jnp.zeros(1))}
    if row.optimizer == 'adam':
        opt = stateopt.Adam(lr=scheduler)
    else:
        opt = stateopt.SGD(lr=scheduler, momentum=0.9 if row.optimizer == 'sgd-momentum' else 0.0)
    opt.register_trainable_weights({'w': params['w']})
    opt.add_param_group({'b': params['b']}, lr=group_lr)
    return opt, scheduler, params


def metric_at(row, t):
    return 0.0 if row.metrics is None else row.metrics[t]


def advance(row, scheduler, metric):
    if row.metrics is None:
        scheduler.step()
    else:
        scheduler.step(metric)


def momenta(opt):
    return jnp.stack([group['betas'][0] if 'betas' in group else group['momentum']
                      for group in opt.param_groups])


def expected_deltas(row, lrs, moms):
    """Parameter change of each step with gradient 1, by torch's SGD / Adam rule."""
    deltas, state = [], np.zeros(2)
    for t in range(len(lrs)):
        if row.optimizer == 'adam':  # constant gradient 1: v̂ = 1, m_t = b1 m + (1 - b1)
            state = moms[t] * state + (1 - moms[t])
            direction = state / (1 - moms[t] ** (t + 1)) / (1 + 1e-8)
        elif row.optimizer == 'sgd-momentum':
            state = np.ones(2) if t == 0 else moms[t] * state + 1
            direction = state
        else:
            direction = np.ones(2)
        deltas.append(-lrs[t] * direction)
    return np.asarray(deltas)


def assert_lrs(got, want, what):
    assert_close_f32(np.asarray(got, np.float64), want, steps=LR_STEPS, err_msg=what)


@pytest.mark.parametrize('row', ROWS, ids=ids(ROWS))
def test_lrs_match_reference_eager_jit_and_for_loop(row):
    """Two groups, 60 steps: eager, jitted with the optimizer stepping, and in a jitted for_loop."""
    want = expected(row)
    moms_want = want.get('momentum')
    opt, scheduler, params = make(row)
    start = opt.state_dict()
    if moms_want is None:
        moms_want = np.broadcast_to(np.asarray(momenta(opt), np.float64), (STEPS, 2))

    eager = []
    for t in range(STEPS):
        eager.append(scheduler.get_last_lr())
        advance(row, scheduler, metric_at(row, t))
    assert_lrs(eager, want['lr'], 'eager')
    assert opt.get_last_lr() == scheduler.get_last_lr()

    def train_step(metric):
        """One update from zero params (so the params after it are its deltas), then a step."""
        lrs, moms = jnp.stack([group['lr'] for group in opt.param_groups]), momenta(opt)
        for state in params.values():
            state.value = jnp.zeros(1)
        opt.update(GRADS)
        advance(row, scheduler, metric)
        return lrs, moms, jnp.concatenate([params['w'].value, params['b'].value])

    metrics = jnp.asarray([metric_at(row, t) for t in range(STEPS)], jnp.float32)
    opt.load_state_dict(start)
    jitted = brainstate.transform.jit(train_step)
    stepped = tuple(map(np.asarray, zip(*[jitted(metrics[t]) for t in range(STEPS)])))
    opt.load_state_dict(start)
    looped = brainstate.transform.jit(lambda ms: brainstate.transform.for_loop(train_step, ms))(metrics)

    deltas_want = expected_deltas(row, want['lr'], moms_want)
    for mode, (lrs, moms, deltas) in {'jit': stepped, 'for_loop': looped}.items():
        assert_lrs(lrs, want['lr'], mode)
        assert_close_f32(moms, moms_want, steps=LR_STEPS, err_msg=f'{mode} momentum')
        assert_close_f32(deltas, deltas_want, steps=LR_STEPS + 1, err_msg=f'{mode} deltas')  # lr, then a step
    assert int(scheduler.last_epoch.value) == STEPS


@pytest.mark.parametrize('row', [row for row in ROWS if row.id in ROUND_TRIP], ids=ROUND_TRIP)
def test_state_dict_round_trip_mid_schedule_continues_identically(row):
    half = STEPS // 2

    def run(scheduler, start, stop):
        """The lrs at steps ``start .. stop - 1``, stepping after each."""
        lrs = []
        for t in range(start, stop):
            lrs.append(scheduler.get_last_lr())
            advance(row, scheduler, metric_at(row, t))
        return lrs

    alone = build(row.spec)
    run(alone, 0, half)
    saved = jax.tree.map(np.asarray, alone.state_dict())
    restored = build(row.spec)
    restored.load_state_dict(saved)
    assert run(restored, half, STEPS) == run(alone, half, STEPS)

    opt, scheduler, _ = make(row)
    run(scheduler, 0, half)
    saved = jax.tree.map(np.asarray, opt.state_dict())
    opt2, scheduler2, _ = make(row, group_lr=0.5)
    opt2.load_state_dict(saved)
    assert opt2.get_last_lr() == opt.get_last_lr()
    resumed = run(scheduler2, half, STEPS)
    assert resumed == run(scheduler, half, STEPS)
    assert_lrs(resumed, expected(row)['lr'][half:], 'after resume')


@pytest.mark.parametrize('row', SCHEDULES, ids=ids(SCHEDULES))
def test_scheduler_is_the_optax_schedule_of_group_0(row):
    scheduler = build(row.spec)
    values = jax.vmap(scheduler)(jnp.arange(STEPS))
    assert (values >= 0).all()
    assert_lrs(values, expected(row)['lr'][:, 0], 'scheduler(count)')
    assert scheduler.last_epoch.value == 0


@pytest.mark.parametrize('spec', [
    Spec('StepLR', dict(step_size=3, gamma=0.5)),
    Spec('OneCycleLR', dict(max_lr=0.3, total_steps=20)),
    Spec('SequentialLR', dict(milestones=[3]), children=(Spec('LinearLR', dict(total_iters=3)),
                                                         Spec('CosineAnnealingLR', dict(T_max=17)))),
], ids=lambda spec: spec.cls)
def test_optax_sgd_with_a_scheduler_descends(spec):
    tx = optax.sgd(learning_rate=build(spec))

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(lambda p: jnp.sum(p ** 2))(params), state)
        return optax.apply_updates(params, updates), state

    params = jnp.array([2.0, -3.0])
    state = tx.init(params)
    losses = []
    for _ in range(20):
        params, state = step(params, state)
        losses.append(float(jnp.sum(params ** 2)))
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_lr_has_one_source_whatever_writes_happen():
    """Group and scheduler agree after group and current_lr writes; the recursive form continues."""
    scheduler = stateopt.StepLR(base_lr=BASE_LR, step_size=3, gamma=0.5)
    opt = stateopt.SGD(lr=scheduler).register_trainable_weights({'w': brainstate.ParamState(jnp.zeros(1))})
    group = opt.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, lr=GROUP_LR)
    scheduler.step()
    opt.current_lr = 0.4
    group['lr'] = 0.2
    assert scheduler.get_last_lr() == opt.get_last_lr() == [0.4, 0.2]
    np.testing.assert_array_equal(scheduler.state_dict()['lrs'], np.float32([0.4, 0.2]))
    for _ in range(2):
        scheduler.step()
    assert scheduler.get_last_lr() == opt.get_last_lr() == [0.2, 0.1]  # torch: lr * gamma at step 3
    params = opt.param_groups[1]['params']
    opt.update({'w': jnp.ones(1), 'b': jnp.ones(1)})
    assert float(params['b'].value[0]) == pytest.approx(-0.1)


def run_two_groups(scheduler, attach_after_groups):
    """Group lrs over 12 steps, the scheduler attached before or after the second group exists."""
    opt = stateopt.SGD(lr=BASE_LR if attach_after_groups else scheduler)
    opt.register_trainable_weights({'w': brainstate.ParamState(jnp.zeros(1))})
    opt.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, lr=GROUP_LR)
    if attach_after_groups:
        scheduler.attach_optimizer(opt)
        assert opt.lr is opt.lr_scheduler is scheduler
    out = []
    for _ in range(12):
        scheduler.step()
        out.append(opt.get_last_lr())
    return np.asarray(out)


@pytest.mark.parametrize('attach_after_groups', [False, True])
def test_attach_before_or_after_groups_gives_the_same_lrs(attach_after_groups):
    scheduler = stateopt.CosineAnnealingLR(base_lr=BASE_LR, T_max=10)
    t = np.arange(1, 13)[:, None]
    cosine = np.array([BASE_LR, GROUP_LR]) * (1 + np.cos(np.pi * t / 10)) / 2
    assert_close_f32(run_two_groups(scheduler, attach_after_groups), cosine, steps=LR_STEPS)
    one_cycle = stateopt.OneCycleLR(max_lr=[0.5, 0.2], total_steps=30, cycle_momentum=False)
    absolute = run_two_groups(one_cycle, attach_after_groups)  # each group's lr from its max_lr, as torch
    assert_close_f32(absolute[:, 1] / absolute[:, 0], 0.4, steps=2 * LR_STEPS)   # the errors of two lrs


def test_a_group_added_mid_schedule_joins_at_the_current_step():
    scheduler = stateopt.ExponentialLR(base_lr=BASE_LR, gamma=0.5)
    opt = stateopt.SGD(lr=scheduler).register_trainable_weights({'w': brainstate.ParamState(jnp.zeros(1))})
    scheduler.step()
    scheduler.step()
    opt.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, lr=0.08)
    assert scheduler.get_last_lr() == [0.025, 0.02]
    assert scheduler.base_lrs == [BASE_LR, 0.08]
    scheduler.step()
    assert scheduler.get_last_lr() == [0.0125, 0.01]


def test_standalone_scheduler_with_a_list_drives_one_lr_per_entry():
    scheduler = stateopt.StepLR(base_lr=[0.1, 0.01], step_size=1, gamma=0.5)
    scheduler.step()
    assert scheduler.get_last_lr() == [0.05, 0.005]


def test_an_attached_base_lr_list_gives_the_listed_groups_their_base_lr():
    # braintools' form: base_lr=[b0, b1] sets the base lr of groups 0 and 1; a group past the
    # list takes its own lr. torch's StepLR from each base: b * gamma^(t // step_size).
    scheduler = stateopt.StepLR(base_lr=[0.1, 0.01], step_size=1, gamma=0.5)
    opt = stateopt.SGD(lr=scheduler).register_trainable_weights({'w': brainstate.ParamState(jnp.zeros(2))})
    opt.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, lr=0.3)
    opt.add_param_group({'c': brainstate.ParamState(jnp.zeros(1))}, lr=0.2)
    for _ in range(2):
        scheduler.step()
    assert_close_f32(opt.get_last_lr(), [0.1 * 0.25, 0.01 * 0.25, 0.2 * 0.25])


def test_stepping_does_not_recompile():
    traces = []
    scheduler = stateopt.ReduceLROnPlateau(base_lr=1.0, factor=0.5, patience=0)
    opt = stateopt.SGD(lr=scheduler).register_trainable_weights({'w': brainstate.ParamState(jnp.zeros(1))})

    @brainstate.transform.jit
    def step(metric):
        traces.append(None)
        scheduler.step(metric)

    for metric in [3.0, 2.0, 2.5, 2.5, 1.0]:
        step(jnp.float32(metric))
        opt.current_lr = opt.current_lr  # a host-side write between steps
    assert len(traces) == 1
    assert scheduler.get_last_lr() == [0.25]
    for metric in [1.0, 1.0]:
        scheduler.step(metric)
    assert scheduler._compiled._cache_size() == 1


def test_step_to_an_epoch_uses_the_closed_form_inside_and_outside_jit():
    """torch's step(epoch): fractional epochs for warm restarts (cycles [0, 2), [2, 6), [6, 14))."""
    for jit in (False, True):
        restarts = stateopt.CosineAnnealingWarmRestarts(base_lr=1.0, T_0=2, T_mult=2, eta_min=0.1)
        step = brainstate.transform.jit(restarts.step) if jit else restarts.step
        lrs = []
        for epoch in [0.5, 5.5, 7.0, 1.0]:
            step(jnp.float32(epoch) if jit else epoch)
            lrs.append(restarts.get_last_lr()[0])
        t_cur, t_i = np.array([0.5, 3.5, 1.0, 1.0]), np.array([2, 4, 8, 2])
        assert_close_f32(np.asarray(lrs), 0.1 + 0.9 * (1 + np.cos(np.pi * t_cur / t_i)) / 2, steps=LR_STEPS)
        assert int(restarts.last_epoch.value) == 1
        decay = stateopt.StepLR(base_lr=1.0, step_size=3, gamma=0.5)
        (brainstate.transform.jit(decay.step) if jit else decay.step)(7)
        assert decay.get_last_lr() == [0.25] and int(decay.last_epoch.value) == 7


def test_checkpoints_round_trip_an_attached_scheduler(tmp_path):
    row = next(row for row in ROWS if row.id == 'chained-plateau')
    opt, scheduler, params = make(row)
    for t in range(10):
        scheduler.step(row.metrics[t])
    stateopt.save_checkpoint(tmp_path / 'run.msgpack', {'model': params, 'optimizer': opt})
    opt2, scheduler2, params2 = make(row, group_lr=0.5)
    stateopt.load_checkpoint(tmp_path / 'run.msgpack', {'model': params2, 'optimizer': opt2})
    for t in range(10, 20):
        scheduler.step(row.metrics[t])
        scheduler2.step(row.metrics[t])
        assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    scheduler2.check_state_dict(scheduler.state_dict())
    with pytest.raises(KeyError, match=r"\['schedulers'\]\[0\].*'last_epoch'"):
        scheduler2.check_state_dict({**scheduler.state_dict(), 'schedulers': [{}, {}]})


@pytest.mark.parametrize('anneal_strategy', ['cos', 'linear'])
def test_one_cycle_holds_its_final_lr_from_the_last_step_on(anneal_strategy):
    """torch extrapolates the last phase at step total_steps (below zero for 'linear'), then raises."""
    scheduler = stateopt.OneCycleLR(max_lr=1.0, total_steps=10, pct_start=0.25, three_phase=True,
                                    anneal_strategy=anneal_strategy, div_factor=10.0,
                                    final_div_factor=100.0)
    values = np.asarray(jax.vmap(scheduler)(jnp.arange(9, 14)))
    assert_close_f32(values, np.full(5, 1.0 / 10 / 100), steps=LR_STEPS)


RAW_TRANSFORMS = {
    'jit': lambda step: jax.jit(lambda: step())(),
    'jit-metric': lambda step: jax.jit(lambda m: step(m))(1.0),
    'vmap-metric': lambda step: jax.vmap(lambda m: step(m))(jnp.ones(2)),
    'grad-metric': lambda step: jax.grad(lambda m: (step(m), m)[1])(1.0),
    'vmap-epoch': lambda step: jax.vmap(lambda e: step(epoch=e))(jnp.arange(2)),
}


@pytest.mark.parametrize('transform', list(RAW_TRANSFORMS))
def test_raw_jax_transforms_are_refused_and_change_nothing(transform):
    plateau = 'metric' in transform
    scheduler = stateopt.ReduceLROnPlateau(base_lr=0.1, patience=0) if plateau else \
        stateopt.StepLR(base_lr=0.1, step_size=1, gamma=0.5)
    opt = stateopt.SGD(lr=scheduler).register_trainable_weights({'w': brainstate.ParamState(jnp.ones(1))})
    before = (scheduler.state_dict(), opt.get_last_lr())
    with pytest.raises(brainstate.TraceContextError, match='raw JAX transform.*brainstate.transform.jit'):
        RAW_TRANSFORMS[transform](scheduler.step)
    after = (scheduler.state_dict(), opt.get_last_lr())
    assert not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(after))
    jax.tree.map(np.testing.assert_array_equal, after, before)


@pytest.mark.parametrize('row', ROWS, ids=ids(ROWS))
def test_last_epoch_saturates_at_the_int32_limit(row):
    opt, scheduler, params = make(row)
    limit = np.iinfo(np.int32).max
    schedulers = [scheduler, *getattr(scheduler, 'schedulers', ())]
    for each in schedulers:
        each.last_epoch.value = jnp.asarray(limit - 2, jnp.int32)
    for t in range(4):
        advance(row, scheduler, metric_at(row, t))
        opt.update(GRADS)
    assert int(scheduler.last_epoch.value) == limit
    # a composite's children are idle or saturated
    assert all(int(child.last_epoch.value) in (limit - 2, limit) for child in schedulers[1:])
    lrs = np.asarray(opt.get_last_lr())
    assert np.isfinite(lrs).all() and (lrs >= 0).all(), lrs
    assert all(np.isfinite(np.asarray(state.value)).all() for state in params.values())


@pytest.mark.parametrize('make_scheduler, name', [
    (lambda: stateopt.StepLR(base_lr=-0.1), 'base_lr'),
    (lambda: stateopt.StepLR(base_lr=[0.1, float('nan')]), r'base_lr\[1\]'),
    (lambda: stateopt.StepLR(step_size=0), 'step_size'),
    (lambda: stateopt.StepLR(gamma=-1.0), 'gamma'),
    (lambda: stateopt.StepLR(last_epoch=-1), 'last_epoch'),
    (lambda: stateopt.MultiStepLR(milestones=[3, 'a']), r'milestones\[1\]'),
    (lambda: stateopt.ConstantLR(factor=0.0), 'factor'),
    (lambda: stateopt.ConstantLR(total_iters=-1), 'total_iters'),
    (lambda: stateopt.LinearLR(start_factor=1.5), 'start_factor'),
    (lambda: stateopt.LinearLR(end_factor=-0.1), 'end_factor'),
    (lambda: stateopt.PolynomialLR(power=-1.0), 'power'),
    (lambda: stateopt.CosineAnnealingLR(T_max=0), 'T_max'),
    (lambda: stateopt.CosineAnnealingLR(eta_min=-1.0), 'eta_min'),
    (lambda: stateopt.CosineAnnealingWarmRestarts(T_0=2.5), 'T_0'),
    (lambda: stateopt.CosineAnnealingWarmRestarts(T_mult=0), 'T_mult'),
    (lambda: stateopt.LambdaLR(lr_lambda=0.5), 'lr_lambda'),
    (lambda: stateopt.LambdaLR(base_lr=0.1), 'lr_lambda'),
    (lambda: stateopt.OneCycleLR(), 'total_steps'),
    (lambda: stateopt.OneCycleLR(total_steps=10, max_lr=0.0), 'max_lr'),
    (lambda: stateopt.OneCycleLR(total_steps=10, pct_start=1.5), 'pct_start'),
    (lambda: stateopt.OneCycleLR(total_steps=10, pct_start=0.1), 'pct_start'),
    (lambda: stateopt.OneCycleLR(total_steps=10, anneal_strategy='cosine'), 'anneal_strategy'),
    (lambda: stateopt.OneCycleLR(total_steps=10, div_factor=0), 'div_factor'),
    (lambda: stateopt.OneCycleLR(epochs=2, steps_per_epoch=0), 'steps_per_epoch'),
    (lambda: stateopt.CyclicLR(mode='triangle'), 'mode'),
    (lambda: stateopt.CyclicLR(step_size_down=0), 'step_size_down'),
    (lambda: stateopt.CyclicLR(max_momentum=1.5), 'max_momentum'),
    (lambda: stateopt.CyclicLR(cycle_momentum='yes'), 'cycle_momentum'),
    (lambda: stateopt.ReduceLROnPlateau(factor=1.0), 'factor'),
    (lambda: stateopt.ReduceLROnPlateau(mode='lowest'), 'mode'),
    (lambda: stateopt.ReduceLROnPlateau(threshold_mode='relative'), 'threshold_mode'),
    (lambda: stateopt.ReduceLROnPlateau(patience=-1), 'patience'),
    (lambda: stateopt.ReduceLROnPlateau(min_lr=[0.1, -0.1]), r'min_lr\[1\]'),
    (lambda: stateopt.ExponentialDecayLR(decay_rate=0.0), 'decay_rate'),
    (lambda: stateopt.ExponentialDecayLR(staircase=1), 'staircase'),
    (lambda: stateopt.WarmupScheduler(warmup_epochs=-1), 'warmup_epochs'),
    (lambda: stateopt.WarmupCosineSchedule(warmup_steps=10, total_steps=10), 'total_steps'),
    (lambda: stateopt.PiecewiseConstantSchedule(boundaries=[5, 2], values=[1, 2, 3]), 'boundaries'),
    (lambda: stateopt.PiecewiseConstantSchedule(boundaries=[5], values=[1.0]), 'values'),
    (lambda: stateopt.SequentialLR([stateopt.StepLR()], milestones=[3]), 'milestones'),
    (lambda: stateopt.SequentialLR([stateopt.StepLR(), stateopt.StepLR()], milestones=[0]),
     r'milestones\[0\]'),
    (lambda: stateopt.ChainedScheduler([]), 'schedulers'),
    (lambda: stateopt.ChainedScheduler([stateopt.StepLR(base_lr=0.0), stateopt.ExponentialLR(base_lr=0.2)]),
     r'schedulers\[1\]'),
    # torch's habits, explained
    (lambda: stateopt.StepLR(base_lr=0.1, last_epoch=-1),
     r"last_epoch=-1 is torch's fresh start.*last_epoch=0"),
    (lambda: stateopt.LambdaLR(base_lr=0.1, lr_lambda=lambda t: 1.0 if t < 3 else 0.1),
     r'lr_lambda uses the step as a Python number.*jnp.where'),
    (lambda: stateopt.MultiplicativeLR(lr_lambda=[_halving, lambda t: math.exp(-t)]),
     r'lr_lambda\[1\] uses the step as a Python number'),
    (lambda: stateopt.LambdaLR(lr_lambda=lambda t: [1.0, 0.5][t]), 'lr_lambda uses the step'),
    # per-group lists give one value per group, so they agree in length
    (lambda: stateopt.OneCycleLR(max_lr=[0.1, 0.2], total_steps=10, base_momentum=[0.8, 0.8, 0.8]),
     'max_lr has 2 and base_momentum has 3 values'),
    (lambda: stateopt.CyclicLR(base_lr=[0.01, 0.02], max_lr=[0.1, 0.2, 0.3]),
     'base_lr has 2 and max_lr has 3'),
    (lambda: stateopt.ReduceLROnPlateau(base_lr=[0.1, 0.2], min_lr=[0.0, 0.0, 0.0]),
     'min_lr has 3 and base_lr has 2'),
    (lambda: stateopt.ChainedScheduler([stateopt.CyclicLR(max_lr=[0.1, 0.2]),
                                        stateopt.LambdaLR(lr_lambda=[_halving] * 3)]),
     r'schedulers\[0\]\.max_lr has 2 and schedulers\[1\]\.lr_lambda has 3'),
], ids=lambda value: value if isinstance(value, str) else '')
def test_invalid_arguments_raise_value_error_naming_the_parameter(make_scheduler, name):
    with pytest.raises(ValueError, match=name):
        make_scheduler()


def test_invalid_steps_and_attachments_change_nothing():
    child = stateopt.ExponentialLR(base_lr=0.1, gamma=0.5)
    sequence = stateopt.SequentialLR([stateopt.ConstantLR(base_lr=0.1), child], milestones=[2])
    with pytest.raises(RuntimeError, match='SequentialLR'):
        child.step()
    with pytest.raises(ValueError, match='schedulers'):
        stateopt.ChainedScheduler([child])
    with pytest.raises(ValueError, match='metric'):
        sequence.step(1.0)
    plateau = stateopt.ChainedScheduler([stateopt.ReduceLROnPlateau(base_lr=0.1)])
    with pytest.raises(ValueError, match='metric'):
        plateau.step()
    with pytest.raises(ValueError, match='scalar'):
        plateau.step(jnp.ones(2))
    with pytest.raises(ValueError, match='epoch'):
        child.__class__(base_lr=0.1).step(-2)
    assert int(sequence.last_epoch.value) == 0 and plateau.get_last_lr() == [0.1]

    cycling = stateopt.OneCycleLR(max_lr=0.1, total_steps=10)
    with pytest.raises(ValueError, match='cycle_momentum'):
        stateopt.RMSprop(lr=cycling)  # a momentum-0 RMSprop keeps no buffer (torch's fails at its step)
    assert cycling.optimizer is None and cycling.get_last_lr() == pytest.approx([0.1 / 25])
    opt = stateopt.RMSprop(lr=cycling, momentum=0.9)
    assert float(opt.param_groups[0]['momentum']) == pytest.approx(0.95)
    with pytest.raises(ValueError, match='another optimizer'):
        cycling.attach_optimizer(stateopt.SGD(lr=0.1))
    with pytest.raises(ValueError, match=r'already driven by a OneCycleLR.*SequentialLR\(optimizer'):
        stateopt.StepLR(base_lr=0.1).attach_optimizer(opt)
    with pytest.raises(ValueError, match='own lr schedule'):
        opt.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, lr=stateopt.StepLR())
    with pytest.raises(ValueError, match='own lr schedule'):
        opt.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, lr=lambda count: 0.1)
    with pytest.raises(ValueError, match='own lr schedule'):
        opt.param_groups[0]['lr'] = lambda count: 0.1
    with pytest.raises(ValueError, match='momentum=0'):   # refused before the group is added
        opt.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, momentum=0.0)
    assert len(opt.param_groups) == 1 and cycling.base_lrs == pytest.approx([0.1 / 25])


def test_load_state_dict_checks_everything_first():
    row = next(row for row in ROWS if row.id == 'sequential-plateau')
    opt, scheduler, _ = make(row)
    for t in range(8):
        scheduler.step(row.metrics[t])
    before = jax.tree.map(np.asarray, opt.state_dict())
    good = scheduler.state_dict()
    bad_cases = {
        'missing': ({k: v for k, v in good.items() if k != 'lrs'}, KeyError, 'lrs'),
        'unknown': ({**good, 'extra': 1}, KeyError, 'extra'),
        'groups': ({**good, 'lrs': good['lrs'][:1]}, ValueError, 'lrs'),
        'negative': ({**good, 'lrs': [jnp.float32(-1.0), good['lrs'][1]]}, ValueError, r"\['lrs'\]\[0\]"),
        'dtype': ({**good, 'last_epoch': jnp.float32(3.0)}, ValueError, 'last_epoch'),
        'nested': ({**good, 'schedulers': [good['schedulers'][0], {}]}, KeyError, 'best'),
    }
    for name, (bad, error, match) in bad_cases.items():
        with pytest.raises(error, match=match):
            scheduler.load_state_dict(bad)
        with pytest.raises(error, match=match):
            opt.load_state_dict({**before, 'lr_scheduler': bad})
        np.testing.assert_equal(jax.tree.map(np.asarray, opt.state_dict()), before, err_msg=name)


def test_plot_schedule_draws_one_line_per_group():
    import matplotlib
    matplotlib.use('Agg')
    row = next(row for row in ROWS if row.id == 'sequential')
    opt, scheduler, _ = make(row)
    scheduler.step()
    fig, ax = stateopt.plot_schedule(scheduler, STEPS)
    lines = ax.get_lines()
    assert fig is ax.figure and len(lines) == 2
    for line, column in zip(lines, expected(row)['lr'].T):
        assert_lrs(line.get_ydata(), column, 'plotted')
    assert int(scheduler.last_epoch.value) == 1
    matplotlib.pyplot.close(fig)


def test_plot_schedule_names_the_extra_without_matplotlib(monkeypatch):
    monkeypatch.setitem(__import__('sys').modules, 'matplotlib', None)
    with pytest.raises(ImportError, match=r'stateopt\[plot\]'):
        stateopt.plot_schedule(stateopt.StepLR(), 10)


# -- a composite's children -------------------------------------------------------------------------

def composite_with_children(kind):
    """An attached SequentialLR (milestone 2) or ChainedScheduler whose child 1 restarts every 3 steps."""
    if kind == 'sequential':
        first = stateopt.LinearLR(base_lr=BASE_LR, start_factor=0.5, total_iters=4)
    else:
        first = stateopt.ConstantLR(base_lr=BASE_LR, factor=0.5, total_iters=2)
    restarts = stateopt.CosineAnnealingWarmRestarts(base_lr=BASE_LR, T_0=3)
    if kind == 'sequential':
        composite = stateopt.SequentialLR([first, restarts], milestones=[2])
    else:
        composite = stateopt.ChainedScheduler([first, restarts])
    stateopt.SGD(lr=composite).register_trainable_weights({'w': brainstate.ParamState(jnp.zeros(1))})
    return composite


#: (composite, child, the child's counters after 5 composite steps, after 7)
CHILDREN = [
    # SequentialLR: child 0 is active for step 1 only; child 1 starts afresh at step 2 and restarts at 5
    ('sequential', 0, {'last_epoch': 1}, {'last_epoch': 1}),
    ('sequential', 1, {'last_epoch': 3, 'T_cur': 0, 'T_i': 3}, {'last_epoch': 5, 'T_cur': 2, 'T_i': 3}),
    # ChainedScheduler: every child steps at every step
    ('chained', 0, {'last_epoch': 5}, {'last_epoch': 7}),
    ('chained', 1, {'last_epoch': 5, 'T_cur': 2, 'T_i': 3}, {'last_epoch': 7, 'T_cur': 1, 'T_i': 3}),
]


def counters(scheduler):
    return jax.tree.map(float, scheduler.state_dict())


@pytest.mark.parametrize('kind, index, at_5, at_7', CHILDREN, ids=[f'{k}-{i}' for k, i, *_ in CHILDREN])
def test_a_composite_child_saves_and_loads_its_own_counters(kind, index, at_5, at_7, tmp_path):
    """As in torch, any scheduler has a state dict; a child's holds its own counters, not the lrs."""
    composite = composite_with_children(kind)
    child = composite.schedulers[index]
    for _ in range(5):
        composite.step()
    assert counters(child) == at_5
    saved = jax.tree.map(np.asarray, child.state_dict())
    stateopt.save_checkpoint(tmp_path / 'child.msgpack', {'child': child})
    for _ in range(2):
        composite.step()
    lrs = composite.get_last_lr()
    assert counters(child) == at_7

    stateopt.load_checkpoint(tmp_path / 'child.msgpack', {'child': child})
    assert counters(child) == at_5
    assert int(composite.last_epoch.value) == 7 and composite.get_last_lr() == lrs  # only the child's
    child.load_state_dict(jax.tree.map(np.asarray, {**saved, 'last_epoch': np.int32(at_7['last_epoch'])}))
    assert counters(child) == {**at_5, 'last_epoch': at_7['last_epoch']}

    bad_cases = {
        'missing': ({k: v for k, v in saved.items() if k != 'last_epoch'}, KeyError, 'last_epoch'),
        'the composite\'s lrs': ({**saved, 'lrs': [0.1]}, KeyError, 'lrs'),
        'negative': ({**saved, 'last_epoch': np.int32(-1)}, ValueError, 'last_epoch'),
    }
    before = counters(child)
    for name, (bad, error, match) in bad_cases.items():
        with pytest.raises(error, match=match):
            child.check_state_dict(bad)
        with pytest.raises(error, match=match):
            child.load_state_dict(bad)
        assert counters(child) == before, name


# -- torch's form: the optimizer first -----------------------------------------------------------------

def optimizer_with_two_groups(momentum=0.9, groups=2, scheduler=None):
    """SGD with groups 'w' (lr BASE_LR) and 'b' (lr GROUP_LR), then more groups with lr GROUP_LR."""
    opt = stateopt.SGD(lr=BASE_LR if scheduler is None else scheduler, momentum=momentum)
    opt.register_trainable_weights({'w': brainstate.ParamState(jnp.zeros(1))})
    for i in range(1, groups):
        opt.add_param_group({f'b{i}': brainstate.ParamState(jnp.zeros(1))}, lr=GROUP_LR)
    return opt


#: class -> (torch's form, positional as torch's signature has them; the same scheduler in stateopt's form)
TORCH_FORMS = {
    'LRScheduler': (lambda opt: stateopt.LRScheduler(opt), lambda: stateopt.LRScheduler(base_lr=BASE_LR)),
    'StepLR': (lambda opt: stateopt.StepLR(opt, 3, 0.5),
               lambda: stateopt.StepLR(base_lr=BASE_LR, step_size=3, gamma=0.5)),
    'MultiStepLR': (lambda opt: stateopt.MultiStepLR(opt, [2, 5], 0.5),
                    lambda: stateopt.MultiStepLR(base_lr=BASE_LR, milestones=[2, 5], gamma=0.5)),
    'ConstantLR': (lambda opt: stateopt.ConstantLR(opt, 0.5, 3),
                   lambda: stateopt.ConstantLR(base_lr=BASE_LR, factor=0.5, total_iters=3)),
    'LinearLR': (lambda opt: stateopt.LinearLR(opt, 0.2, 0.9, 4),
                 lambda: stateopt.LinearLR(base_lr=BASE_LR, start_factor=0.2, end_factor=0.9, total_iters=4)),
    'ExponentialLR': (lambda opt: stateopt.ExponentialLR(opt, 0.8),
                      lambda: stateopt.ExponentialLR(base_lr=BASE_LR, gamma=0.8)),
    'PolynomialLR': (lambda opt: stateopt.PolynomialLR(opt, 6, 2.0),
                     lambda: stateopt.PolynomialLR(base_lr=BASE_LR, total_iters=6, power=2.0)),
    'CosineAnnealingLR': (lambda opt: stateopt.CosineAnnealingLR(opt, 6, 0.01),
                          lambda: stateopt.CosineAnnealingLR(base_lr=BASE_LR, T_max=6, eta_min=0.01)),
    'CosineAnnealingWarmRestarts': (
        lambda opt: stateopt.CosineAnnealingWarmRestarts(opt, 3, 2, 0.01),
        lambda: stateopt.CosineAnnealingWarmRestarts(base_lr=BASE_LR, T_0=3, T_mult=2, eta_min=0.01)),
    'LambdaLR': (lambda opt: stateopt.LambdaLR(opt, _halving),
                 lambda: stateopt.LambdaLR(base_lr=BASE_LR, lr_lambda=_halving)),
    'MultiplicativeLR': (lambda opt: stateopt.MultiplicativeLR(opt, _nine_tenths),
                         lambda: stateopt.MultiplicativeLR(base_lr=BASE_LR, lr_lambda=_nine_tenths)),
    # torch's order after anneal_strategy: cycle_momentum, base_momentum, max_momentum, div_factor
    'OneCycleLR': (lambda opt: stateopt.OneCycleLR(opt, [0.5, 0.2], 10, None, None, 0.3, 'linear', True,
                                                   0.8, 0.9, 10.0),
                   lambda: stateopt.OneCycleLR(max_lr=[0.5, 0.2], total_steps=10, pct_start=0.3,
                                               anneal_strategy='linear', base_momentum=0.8, max_momentum=0.9,
                                               div_factor=10.0)),
    # torch's order after scale_mode: cycle_momentum, base_momentum, max_momentum
    'CyclicLR': (lambda opt: stateopt.CyclicLR(opt, 0.01, 0.1, 2, 3, 'triangular2', 1.0, None, 'cycle', True,
                                               0.7, 0.9),
                 lambda: stateopt.CyclicLR(base_lr=0.01, max_lr=0.1, step_size_up=2, step_size_down=3,
                                           mode='triangular2', base_momentum=0.7, max_momentum=0.9)),
    'ReduceLROnPlateau': (
        lambda opt: stateopt.ReduceLROnPlateau(opt, 'min', 0.5, 1),
        lambda: stateopt.ReduceLROnPlateau(base_lr=BASE_LR, mode='min', factor=0.5, patience=1)),
    'ExponentialDecayLR': (
        lambda opt: stateopt.ExponentialDecayLR(opt, 3, 0.5),
        lambda: stateopt.ExponentialDecayLR(base_lr=BASE_LR, decay_steps=3, decay_rate=0.5)),
    'WarmupScheduler': (
        lambda opt: stateopt.WarmupScheduler(opt, 3, 0.01),
        lambda: stateopt.WarmupScheduler(base_lr=BASE_LR, warmup_epochs=3, warmup_start_lr=0.01)),
    'WarmupCosineSchedule': (
        lambda opt: stateopt.WarmupCosineSchedule(opt, 2, 8),
        lambda: stateopt.WarmupCosineSchedule(base_lr=BASE_LR, warmup_steps=2, total_steps=8)),
    'PiecewiseConstantSchedule': (
        lambda opt: stateopt.PiecewiseConstantSchedule(opt, [3, 6], [0.1, 0.05, 0.01]),
        lambda: stateopt.PiecewiseConstantSchedule(base_lr=BASE_LR, boundaries=[3, 6],
                                                   values=[0.1, 0.05, 0.01])),
    'SequentialLR': (
        lambda opt: stateopt.SequentialLR(opt, [stateopt.LinearLR(start_factor=0.5, total_iters=2),
                                                stateopt.ExponentialLR(gamma=0.9)], [2]),
        lambda: stateopt.SequentialLR([stateopt.LinearLR(base_lr=BASE_LR, start_factor=0.5, total_iters=2),
                                       stateopt.ExponentialLR(base_lr=BASE_LR, gamma=0.9)], milestones=[2])),
    'ChainedScheduler': (
        lambda opt: stateopt.ChainedScheduler([stateopt.ConstantLR(factor=0.5, total_iters=2),
                                               stateopt.ExponentialLR(gamma=0.9)], opt),
        lambda: stateopt.ChainedScheduler([stateopt.ConstantLR(base_lr=BASE_LR, factor=0.5, total_iters=2),
                                           stateopt.ExponentialLR(base_lr=BASE_LR, gamma=0.9)])),
}


def test_the_torch_form_table_covers_every_scheduler():
    assert sorted(TORCH_FORMS) == sorted(['LRScheduler', *stateopt.SCHEDULERS])


def step_any(scheduler, metric=1.0):
    """``step()``, or ``step(metric)`` for a ReduceLROnPlateau."""
    if isinstance(scheduler, stateopt.ReduceLROnPlateau):
        scheduler.step(metric)
    else:
        scheduler.step()


@pytest.mark.parametrize('name', list(TORCH_FORMS))
def test_torch_form_attaches_with_the_groups_lrs_as_base_lrs(name):
    """``Scheduler(optimizer, ...)``: each group's base lr is its lr (torch's initial_lr)."""
    torch_form, stateopt_form = TORCH_FORMS[name]
    opt = optimizer_with_two_groups()
    scheduler = torch_form(opt)
    assert opt.lr_scheduler is scheduler and scheduler.optimizer is opt
    reference = stateopt_form()
    reference_opt = optimizer_with_two_groups(scheduler=reference)
    got, want = [], []
    for _ in range(8):
        got.append(opt.get_last_lr() + momenta(opt).tolist())
        want.append(reference_opt.get_last_lr() + momenta(reference_opt).tolist())
        step_any(scheduler)
        step_any(reference)
    assert_close_f32(np.asarray(got), np.asarray(want), steps=LR_STEPS)
    saved = opt.state_dict()['lr_scheduler']
    assert int(saved['last_epoch']) == 8
    assert_close_f32(np.asarray(saved['lrs']), np.asarray(reference.get_last_lr()), steps=LR_STEPS)


class FakeTorchOptimizer:
    """What a torch optimizer shows a scheduler: param_groups of dicts."""

    param_groups = [{'params': [], 'lr': 0.1}]


#: id -> (the call, the error, its message, a scheduler attached first in torch's form)
TORCH_FORM_ERRORS = {
    'base_lr given': (lambda opt: stateopt.StepLR(opt, 3, base_lr=0.5), ValueError,
                      r"StepLR\(optimizer, \.\.\., base_lr=\.\.\.\): in torch's form each group's base",
                      None),
    'resuming last_epoch': (lambda opt: stateopt.StepLR(opt, 3, last_epoch=4), ValueError,
                            r'last_epoch=4\): in torch\'s form only last_epoch=-1', None),
    'too many positional': (lambda opt: stateopt.StepLR(opt, 3, 0.5, -1, 7), TypeError,
                            r'at most 3 positional arguments after the optimizer \(step_size, gamma, '
                            r'last_epoch\), got 4', None),
    'plateau has no last_epoch': (
        lambda opt: stateopt.ReduceLROnPlateau(opt, 'min', 0.1, 10, 1e-4, 'rel', 0, 0.0, 1e-8, 0), TypeError,
        'at most 8 positional arguments', None),
    'a value twice': (lambda opt: stateopt.StepLR(opt, 3, step_size=3), TypeError,
                      "multiple values for argument 'step_size'", None),
    'a second scheduler': (lambda opt: stateopt.ExponentialLR(opt, 0.9), ValueError,
                           r'already driven by a LinearLR.*SequentialLR\(optimizer, \[first, second',
                           lambda opt: stateopt.LinearLR(opt)),
    'a torch optimizer': (lambda opt: stateopt.StepLR(FakeTorchOptimizer(), 3), TypeError,
                          r'StepLR\(optimizer, \.\.\.\) expects a stateopt optimizer .*got '
                          r'FakeTorchOptimizer', None),
    'optimizer keyword': (lambda opt: stateopt.CosineAnnealingLR(optimizer='sgd', T_max=3), TypeError,
                          r'expects a stateopt optimizer .*got str', None),
    'chained with a string': (lambda opt: stateopt.ChainedScheduler([stateopt.ExponentialLR()], 'sgd'),
                              TypeError, r'expects a stateopt optimizer .*got str', None),
    'children with another base_lr': (
        lambda opt: stateopt.SequentialLR(opt, [stateopt.LinearLR(base_lr=0.5),
                                                stateopt.ExponentialLR(base_lr=0.5)], [2]),
        ValueError,
        r'base lr from the optimizer \(group 0: 0.1\), but its schedulers were built with base_lr=0.5', None),
}


@pytest.mark.parametrize('case', list(TORCH_FORM_ERRORS))
def test_torch_form_errors_say_how_to_write_it(case):
    make, error, match, first = TORCH_FORM_ERRORS[case]
    opt = optimizer_with_two_groups()
    attached = None if first is None else first(opt)
    before = opt.get_last_lr()
    with pytest.raises(error, match=match):
        make(opt)
    assert opt.schedulers == ([] if attached is None else [attached]) and opt.get_last_lr() == before


def test_a_refused_torch_form_composite_leaves_its_schedulers_free():
    opt = optimizer_with_two_groups()
    given = [stateopt.LinearLR(base_lr=0.5, start_factor=0.5, total_iters=2),
             stateopt.ExponentialLR(base_lr=0.5)]
    with pytest.raises(ValueError, match='base_lr=0.5'):
        stateopt.SequentialLR(opt, given, [2])
    default = [stateopt.LinearLR(start_factor=0.5, total_iters=2), stateopt.ExponentialLR(gamma=0.9)]
    stateopt.StepLR(opt, 3)
    with pytest.raises(ValueError, match='already driven by a StepLR'):
        stateopt.SequentialLR(opt, default, milestones=[2])
    # both lists are free again, with the base_lr they were built with
    again = stateopt.SequentialLR(given, [2]), stateopt.SequentialLR(default, [2])
    assert [round(float(again[0](t)), 6) for t in range(4)] == [0.25, 0.375, 0.5, 0.475]
    assert [round(float(again[1](t)), 7) for t in range(4)] == [0.0005, 0.00075, 0.001, 0.0009]


# -- attach_optimizer's argument -------------------------------------------------------------------------

@pytest.mark.parametrize('value', ['sgd', None, 0.1, {'lr': 0.1}, stateopt.StepLR(base_lr=0.1),
                                   FakeTorchOptimizer()],
                         ids=['str', 'None', 'float', 'dict', 'scheduler', 'torch-like'])
def test_attach_optimizer_refuses_what_is_not_an_optimizer(value):
    scheduler = stateopt.StepLR(base_lr=0.1, step_size=2)
    with pytest.raises(TypeError, match=rf'StepLR\.attach_optimizer expects a stateopt optimizer \(such as '
                                        rf'stateopt\.SGD\(\.\.\.\).*got {type(value).__name__}'):
        scheduler.attach_optimizer(value)
    assert scheduler.optimizer is None and scheduler.get_last_lr() == [0.1]


def _tenth(count):
    return 0.1


@pytest.mark.parametrize('attach', [
    lambda opt: stateopt.StepLR(opt, 2),
    lambda opt: stateopt.StepLR(base_lr=0.1, step_size=2).attach_optimizer(opt),
], ids=['torch form', 'attach_optimizer'])
def test_a_scheduler_refuses_an_optimizer_whose_lr_is_a_schedule(attach):
    """The group would keep following its own schedule; refused, nothing changes."""
    opt = stateopt.SGD(lr=_tenth).register_trainable_weights({'w': brainstate.ParamState(jnp.zeros(1))})
    with pytest.raises(ValueError, match=r'param group 0 has its own lr schedule \(lr=<function _tenth'):
        attach(opt)
    assert opt.schedulers == [] and opt.get_last_lr() == [0.1]


# -- per-group lists -----------------------------------------------------------------------------------

#: id -> (the scheduler with a per-group list of n values, the parameter as an error names it)
PER_GROUP_LISTS = {
    'OneCycleLR max_lr': (lambda n: stateopt.OneCycleLR(max_lr=[0.1] * n, total_steps=10), 'max_lr'),
    'OneCycleLR base_momentum': (
        lambda n: stateopt.OneCycleLR(max_lr=0.1, total_steps=10, base_momentum=[0.8] * n), 'base_momentum'),
    'OneCycleLR max_momentum': (
        lambda n: stateopt.OneCycleLR(max_lr=0.1, total_steps=10, max_momentum=[0.9] * n), 'max_momentum'),
    'CyclicLR base_lr': (lambda n: stateopt.CyclicLR(base_lr=[0.01] * n, max_lr=0.1), 'base_lr'),
    'CyclicLR max_lr': (lambda n: stateopt.CyclicLR(base_lr=0.01, max_lr=[0.1] * n), 'max_lr'),
    'CyclicLR base_momentum': (lambda n: stateopt.CyclicLR(base_momentum=[0.8] * n), 'base_momentum'),
    'CyclicLR max_momentum': (lambda n: stateopt.CyclicLR(max_momentum=[0.9] * n), 'max_momentum'),
    'ReduceLROnPlateau min_lr': (
        lambda n: stateopt.ReduceLROnPlateau(base_lr=BASE_LR, min_lr=[0.0] * n), 'min_lr'),
    'LambdaLR lr_lambda': (
        lambda n: stateopt.LambdaLR(base_lr=BASE_LR, lr_lambda=[_halving] * n), 'lr_lambda'),
    'MultiplicativeLR lr_lambda': (
        lambda n: stateopt.MultiplicativeLR(base_lr=BASE_LR, lr_lambda=[_nine_tenths] * n), 'lr_lambda'),
    'SequentialLR child': (
        lambda n: stateopt.SequentialLR([stateopt.ConstantLR(base_lr=BASE_LR),
                                         stateopt.OneCycleLR(max_lr=[0.1] * n, total_steps=10)],
                                        milestones=[2]),
        r'schedulers\[1\]\.max_lr'),
}


@pytest.mark.parametrize('values, groups', [(2, 1), (3, 2), (1, 2)], ids=['2-for-1', '3-for-2', '1-for-2'])
@pytest.mark.parametrize('case', list(PER_GROUP_LISTS))
def test_a_per_group_list_must_have_one_value_per_group(case, values, groups):
    """As torch, refuse a list that does not match an optimizer's groups; nothing changes."""
    make_scheduler, name = PER_GROUP_LISTS[case]
    opt = optimizer_with_two_groups(groups=groups)
    before = opt.get_last_lr()
    scheduler = make_scheduler(values)
    with pytest.raises(ValueError, match=rf'{name} has {values} values \(one per param group\), but the '
                                         rf'optimizer has {groups} param group'):
        scheduler.attach_optimizer(opt)
    assert opt.schedulers == [] and scheduler.optimizer is None and opt.get_last_lr() == before


@pytest.mark.parametrize('case', list(PER_GROUP_LISTS))
def test_a_per_group_list_counts_the_groups_added_later(case):
    """Attached before its groups exist (lr=scheduler), a list waits for them: stepping checks, and a group
    past its end is refused before it is added."""
    make_scheduler, name = PER_GROUP_LISTS[case]
    scheduler = make_scheduler(2)
    opt = optimizer_with_two_groups(groups=1, scheduler=scheduler)
    with pytest.raises(ValueError, match=rf'{name} has 2 values \(one per param group\), but the '
                                         rf'optimizer has 1 param group;'):
        step_any(scheduler)
    assert int(scheduler.last_epoch.value) == 0
    opt.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, lr=GROUP_LR)
    step_any(scheduler)
    assert int(scheduler.last_epoch.value) == 1
    with pytest.raises(ValueError, match=rf'{name} has 2 values \(one per param group\) and the optimizer '
                                         rf'already has 2 param groups'):
        opt.add_param_group({'c': brainstate.ParamState(jnp.zeros(1))}, lr=GROUP_LR)
    assert len(opt.param_groups) == 2 and len(scheduler.get_last_lr()) == 2


# -- SGD(momentum=0) under a scheduler that cycles the momentum ------------------------------------------

@pytest.mark.parametrize('form', ['lr=scheduler', 'torch form'])
@pytest.mark.parametrize('case', list(CYCLED_MOMENTUM))
def test_sgd_without_momentum_follows_torch_when_a_scheduler_cycles_it(case, form):
    """torch 2.13's lrs, momenta and parameters (tests/fixtures/make_torch_cycled_momentum.py)."""
    spec, sgd_kwargs = CYCLED_MOMENTUM[case]
    w = brainstate.ParamState(jnp.asarray(CYCLED_START['w'], jnp.float32))
    b = brainstate.ParamState(jnp.asarray(CYCLED_START['b'], jnp.float32))
    if form == 'lr=scheduler':  # the scheduler attaches first; group 'b' joins with momentum=0
        scheduler = build(spec)
        opt = stateopt.SGD(lr=scheduler, momentum=0.0, **sgd_kwargs).register_trainable_weights({'w': w})
        opt.add_param_group({'b': b}, lr=GROUP_LR)
    else:  # the groups exist, without buffers, when the scheduler attaches
        opt = stateopt.SGD(lr=BASE_LR, momentum=0.0, **sgd_kwargs).register_trainable_weights({'w': w})
        opt.add_param_group({'b': b}, lr=GROUP_LR)
        scheduler = getattr(stateopt, spec.cls)(opt, **spec.kwargs)
    gradient = jax.grad(lambda p: cycled_loss(p['w'], p['b']))
    lrs, moms, params = [], [], [np.concatenate([w.value, b.value])]
    for _ in range(CYCLED_STEPS):
        lrs.append(opt.get_last_lr())
        moms.append([float(group['momentum']) for group in opt.param_groups])
        opt.update(gradient({'w': w.value, 'b': b.value}))
        scheduler.step()
        params.append(np.concatenate([w.value, b.value]))
    with np.load(CYCLED_GOLDEN) as golden:
        assert_lrs(lrs, golden[f'{case}/lr'], 'lr')
        assert_close_f32(np.asarray(moms), golden[f'{case}/momentum'], steps=LR_STEPS, err_msg='momentum')
        # both step in float32 (torch with float64 lrs and momenta), CYCLED_STEPS updates apart
        assert_close_f32(np.asarray(params), golden[f'{case}/params'], steps=CYCLED_STEPS, err_msg='params')


@pytest.mark.parametrize('lr, buffered', [
    (0.1, False),
    (stateopt.StepLR(base_lr=0.1, step_size=2), False),
    (stateopt.OneCycleLR(max_lr=0.1, total_steps=10, cycle_momentum=False), False),
    (stateopt.OneCycleLR(max_lr=0.1, total_steps=10), True),
], ids=['float', 'StepLR', 'OneCycleLR-no-cycling', 'OneCycleLR'])
def test_sgd_without_momentum_has_a_buffer_only_when_a_scheduler_cycles_it(lr, buffered):
    w = brainstate.ParamState(jnp.asarray([1.0, -2.0], jnp.float32))
    opt = stateopt.SGD(lr=lr).register_trainable_weights({'w': w})
    lr_0 = np.float32(opt.get_last_lr()[0])
    opt.update({'w': jnp.asarray([0.5, 0.25], jnp.float32)})
    state = opt.state_dict()
    assert ('momentum_buffer' in state['state'].get('w', {})) is buffered
    assert int(state['group_state'][0]['count']) == int(buffered)  # the steps that used a buffer
    # the first step is plain SGD either way (torch's buffer starts as the gradient)
    assert_close_f32(w.value, np.float32([1.0, -2.0]) - lr_0 * np.float32([0.5, 0.25]))


def test_sgd_momentum_buffer_starts_at_the_first_step_with_momentum():
    """torch keeps no buffer while momentum is 0; the first step with momentum sets it to the gradient."""
    w = brainstate.ParamState(jnp.zeros(1))
    opt = stateopt.SGD(lr=0.1, momentum=0.9, dampening=0.5).register_trainable_weights({'w': w})
    opt.param_groups[0]['momentum'] = 0.0
    opt.update({'w': jnp.ones(1)})              # plain SGD: w = -0.1
    opt.param_groups[0]['momentum'] = 0.9
    opt.update({'w': jnp.full(1, 2.0)})         # buffer = g = 2: w = -0.1 - 0.2
    opt.update({'w': jnp.ones(1)})              # buffer = 0.9 * 2 + 0.5 * 1 = 2.3: w = -0.3 - 0.23
    assert_close_f32(w.value, np.float32([-0.53]), steps=3)
