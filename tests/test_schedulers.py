"""Scheduler tests, run over the scheduler table (tests/scheduler_table.py).

Expected lrs are torch 2.13's (golden fixtures) or closed forms written in the table; the
optimizer's parameter deltas are checked against SGD's and Adam's rules written here.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scheduler_table import BASE_LR, GROUP_LR, ROWS, SCHEDULES, STEPS, Spec, build, expected

import stateopt

RTOL, ATOL = 1e-5, 1e-9  # float32 lrs (torch computes in float64)
GRADS = {'w': jnp.ones(1), 'b': jnp.ones(1)}
ROUND_TRIP = ['step', 'warm-restarts-mult', 'one-cycle', 'plateau', 'sequential-multiplicative',
              'sequential-plateau', 'chained-plateau']


def ids(rows):
    return [row.id for row in rows]


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
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL, atol=ATOL, err_msg=what)


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
        np.testing.assert_allclose(moms, moms_want, rtol=1e-6, atol=1e-7, err_msg=f'{mode} momentum')
        np.testing.assert_allclose(deltas, deltas_want, rtol=2e-5, atol=1e-9, err_msg=f'{mode} deltas')
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
    np.testing.assert_allclose(run_two_groups(scheduler, attach_after_groups), cosine, rtol=RTOL, atol=1e-8)
    one_cycle = stateopt.OneCycleLR(max_lr=[0.5, 0.2], total_steps=30, cycle_momentum=False)
    absolute = run_two_groups(one_cycle, attach_after_groups)  # each group's lr from its max_lr, as torch
    np.testing.assert_allclose(absolute[:, 1] / absolute[:, 0], 0.4, rtol=1e-5)


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
    with pytest.raises(ValueError, match='base_lr'):
        stateopt.SGD(lr=scheduler)


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
        np.testing.assert_allclose(lrs, 0.1 + 0.9 * (1 + np.cos(np.pi * t_cur / t_i)) / 2, rtol=1e-6)
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
    with pytest.raises(KeyError, match=r"\['schedulers'\]\[0\] has no 'last_epoch'"):
        scheduler2.check_state_dict({**scheduler.state_dict(), 'schedulers': [{}, {}]})


@pytest.mark.parametrize('anneal_strategy', ['cos', 'linear'])
def test_one_cycle_holds_its_final_lr_from_the_last_step_on(anneal_strategy):
    """torch extrapolates the last phase at step total_steps (below zero for 'linear'), then raises."""
    scheduler = stateopt.OneCycleLR(max_lr=1.0, total_steps=10, pct_start=0.25, three_phase=True,
                                    anneal_strategy=anneal_strategy, div_factor=10.0,
                                    final_div_factor=100.0)
    values = np.asarray(jax.vmap(scheduler)(jnp.arange(9, 14)))
    np.testing.assert_allclose(values, 1.0 / 10 / 100, rtol=1e-6)


def test_raw_jax_jit_is_refused():
    scheduler = stateopt.StepLR(base_lr=0.1, step_size=2)
    with pytest.raises(brainstate.TraceContextError, match='brainstate.transform.jit'):
        jax.jit(lambda: scheduler.step())()


@pytest.mark.parametrize('make_scheduler, name', [
    (lambda: stateopt.StepLR(base_lr=-0.1), 'base_lr'),
    (lambda: stateopt.StepLR(base_lr=[0.1, float('nan')]), r'base_lr\[1\]'),
    (lambda: stateopt.StepLR(step_size=0), 'step_size'),
    (lambda: stateopt.StepLR(gamma=-1.0), 'gamma'),
    (lambda: stateopt.StepLR(last_epoch=-1), 'last_epoch'),
    (lambda: stateopt.MultiStepLR(milestones=[3, 'a']), r'milestones\[1\]'),
    (lambda: stateopt.ConstantLR(factor=0.0), 'factor'),
    (lambda: stateopt.ConstantLR(total_iters=0), 'total_iters'),
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
    (lambda: stateopt.ChainedScheduler([stateopt.StepLR(base_lr=0.1), stateopt.ExponentialLR(base_lr=0.2)]),
     r'schedulers\[1\]'),
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
        stateopt.SGD(lr=cycling)  # torch would switch momentum on; a momentum-0 SGD keeps no buffer
    assert cycling.optimizer is None and cycling.get_last_lr() == pytest.approx([0.1 / 25])
    opt = stateopt.SGD(lr=cycling, momentum=0.9)
    assert float(opt.param_groups[0]['momentum']) == pytest.approx(0.95)
    with pytest.raises(ValueError, match='another optimizer'):
        cycling.attach_optimizer(stateopt.SGD(lr=0.1))
    with pytest.raises(ValueError, match='already has'):
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
