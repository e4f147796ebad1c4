"""Generic optimizer tests, run over the whole catalogue table."""

import inspect
import re

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from catalogue import CASES, GROUP_CASES, INVALID, grad_sequence
from conftest import MLP, SHAPES, assert_close_f32, assert_same, make_params, snapshot, values

import stateopt

ids = [case.id for case in CASES]
STEPS = 12


def run_eager(opt, states, grads):
    for g in grads:
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
    return values(states)


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_trajectory_matches_reference(case):
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, STEPS)
    opt = case.make().register_trainable_weights(states)
    got = []
    for g in grads:
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
        got.append(values(states))
    for key in SHAPES:
        want = reference.trajectory(case.rule, start[key], [g[key] for g in grads], **case.ref)
        for step, (w, h) in enumerate(zip(want, got)):
            assert_close_f32(h[key], w, steps=step + 1, err_msg=f'{case.id} {key} step {step + 1}')
    assert int(opt.step_count.value) == STEPS


@pytest.mark.parametrize('case', [c for c in CASES if c.group], ids=[c.id for c in CASES if c.group])
def test_group_overrides_follow_reference(case):
    """A second group runs the same algorithm with its own hyper-parameters."""
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, STEPS, seed=1)
    opt = case.make().register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, **case.group)
    run_eager(opt, states, grads)
    final = values(states)
    want_w = reference.trajectory(case.rule, start['w'], [g['w'] for g in grads], **case.ref)[-1]
    overridden = case.ref_with(**{k: v for k, v in case.group.items()})
    want_b = reference.trajectory(case.rule, start['b'], [g['b'] for g in grads], **overridden)[-1]
    assert_close_f32(final['w'], want_w, steps=STEPS)
    assert_close_f32(final['b'], want_b, steps=STEPS)


def _decays(case) -> bool:
    """Whether the row's optimizer takes a decay mask and its reference rule takes weight_decay
    (catalogue.SHOWN_ELSEWHERE counts this test for those classes)."""
    return ('weight_decay_mask' in case.cls._hyperparams
            and 'weight_decay' in inspect.signature(case.rule).parameters)


MASK_CASES = [case for case in CASES if _decays(case)]


@pytest.mark.parametrize('mask', ['decay_matrices_only', 'dict'])
@pytest.mark.parametrize('case', MASK_CASES, ids=[case.id for case in MASK_CASES])
def test_a_decay_mask_leaves_the_masked_arrays_undecayed_and_still_updated(case, mask):
    # the masked array follows the rule with weight_decay=0, the other the rule with the decay
    decay = case.kwargs.get('weight_decay') or 0.1
    masks = {'decay_matrices_only': stateopt.decay_matrices_only,   # w is (3, 4), b is (5,)
             'dict': {'w': True, 'b': False}}
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, STEPS, seed=2)
    opt = case.make(weight_decay=decay, weight_decay_mask=masks[mask]).register_trainable_weights(states)
    final = run_eager(opt, states, grads)
    want_w = reference.trajectory(case.rule, start['w'], [g['w'] for g in grads],
                                  **case.ref_with(weight_decay=decay))[-1]
    want_b = reference.trajectory(case.rule, start['b'], [g['b'] for g in grads],
                                  **case.ref_with(weight_decay=0.0))[-1]
    assert_close_f32(final['w'], want_w, steps=STEPS)
    assert_close_f32(final['b'], want_b, steps=STEPS)
    assert not np.array_equal(final['b'], start['b'])       # masked from the decay, not from the update


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_tiny_lr_group_stays_bit_identical(case):
    states = make_params()
    before = values(states)
    opt = case.make().register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, **case.frozen)
    run_eager(opt, states, grad_sequence(SHAPES, 5))
    after = values(states)
    np.testing.assert_array_equal(after['b'], before['b'])   # a step below half an ulp rounds away
    assert np.abs(after['w'] - before['w']).max() > 1e-4


@pytest.mark.parametrize('base', [stateopt.Adam, stateopt.SGD, stateopt.AdamW])
def test_added_group_runs_the_optimizers_own_algorithm(base):
    """An SGD group is SGD (and an Adam group Adam), whatever the hyper-parameters."""
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, 6)
    opt = base(lr=0.01).register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, lr=0.05)
    run_eager(opt, states, grads)
    if base is stateopt.SGD:
        rule, hp = reference.sgd, dict(lr=0.05)
    else:
        rule, hp = reference.adam, dict(lr=0.05, weight_decay=0.01 if base is stateopt.AdamW else 0.0,
                                        decoupled=base is stateopt.AdamW)
    want = reference.trajectory(rule, start['b'], [g['b'] for g in grads], **hp)[-1]
    assert_close_f32(values(states)['b'], want, steps=6)


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_eager_jit_and_for_loop_agree(case):
    grads = grad_sequence(SHAPES, 6, seed=3)
    stacked = {k: jnp.stack([g[k] for g in grads]) for k in SHAPES}
    results = []
    for mode in ('eager', 'jit', 'for_loop'):
        states = make_params()
        opt = case.make().register_trainable_weights(states)
        opt.add_param_group({'extra': brainstate.ParamState(jnp.ones(3))}, lr=0.02)
        extra = {'extra': jnp.full((3,), 0.5)}
        def update(g, opt=opt, extra=extra):
            opt.update({**g, **extra})

        if mode == 'eager':
            for g in grads:
                update({k: jnp.asarray(v) for k, v in g.items()})
        elif mode == 'jit':
            step = brainstate.transform.jit(update)
            for g in grads:
                step({k: jnp.asarray(v) for k, v in g.items()})
        else:
            brainstate.transform.jit(lambda gs: brainstate.transform.for_loop(update, gs))(stacked)
        results.append((values(states), jax.tree.map(np.asarray, opt.opt_state.value),
                        int(opt.step_count.value)))
    for other in results[1:]:
        assert other[2] == results[0][2] == 6
        assert_close_f32(other[:2], results[0][:2], steps=6)


def test_scan_with_model_and_grad(mlp):
    """A full train step (grad + update) under brainstate's scan inside jit matches eager."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 4)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(1).standard_normal((16, 3)), jnp.float32)
    init = jax.tree.map(jnp.copy, {k: s.value for k, s in mlp.states(brainstate.ParamState).items()})

    def train(model, mode):
        params = model.states(brainstate.ParamState)
        opt = stateopt.AdamW(lr=1e-2, grad_clip_norm=0.5).register_trainable_weights(params)
        opt.add_param_group(model.head.states(brainstate.ParamState), lr=3e-3)

        def step(_carry, _x):
            grads, loss = brainstate.transform.grad(
                lambda: jnp.mean((model(x) - y) ** 2), grad_states=params, return_value=True)()
            opt.update(grads)
            return None, loss

        if mode == 'eager':
            losses = [step(None, None)[1] for _ in range(5)]
        else:
            losses = brainstate.transform.jit(
                lambda: brainstate.transform.scan(step, None, jnp.arange(5))[1])()
        return np.asarray(losses), values(params)

    eager = train(mlp, 'eager')
    for key, state in mlp.states(brainstate.ParamState).items():
        state.value = init[key]
    scanned = train(mlp, 'scan')
    assert_close_f32(scanned[0], eager[0], steps=5)
    assert eager[0][-1] < eager[0][0]
    assert_close_f32(scanned[1], eager[1], steps=5)


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_state_dict_round_trip_continues_bit_identically(case):
    grads = grad_sequence(SHAPES, 8, seed=4)
    states = make_params()
    opt = case.make().register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, lr=0.007)
    run_eager(opt, states, grads[:4])
    saved_params = values(states)
    saved = jax.tree.map(np.asarray, opt.state_dict())
    run_eager(opt, states, grads[4:])
    uninterrupted = values(states)

    fresh = make_params(seed=9)
    for key, value in saved_params.items():
        fresh[key].value = jnp.asarray(value)
    opt2 = case.make().register_trainable_weights({'w': fresh['w']})
    opt2.add_param_group({'b': fresh['b']}, lr=0.5)
    opt2.load_state_dict(saved)
    assert int(opt2.step_count.value) == 4
    assert opt2.param_groups[1]['lr'] == pytest.approx(0.007)
    run_eager(opt2, fresh, grads[4:])
    assert_same(values(fresh), uninterrupted)


def test_optax_schedule_as_lr_gives_the_scheduled_steps():
    schedule = optax.linear_schedule(0.1, 0.0, transition_steps=4)
    w = brainstate.ParamState(jnp.zeros(2))
    opt = stateopt.SGD(lr=schedule).register_trainable_weights({'w': w})
    positions = []
    for _ in range(6):
        opt.update({'w': -jnp.ones(2)})
        positions.append(float(w.value[0]))
    lrs = [0.1, 0.075, 0.05, 0.025, 0.0, 0.0]
    assert_close_f32(np.asarray(positions), np.cumsum(lrs), steps=6)
    assert opt.current_lr == pytest.approx(0.0)
    assert opt.base_lr == pytest.approx(0.1)


def test_schedule_inside_jit_matches_eager():
    schedule = optax.cosine_decay_schedule(0.2, decay_steps=5)
    out = []
    for jit in (False, True):
        w = brainstate.ParamState(jnp.zeros(2))
        opt = stateopt.SGD(lr=schedule).register_trainable_weights({'w': w})
        step = brainstate.transform.jit(opt.update) if jit else opt.update
        for _ in range(7):
            step({'w': -jnp.ones(2)})
        out.append(np.asarray(w.value))
    assert_close_f32(out[1], out[0], steps=7)
    assert_close_f32(out[0], sum(float(schedule(i)) for i in range(7)), steps=7)


@pytest.mark.parametrize('cls, kwargs, rule, hyperparams', [
    (stateopt.Fromage, dict(momentum=0.5), reference.fromage, dict(momentum=0.5)),
    (stateopt.Lookahead, dict(base_optimizer=optax.scale_by_adam(), sync_period=2), reference.lookahead,
     dict(base='adam', sync_period=2)),
    (stateopt.Lars, dict(trust_coefficient=0.1), reference.lars, dict(trust_coefficient=0.1)),
    (stateopt.ScheduleFreeSGD, dict(), reference.schedule_free, dict(momentum=0.9)),
    (stateopt.Prodigy, dict(d0=1e-2), reference.prodigy, dict(d0=1e-2)),
], ids=['Fromage', 'Lookahead', 'Lars', 'ScheduleFreeSGD', 'Prodigy'])
def test_an_lr_schedule_drives_optimizers_that_apply_lr_themselves(cls, kwargs, rule, hyperparams):
    schedule = optax.exponential_decay(0.2, transition_steps=1, decay_rate=0.7)
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, 8)
    opt = cls(lr=schedule, **kwargs).register_trainable_weights({'b': states['b']})
    for g in grads:
        opt.update({'b': jnp.asarray(g['b'])})
    state, p = {}, np.asarray(start['b'], np.float64)
    for step, g in enumerate(grads):
        p, state = rule(p, np.asarray(g['b'], np.float64), state, lr=float(schedule(step)),
                        **hyperparams)
    assert_close_f32(values(states)['b'], p, steps=8)


def test_changing_dynamic_hyperparameters_does_not_recompile():
    states = make_params()
    opt = stateopt.AdamW(lr=0.01).register_trainable_weights(states)
    grads = {k: jnp.ones(s) for k, s in SHAPES.items()}
    opt.update(grads)
    compiled = opt._get_plan().compiled
    for value in (0.02, 0.005, 0):
        opt.param_groups[0]['lr'] = value
        opt.param_groups[0]['weight_decay'] = value
        opt.param_groups[0]['betas'] = (0.8, 0.9)
        opt.current_lr = value
        opt.update(grads)
    assert opt._get_plan().compiled is compiled
    assert compiled._cache_size() == 1

    calls = []
    step = brainstate.transform.jit(lambda g: (calls.append(1), opt.update(g)))
    for value in (0.1, 0.2, 0.3):
        step(grads)
        opt.param_groups[0]['lr'] = value
    assert len(calls) == 1  # traced once
    assert opt.param_groups[0]['lr'] == pytest.approx(0.3)


def test_assigned_lr_and_weight_decay_take_effect_inside_and_outside_jit():
    for jit in (False, True):
        w = brainstate.ParamState(jnp.ones(1))
        opt = stateopt.SGD(lr=0.1).register_trainable_weights({'w': w})
        step = brainstate.transform.jit(opt.update) if jit else opt.update
        step({'w': jnp.ones(1)})                      # 1 - 0.1
        opt.param_groups[0]['lr'] = 0.5
        step({'w': jnp.ones(1)})                      # 0.9 - 0.5
        opt.param_groups[0]['weight_decay'] = 1.0
        step({'w': jnp.ones(1)})                      # 0.4 - 0.5 * (1 + 0.4)
        assert_close_f32(w.value, np.array([0.4 - 0.5 * 1.4]), steps=3)


def test_lr_assignment_inside_jit():
    w = brainstate.ParamState(jnp.ones(1))
    opt = stateopt.SGD(lr=0.1).register_trainable_weights({'w': w})

    @brainstate.transform.jit
    def step(g, lr):
        opt.param_groups[0]['lr'] = lr
        opt.update(g)

    step({'w': jnp.ones(1)}, 0.25)
    step({'w': jnp.ones(1)}, 0.5)
    assert_close_f32(w.value, np.array([0.25]), steps=2)
    assert opt.get_last_lr() == [0.5]


def test_global_norm_clipping_spans_all_groups():
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, 3, seed=5)
    opt = stateopt.SGD(lr=0.1, grad_clip_norm=0.5).register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, lr=0.2)
    run_eager(opt, states, grads)
    p = dict(start)
    for g in grads:
        clipped = reference.clip_by_global_norm([g['w'].astype(np.float64), g['b'].astype(np.float64)], 0.5)
        p = {'w': p['w'] - 0.1 * clipped[0], 'b': p['b'] - 0.2 * clipped[1]}
    assert_close_f32(values(states), p, steps=3)


def test_value_clipping():
    w = brainstate.ParamState(jnp.zeros(3))
    opt = stateopt.SGD(lr=1.0, grad_clip_value=0.5).register_trainable_weights({'w': w})
    opt.update({'w': jnp.array([2.0, -0.25, -3.0])})
    assert_close_f32(w.value, np.array([-0.5, 0.25, 0.5]))


# -- registration -------------------------------------------------------------------------

def test_register_model_keeps_tuple_keys_and_matches_brainstate_grads(mlp):
    params = mlp.states(brainstate.ParamState)
    opt = stateopt.Adam(lr=1e-3).register_trainable_weights(params)
    assert set(opt.param_groups[0]['params']) == set(params)
    grads = brainstate.transform.grad(lambda: jnp.sum(mlp(jnp.ones((2, 4))) ** 2), grad_states=params)()
    opt.update(grads)
    assert int(opt.step_count.value) == 1


def test_colliding_keys_raise_and_register_nothing():
    a, b = MLP(), MLP()
    opt = stateopt.SGD(lr=0.1).register_trainable_weights(a.l1.states(brainstate.ParamState))
    with pytest.raises(KeyError, match="'weight'"):
        opt.register_trainable_weights(b.l1.states(brainstate.ParamState))
    assert len(opt.param_groups[0]['params']) == 1
    with pytest.raises(KeyError, match="both name the parameter 'weight'"):   # str beside tuple keys
        opt.register_trainable_weights({'weight': b.l1.states(brainstate.ParamState)[('weight',)]})
    assert len(opt.param_groups[0]['params']) == 1
    # under distinct keys both train
    opt.register_trainable_weights({('b',) + k: v for k, v in b.l1.states(brainstate.ParamState).items()})
    assert len(stateopt.UniqueStateManager(opt.param_groups[0]['params']).states) == 2


def test_reregistering_keeps_moments_and_step_counts():
    states = make_params()
    grads = grad_sequence(SHAPES, 4, seed=6)
    opt = stateopt.Adam(lr=0.01).register_trainable_weights({'w': states['w']})
    run_eager(opt, states, [{'w': g['w']} for g in grads[:2]])
    moments = jax.tree.map(np.asarray, opt.state_dict()['state']['w'])
    count = np.asarray(opt.state_dict()['group_state'][0]['count'])
    opt.register_trainable_weights({'w': states['w'], 'b': states['b']})   # w again, and b
    opt.register_trainable_weights({'w': states['w']})                     # no-op
    sd = opt.state_dict()
    assert_same(sd['state']['w'], moments)
    assert int(sd['group_state'][0]['count']) == int(count) == 2
    np.testing.assert_array_equal(sd['state']['b']['exp_avg'], np.zeros(5))


def test_moved_states_keep_their_moments():
    states = make_params()
    opt = stateopt.Adam(lr=0.01).register_trainable_weights(states)
    run_eager(opt, states, grad_sequence(SHAPES, 3))
    before = jax.tree.map(np.asarray, opt.state_dict())
    group = opt.add_param_group({'bias': states['b']}, lr=0.001)   # relative key, found by identity
    after = opt.state_dict()
    assert group.names == ['b'] and opt.param_groups[0].names == ['w']
    assert_same(after['state'], before['state'])
    assert int(after['group_state'][1]['count']) == 3


def test_state_in_two_explicit_groups_raises():
    states = make_params()
    opt = stateopt.SGD(lr=0.1).register_trainable_weights(states)
    opt.add_param_group({'w': states['w']}, lr=0.01)
    with pytest.raises(ValueError, match="already in param group 1"):
        opt.add_param_group({'w': states['w']}, lr=0.02)
    assert len(opt.param_groups) == 2


def test_add_param_group_registers_new_states_and_checks_hyperparameters():
    states = make_params()
    opt = stateopt.SGD(lr=0.1).register_trainable_weights({'w': states['w']})
    with pytest.raises(TypeError, match="'learning_rate'"):
        opt.add_param_group({'b': states['b']}, learning_rate=0.1)
    with pytest.raises(ValueError, match='momentum'):
        opt.add_param_group({'b': states['b']}, momentum=-1)
    with pytest.raises(ValueError, match='no States'):
        opt.add_param_group({})
    with pytest.raises(KeyError, match="'w'"):   # a different State under a registered key
        opt.add_param_group({'w': brainstate.ParamState(jnp.ones(2))})
    assert len(opt.param_groups) == 1
    opt.add_param_group({'b': states['b']}, momentum=0.9, lr=0.3)
    assert opt.param_groups[1]['momentum'] == pytest.approx(0.9)
    opt.update({k: jnp.ones(s) for k, s in SHAPES.items()})
    assert_close_f32(states['b'].value, make_params()['b'].value - 0.3)


def test_non_state_and_integer_leaves_are_refused():
    opt = stateopt.SGD(lr=0.1)
    with pytest.raises(TypeError, match="'w'"):
        opt.register_trainable_weights({'w': jnp.ones(3)})
    with pytest.raises(TypeError, match="'n'.*int32"):
        opt.register_trainable_weights({'n': brainstate.ParamState(jnp.ones(3, jnp.int32))})
    with pytest.raises(RuntimeError, match='register_trainable_weights'):
        opt.update({})


# -- bad input changes nothing -----------------------------------------------------------

BAD_GRADS = {
    'missing key': ({'w': jnp.ones((3, 4))}, KeyError, "'b'"),
    'unknown key': ({'w': jnp.ones((3, 4)), 'b': jnp.ones(5), 'c': jnp.ones(1)}, KeyError, "'c'"),
    'wrong shape': ({'w': jnp.ones((4, 3)), 'b': jnp.ones(5)}, ValueError, "'w'.*shape"),
    'wrong dtype': ({'w': jnp.ones((3, 4)), 'b': jnp.ones(5, jnp.bfloat16)}, ValueError, "'b'.*dtype"),
    'nested value': ({'w': {'x': jnp.ones((3, 4))}, 'b': jnp.ones(5)}, ValueError, "'w'"),
    'not a dict': ([jnp.ones((3, 4))], KeyError, "'w'"),
    'scalar': (1.0, ValueError, 'grads'),
}


@pytest.mark.parametrize('jit', [False, True], ids=['eager', 'jit'])
@pytest.mark.parametrize('case', [c for c in CASES if c.id in ('sgd-momentum-dampening-decay', 'adamw')],
                         ids=['sgd', 'adamw'])
@pytest.mark.parametrize('bad', list(BAD_GRADS), ids=list(BAD_GRADS))
def test_bad_grads_raise_and_change_nothing(case, bad, jit):
    states = make_params()
    opt = case.make().register_trainable_weights(states)
    run_eager(opt, states, grad_sequence(SHAPES, 2))
    before = snapshot(opt, states)
    grads, error, match = BAD_GRADS[bad]
    step = brainstate.transform.jit(opt.update) if jit else opt.update
    with pytest.raises(error, match=match):
        step(grads)
    assert_same(snapshot(opt, states), before)
    run_eager(opt, states, grad_sequence(SHAPES, 1))   # still usable
    assert int(opt.step_count.value) == 3


@pytest.mark.parametrize('cls, kwargs, name', INVALID,
                         ids=[f'{c.__name__}-{n}-{i}' for i, (c, _, n) in enumerate(INVALID)])
def test_invalid_hyperparameters_raise_naming_the_parameter(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)


def test_invalid_assignments_raise_and_change_nothing():
    states = make_params()
    opt = stateopt.SGD(lr=0.1, momentum=0.9, nesterov=True).register_trainable_weights(states)
    group = opt.param_groups[0]
    before = snapshot(opt, states)
    with pytest.raises(ValueError, match='lr'):
        group['lr'] = -1.0
    with pytest.raises(ValueError, match='lr'):
        group['lr'] = float('nan')
    with pytest.raises(ValueError, match='nesterov'):
        group['momentum'] = 0.0
    with pytest.raises(ValueError, match="'nesterov' is fixed"):
        group['nesterov'] = False
    with pytest.raises(KeyError, match="'learning_rate'"):
        group['learning_rate'] = 0.1
    with pytest.raises(ValueError, match="'grad_clip_norm' is fixed"):
        group['grad_clip_norm'] = 1.0
    assert_same(snapshot(opt, states), before)
    plain = stateopt.SGD(lr=0.1).register_trainable_weights(make_params())
    with pytest.raises(ValueError, match='momentum buffer'):
        plain.param_groups[0]['momentum'] = 0.9


def test_raw_jax_jit_is_refused_clearly():
    states = make_params()
    opt = stateopt.SGD(lr=0.1).register_trainable_weights(states)
    before = snapshot(opt, states)
    with pytest.raises(brainstate.TraceContextError, match='brainstate.transform.jit'):
        jax.jit(opt.update)({k: jnp.ones(s) for k, s in SHAPES.items()})
    assert_same(snapshot(opt, states), before)


# -- donation is invisible -----------------------------------------------------------------

def test_arrays_the_caller_holds_stay_valid(mlp):
    params = mlp.states(brainstate.ParamState)
    opt = stateopt.AdamW(lr=0.1).register_trainable_weights(params)
    grads = brainstate.transform.grad(lambda: jnp.sum(mlp(jnp.ones((2, 4))) ** 2), grad_states=params)()
    opt.update(grads)
    held_value = params[('l1', 'weight')].value               # a whole (dict) value
    held_leaf = params[('head', 'weight')].value['bias']       # one leaf of it
    held_state = opt.state_dict()                              # moments
    copies = jax.tree.map(np.array, (held_value, held_leaf, held_state))
    for _ in range(3):
        opt.update(grads)
    assert_same((held_value, held_leaf, held_state), copies)    # still readable, unchanged
    assert not np.array_equal(np.asarray(params[('l1', 'weight')].value['weight']), copies[0]['weight'])



@pytest.mark.parametrize('jit', ['eager', 'donating_jit'])
def test_bare_array_values_the_caller_holds_stay_valid(jit):
    # every value a bare array: the guard's one-pass path decides
    states = make_params()
    start = values(states)
    grads = {k: jnp.full(v.shape, 0.5, jnp.float32) for k, v in start.items()}
    opt = stateopt.SGD(lr=0.1).register_trainable_weights(states)
    update = opt.update if jit == 'eager' else stateopt.donating_jit(opt.update)
    update(grads)
    held = states['w'].value
    for _ in range(3):
        update(grads)
    assert_close_f32(held, start['w'] - 0.1 * 0.5)
    for key, value in values(states).items():       # plain SGD: p - 4 * lr * g
        assert_close_f32(value, start[key] - 4 * 0.1 * 0.5, steps=4, err_msg=key)

# -- closures, learning rates, tx -----------------------------------------------------------

def test_closure_returns_the_loss(mlp):
    params = mlp.states(brainstate.ParamState)
    opt = stateopt.Adam(lr=0.05).register_trainable_weights(params)
    x = jnp.ones((4, 4))

    def loss_fn():
        return jnp.mean(mlp(x) ** 2)

    closure = brainstate.transform.grad(loss_fn, grad_states=params, return_value=True)
    losses = [float(opt.step(closure=closure)) for _ in range(10)]
    assert losses[-1] < losses[0]
    grads, before = closure()
    loss = opt.step(grads, closure=loss_fn)      # evaluated before the update, as torch does
    assert_close_f32(float(loss), float(before))   # the same forward pass, in the compiled step
    assert int(opt.step_count.value) == 11
    with pytest.raises(ValueError, match='closure'):
        opt.step(closure=loss_fn)


def test_learning_rate_accessors():
    states = make_params()
    opt = stateopt.Adam(lr=0.01).register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, lr=0.1)
    assert opt.base_lr == 0.01 and opt.param_groups[0]['lr'] == pytest.approx(0.01) and opt.schedulers == []
    # braintools: a number lr reads as a constant scheduler over the groups' lrs
    assert isinstance(opt.lr, stateopt.ConstantLR) and opt.lr is opt.lr_scheduler
    opt.lr_scheduler.step()
    assert opt.get_last_lr() == [0.01, 0.1] and opt.lr_scheduler.get_last_lr() == [0.01, 0.1]
    assert 'lr_scheduler' not in opt.state_dict() or opt.state_dict()['lr_scheduler'] is None
    opt.current_lr = 0.02
    assert opt.current_lr == pytest.approx(0.02)
    assert opt.get_last_lr() == [0.02, 0.1]
    assert 'Adam(lr=0.02' in repr(opt) and '2 params in 2 groups' in repr(opt)   # group 0's lr now
    assert 'ParamGroup(1 params, lr=0.1' in repr(opt.param_groups[1])


def test_schedule_replaced_by_a_number_and_back():
    w = brainstate.ParamState(jnp.zeros(1))
    opt = stateopt.SGD(lr=lambda count: 0.1 * (count + 1)).register_trainable_weights({'w': w})
    opt.update({'w': -jnp.ones(1)})                    # lr 0.1
    opt.param_groups[0]['lr'] = 0.5                    # number from now on
    opt.update({'w': -jnp.ones(1)})
    opt.param_groups[0]['lr'] = lambda count: 0.01 * count
    opt.update({'w': -jnp.ones(1)})                    # count 2: 0.02
    assert_close_f32(w.value, np.array([0.1 + 0.5 + 0.02]), steps=3)


def test_tx_is_a_direction_that_lr_scales():
    w = brainstate.ParamState(jnp.zeros(2))
    opt = stateopt.OptaxOptimizer(tx=optax.scale_by_sign(), lr=0.25).register_trainable_weights({'w': w})
    opt.update({'w': jnp.array([3.0, -0.1])})
    assert_close_f32(w.value, np.array([-0.25, 0.25]))
    with pytest.raises(ValueError, match='complete optimizer'):
        stateopt.OptaxOptimizer(tx=optax.adam(1e-3))
    with pytest.raises(TypeError, match='GradientTransformation'):
        stateopt.OptaxOptimizer(tx='adam')
    default = stateopt.OptaxOptimizer(lr=0.1).register_trainable_weights({'w': w})
    default.update({'w': jnp.array([3.0, -0.1])})        # Adam direction: first step is lr * sign
    assert_close_f32(w.value, np.array([-0.35, 0.35]), steps=2)


def test_bfloat16_parameters_keep_their_dtype():
    w = brainstate.ParamState(jnp.ones(4, jnp.bfloat16))
    opt = stateopt.AdamW(lr=0.01).register_trainable_weights({'w': w})
    for _ in range(2):
        opt.update({'w': jnp.full(4, 0.5, jnp.bfloat16)})
    assert w.value.dtype == jnp.bfloat16
    assert all(leaf.dtype in (jnp.bfloat16, jnp.int32) for leaf in jax.tree.leaves(opt.opt_state.value))
    assert opt._get_plan().compiled._cache_size() == 1


def test_nested_values_the_caller_holds_stay_valid():
    state = brainstate.ParamState({'enc': {'w': jnp.ones(3), 'b': jnp.zeros(2)}, 'out': jnp.ones(2)})
    opt = stateopt.Adam(lr=0.1).register_trainable_weights({'p': state})
    grads = {'p': {'enc': {'w': jnp.ones(3), 'b': jnp.ones(2)}, 'out': jnp.ones(2)}}
    opt.update(grads)
    inner = state.value['enc']                 # a nested container, not its leaves
    moments = opt.opt_state.value[0].exp_avg   # a container inside the optimizer state
    copies = jax.tree.map(np.array, (inner, moments))
    opt.update(grads)
    opt.update(grads)
    assert_same((inner, moments), copies)
    assert not np.array_equal(np.asarray(state.value['enc']['w']), copies[0]['w'])


def test_state_hooks_still_run_on_eager_steps():
    w = brainstate.ParamState(jnp.array([0.05, 1.0]))

    def project(ctx):   # keep the parameter non-negative
        ctx.transformed_value = jnp.maximum(ctx.value, 0.0)

    w.register_hook('write_before', project)
    opt = stateopt.SGD(lr=0.1).register_trainable_weights({'w': w})
    opt.update({'w': jnp.array([1.0, 1.0])})
    assert_close_f32(w.value, np.array([0.0, 0.9]))


# -- the loop layer: gradient accumulation and non-finite skipping (stateopt/_loop.py) -------------

ACCUMULATE = 3


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_accumulated_micro_steps_step_once_on_the_mean_gradient(case):
    """k update calls = one step of the reference rule on their mean; the calls between change nothing."""
    states = make_params()
    start = values(states)
    micro = grad_sequence(SHAPES, STEPS, seed=3)
    means = [{key: np.mean([g[key] for g in micro[i:i + ACCUMULATE]], axis=0, dtype=np.float64)
              for key in SHAPES} for i in range(0, STEPS, ACCUMULATE)]
    opt = case.make(gradient_accumulation_steps=ACCUMULATE).register_trainable_weights(states)
    got = []
    for call, g in enumerate(micro):
        before = values(states)
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
        if (call + 1) % ACCUMULATE:
            assert_same(values(states), before)     # waiting: not one bit moves
            assert int(opt.micro_step.value) == (call + 1) % ACCUMULATE
        else:
            got.append(values(states))
    assert int(opt.step_count.value) == STEPS // ACCUMULATE
    for key in SHAPES:
        want = reference.trajectory(case.rule, start[key], [m[key] for m in means], **case.ref)
        for step, (w, h) in enumerate(zip(want, got)):
            # the mean is summed in float32 here (rounding of order STEPS ulps of the gradient)
            assert_close_f32(h[key], w, steps=step + 2, err_msg=f'{case.id} {key} step {step + 1}')


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_a_nonfinite_step_is_skipped_and_counted(case):
    """A NaN or an inf gradient changes nothing but skipped_steps; the run is the reference without it."""
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, STEPS, seed=4)
    bad = {3: ('w', np.nan), 7: ('b', np.inf)}
    opt = case.make(skip_nonfinite=True).register_trainable_weights(states)
    for step, g in enumerate(grads):
        g = {k: np.array(v) for k, v in g.items()}
        if step in bad:
            key, value = bad[step]
            g[key].flat[1] = value
            before, moments = values(states), jax.tree.leaves(opt.opt_state.value)
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
        if step in bad:
            assert_same(values(states), before)
            for now, then in zip(jax.tree.leaves(opt.opt_state.value), moments):
                np.testing.assert_array_equal(np.asarray(now), np.asarray(then))
    assert int(opt.skipped_steps.value) == len(bad)
    assert int(opt.step_count.value) == STEPS - len(bad)
    kept = [g for step, g in enumerate(grads) if step not in bad]
    for key in SHAPES:
        want = reference.trajectory(case.rule, start[key], [g[key] for g in kept], **case.ref)[-1]
        assert_close_f32(values(states)[key], want, steps=len(kept), err_msg=case.id)


# -- low precision: master weights and the dtype of the state (stateopt/_precision.py) -------------

BF16 = jnp.bfloat16


def _bf16(array):
    return np.asarray(jnp.asarray(array, BF16).astype(jnp.float32))


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_a_bf16_model_with_float32_masters_trains_as_its_float32_master_would(case):
    """The masters follow the reference rule run in float32 on the bf16 values and gradients; the
    parameters are the masters rounded to bf16."""
    states = make_params()
    for state in states.values():
        state.value = jnp.asarray(state.value, BF16)
    start = {k: _bf16(v) for k, v in values(states).items()}
    grads = [{k: _bf16(v) for k, v in g.items()} for g in grad_sequence(SHAPES, STEPS, seed=6)]
    opt = case.make(master_dtype=jnp.float32).register_trainable_weights(states)
    for g in grads:
        opt.update({k: jnp.asarray(v, BF16) for k, v in g.items()})
    masters = opt.state_dict()['master_params']
    for key in SHAPES:
        assert masters[key].dtype == jnp.float32 and states[key].value.dtype == BF16
        want = reference.trajectory(case.rule, start[key], [g[key] for g in grads], **case.ref)[-1]
        assert_close_f32(masters[key], want, steps=STEPS, err_msg=case.id)
        np.testing.assert_array_equal(np.asarray(states[key].value),
                                      np.asarray(jnp.asarray(masters[key]).astype(BF16)))


STATE_DTYPE_CASES = [case for case in CASES if 'state_dtype' in case.cls.hyperparameters.settings()]


def _stored_in_bf16(rule):
    """``rule`` whose per-parameter state (its arrays shaped like the parameter) is stored in bf16."""
    def stored(p, g, state, **hyperparams):
        p, state = rule(p, g, state, **hyperparams)
        return p, {k: _bf16(v).astype(np.float64) if isinstance(v, np.ndarray) and v.shape == p.shape else v
                   for k, v in state.items()}
    return stored


@pytest.mark.parametrize('case', STATE_DTYPE_CASES, ids=[case.id for case in STATE_DTYPE_CASES])
def test_state_dtype_stores_the_per_parameter_state_narrower(case):
    """Every per-parameter floating slot is bf16 and counts keep their dtype; the run follows the
    reference rule whose per-parameter state is rounded to bf16 after each step."""
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, STEPS, seed=7)
    opt = case.make(state_dtype=BF16).register_trainable_weights(states)
    run_eager(opt, states, grads)
    sd = opt.state_dict()
    for slots in sd['state'].values():
        for slot, value in slots.items():
            if jnp.issubdtype(value.dtype, jnp.floating):
                assert value.dtype == BF16, (case.id, slot)
    for slots in sd['group_state']:
        for slot, value in slots.items():
            assert value.dtype != BF16, (case.id, slot)
    for key in SHAPES:
        want = reference.trajectory(_stored_in_bf16(case.rule), start[key], [g[key] for g in grads],
                                    **case.ref)[-1]
        err = np.abs(values(states)[key] - want)
        moved = np.abs(want - start[key]).max()
        # the two round the state from float32 and from float64: where those differ by a bf16 ulp the
        # runs part by about 2**-8 of a step, and sign-based rules (Lion, Rprop) may take one step
        # the other way; the largest difference seen over the catalogue is 0.4% of the distance moved
        assert err.max() <= 2 ** -6 * moved + 1e-6, (case.id, key, err.max() / moved)



def _lowered_step(opt, grads) -> str:
    """The StableHLO of ``opt``'s eager step for ``grads``, as ``update`` would call it."""
    from stateopt._donation import RAW
    opt.update(grads)
    plan = opt._get_plan()
    args = (tuple(RAW(s) for s in plan.states), grads, jax.tree.leaves(RAW(opt.opt_state)),
            tuple(RAW(g._hyper) for g in opt._groups), RAW(opt.step_count),
            {k: RAW(s) for k, s in opt._step_states().items()}, {}, ())
    return plan.compiled.lower(*args).as_text()


def test_every_dot_product_of_every_step_runs_at_full_float32_precision():
    """A GPU multiplies float32 matrices in TF32 or bfloat16 passes by default (jax's default
    matmul precision); L-BFGS's curvature pairs and Muon's Newton-Schulz iteration lose their
    accuracy there. Under the lowest default, every dot of every step is still HIGHEST."""
    with_dots = set()
    for case in CASES + GROUP_CASES:
        opt = case.make().register_trainable_weights(make_params())
        with jax.default_matmul_precision('bfloat16'):
            text = _lowered_step(opt, {k: jnp.asarray(v) for k, v in grad_sequence(SHAPES, 1)[0].items()})
        precisions = re.findall(r'dot_general.*?precision = \[(\w+), (\w+)\]', text)
        assert all(p == ('HIGHEST', 'HIGHEST') for p in precisions), (case.id, precisions)
        if precisions:
            with_dots.add(case.cls.__name__)
    assert {'LBFGS', 'Muon'} <= with_dots, with_dots


def test_adding_a_param_group_works_on_that_group_alone(monkeypatch):
    """Registration cost is linear in the groups: the k-th add_param_group builds the new group's
    state and reads no other group's slots (with 40 groups already there)."""
    import stateopt._optimizer as core
    states = [brainstate.ParamState(jnp.full(3, float(i))) for i in range(42)]
    opt = stateopt.Adam(lr=0.1).register_trainable_weights({'p0': states[0]})
    for i in range(1, 41):
        opt.add_param_group({f'p{i}': states[i]}, lr=0.01 * i)
    calls = []
    real = core.slots_of
    monkeypatch.setattr(core, 'slots_of', lambda *args: calls.append(args[1]) or real(*args))
    opt.add_param_group({'p41': states[41]}, lr=0.5)
    assert [sorted(values) for values in calls] == [['p41']] * len(calls) and 1 <= len(calls) <= 2, calls
    opt.update({f'p{i}': jnp.ones(3) for i in range(42)})
    assert float(states[41].value[0]) == pytest.approx(41.0 - 0.5, abs=1e-5)   # Adam's first step: lr


def test_groups_of_one_structure_build_their_state_structure_once(monkeypatch):
    """Finding whose each slot is builds the algorithm's state abstractly once per structure: the
    groups after the first of a structure build none (1,000 groups register in about a second)."""
    states = [brainstate.ParamState(jnp.full(3, float(i))) for i in range(6)]
    opt = stateopt.AdamW(lr=0.1).register_trainable_weights({'p0': states[0]})
    opt.add_param_group({'p1': states[1]}, lr=0.01)
    builds = []
    real = jax.eval_shape
    monkeypatch.setattr(jax, 'eval_shape', lambda *args, **kwargs: builds.append(1) or real(*args, **kwargs))
    for i in range(2, 6):   # other lrs, the same structure
        opt.add_param_group({f'p{i}': states[i]}, lr=0.01 * i)
    assert builds == []
    opt.add_param_group({'p6': brainstate.ParamState(jnp.ones((2, 3)))}, lr=0.5)     # a new shape
    assert len(builds) == 1


def test_finding_a_group_compares_no_contents(monkeypatch):
    """A group's index and state are found by identity: comparing each earlier group's contents
    (a group is a Mapping, equal by contents as torch's group dicts are) made reading the states
    of 300 groups take 2.6 s, growing with the square of the number of groups."""
    states = {f'p{i}': brainstate.ParamState(jnp.full(2, float(i))) for i in range(5)}
    opt = stateopt.Adam(lr=0.1).register_trainable_weights({'p0': states['p0']})
    for i in range(1, 5):
        opt.add_param_group({f'p{i}': states[f'p{i}']}, lr=0.1 * i)
    opt.update({key: jnp.ones(2) for key in states})
    groups = opt.param_groups
    monkeypatch.setattr(type(groups[0]), '__eq__', lambda self, other: pytest.fail('compared contents'))
    assert [group.index for group in groups] == [0, 1, 2, 3, 4]
    assert [list(state.exp_avg) for state in opt.param_groups_opt_states] == [[f'p{i}'] for i in range(5)]


@pytest.mark.parametrize('cls, name, on, off, slot', [
    (stateopt.SGD, 'momentum', 0.9, 0.0, 'momentum_buffer'),
    (stateopt.RMSprop, 'momentum', 0.9, 0.0, 'momentum_buffer'),
])
def test_a_hyper_parameter_that_decides_the_state_structure_keeps_groups_apart(cls, name, on, off, slot):
    """Groups whose hyper-parameters give their state another structure (torch keeps a momentum
    buffer only for a nonzero momentum) do not share what was found for each other's slots."""
    opt = cls(lr=0.1, **{name: on}).register_trainable_weights({'p0': brainstate.ParamState(jnp.ones(3))})
    opt.add_param_group({'p1': brainstate.ParamState(jnp.ones(3))}, **{name: off})
    opt.add_param_group({'p2': brainstate.ParamState(jnp.ones(3))}, **{name: on / 2})
    opt.update({key: jnp.ones(3) for key in ('p0', 'p1', 'p2')})
    state = opt.state_dict()['state']
    assert {key: slot in state.get(key, {}) for key in ('p0', 'p1', 'p2')} == {'p0': True, 'p1': False,
                                                                              'p2': True}
