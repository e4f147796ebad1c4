"""Tests of the paper and newer optimizers that the generic table cannot express.

Param-group-coupled algorithms (L-BFGS, Prodigy) against group references; L-BFGS line
searches, closures and value_fn; schedule-free evaluation; Muon's matrix hyper-parameters and
fallback; Lookahead's synchronisation and schedules; Sophia with Hutchinson's estimate.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference_more as ref
import test_catalogue as generic_catalogue
import test_optimizer as generic
from catalogue import grad_sequence
from catalogue_more import GROUP_CASES, SQUARED
from conftest import SHAPES, assert_close_f32, assert_same, make_params, snapshot, values

import stateopt
from stateopt import functional as F

group_ids = [case.id for case in GROUP_CASES]
CURVATURE = jnp.array([1.0, 2.0, 4.0, 7.0, 10.0])


def flat(arrays: dict, keys=('w', 'b')) -> np.ndarray:
    return np.concatenate([np.asarray(arrays[k], np.float64).ravel() for k in keys])


def ref_trajectory(rule, p0, grads, **hyperparams):
    p, state, out = np.asarray(p0, np.float64), {}, []
    for g in grads:
        p, state = rule(p, np.asarray(g, np.float64), state, **hyperparams)
        out.append(p)
    return out


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


# -- param-group-coupled algorithms: L-BFGS and Prodigy ---------------------------------------
#
# Their state spans the group (L-BFGS's curvature pairs, Prodigy's step-size estimate), so the
# references run on the group as one flat vector. Gradients come from a fixed random sequence
# (Prodigy) or from a convex objective at the current params: a 1e-5 gradient makes a 1e-5
# L-BFGS step whose curvature pair float32 cannot resolve, and Prodigy's estimate only grows
# along consistent descent.

CURVATURES = {key: np.linspace(1.0, 4.0, int(np.prod(shape))).reshape(shape) for key, shape in SHAPES.items()}


def objective_gradient(arrays: dict) -> dict:
    """The gradient of sum(c/2 (p - 0.5)² + 0.1 sin(3p)), convex for c >= 1."""
    return {k: CURVATURES[k] * (np.asarray(a, np.float64) - 0.5) + 0.3 * np.cos(3 * np.asarray(a, np.float64))
            for k, a in arrays.items()}


def run_group(case, source, steps, seed=0, group=None, reference=True):
    """Run ``case`` on w and b (one group; with ``group``, b in a second group with those
    overrides) and its reference on each group's flat vector: (params, [(keys, reference)])."""
    states = make_params()
    start = values(states)
    groups = [('w', 'b')] if group is None else [('w',), ('b',)]
    opt = case.make().register_trainable_weights({k: states[k] for k in groups[0]})
    if group is not None:
        opt.add_param_group({'b': states['b']}, **group)
    sequence = grad_sequence(SHAPES, steps, seed=seed)
    for step in range(steps):
        grads = sequence[step] if source == 'random' else objective_gradient(values(states))
        opt.update({k: jnp.asarray(v, jnp.float32) for k, v in grads.items()})
    references = []
    for keys, overrides in zip(groups if reference else (), ({}, group or {})):
        p, state = flat(start, keys), {}
        for step in range(steps):
            current = dict(zip(keys, np.split(p, np.cumsum([start[k].size for k in keys])[:-1])))
            grads = sequence[step] if source == 'random' else objective_gradient(
                {k: current[k].reshape(SHAPES[k]) for k in keys})
            p, state = case.rule(p, flat(grads, keys), state, **case.ref_with(**overrides))
            p = p.astype(np.float32).astype(np.float64)   # stored as the float32 params are
        references.append((keys, p))
    return values(states), references


runs = [(case, source) for case in GROUP_CASES
        for source in (('objective',) if case.cls is stateopt.LBFGS else ('random', 'objective'))]
run_ids = [f'{case.id}-{source}' for case, source in runs]


@pytest.mark.parametrize('case, source', runs, ids=run_ids)
def test_group_trajectory_matches_reference(case, source):
    got, [(keys, want)] = run_group(case, source, 12)
    assert_close_f32(flat(got, keys), want, steps=12)


@pytest.mark.parametrize('case, source', runs, ids=run_ids)
def test_group_overrides_follow_reference(case, source):
    got, references = run_group(case, source, 12, seed=1, group=case.group)
    for keys, want in references:
        assert_close_f32(flat(got, keys), want, steps=12)


@pytest.mark.parametrize('case', GROUP_CASES[::2], ids=group_ids[::2])
def test_group_rows_pass_the_generic_properties(case):
    generic.test_tiny_lr_group_stays_bit_identical(case)
    generic.test_eager_jit_and_for_loop_agree(case)
    generic.test_state_dict_round_trip_continues_bit_identically(case)
    generic_catalogue.test_no_recompilation_after_the_first_step(case)


effect_rows = [(case, name, value) for case in GROUP_CASES for name, value in case.effects.items()]


@pytest.mark.parametrize('case, name, value', effect_rows,
                         ids=[f'{case.id}-{name}' for case, name, _ in effect_rows])
def test_each_group_hyperparameter_changes_its_group(case, name, value):
    """As the generic test, along the objective's descent (where Prodigy's estimate grows)."""
    finals = [run_group(case, 'objective', 6, group=override, reference=False)[0]
              for override in ({}, {name: value})]
    assert_close_f32(finals[1]['w'], finals[0]['w'], steps=6)   # a static override compiles another step
    assert not np.array_equal(finals[0]['b'], finals[1]['b']), f'{name}={value!r} changed nothing'


@pytest.mark.parametrize('case', GROUP_CASES, ids=group_ids)
def test_group_functional_update_matches_class_and_reference(case):
    states = make_params()
    start = values(states)
    params = {k: jnp.asarray(v) for k, v in start.items()}
    state = F.init(case.cls, params, **case.kwargs)
    dynamic = {k: v for k, v in case.kwargs.items() if case.cls._hyperparams[k].dynamic}
    static = {k: v for k, v in case.kwargs.items() if k not in dynamic}
    update = jax.jit(lambda g, s, p, hp: F.update(case.cls, g, s, p, **hp, **static))
    for _ in range(8):
        grads = objective_gradient(params)
        params, state = update({k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}, state, params,
                               dynamic)
    got, [(keys, want)] = run_group(case, 'objective', 8)
    assert_close_f32(flat(params, keys), want, steps=8)
    assert_close_f32(got, params, steps=8)            # the class compiles its own step


# -- L-BFGS: line searches, closures, value_fn ---------------------------------------------------

def rosenbrock_setup(**kwargs):
    x = brainstate.ParamState(jnp.array([-1.2, 1.0]))
    opt = stateopt.LBFGS(**kwargs).register_trainable_weights({'x': x})
    return x, opt, (lambda: rosenbrock(x.value))


@pytest.mark.parametrize('linesearch, steps', [('zoom', 40), ('backtracking', 60)])
def test_lbfgs_line_searches_minimise_rosenbrock_from_a_closure(linesearch, steps):
    x, opt, _ = rosenbrock_setup(linesearch=linesearch)
    traced = []

    def loss():   # runs in Python only while a step is being traced
        traced.append(1)
        return rosenbrock(x.value)

    losses = [float(opt.step(closure=loss))]
    first = len(traced)
    losses += [float(opt.step(closure=loss)) for _ in range(steps - 1)]
    assert len(traced) == first                     # compiled once, by the first step
    assert float(rosenbrock(x.value)) < 1e-8 and np.abs(np.asarray(x.value) - 1).max() < 1e-3, x.value
    assert losses == sorted(losses, reverse=True)   # both searches guarantee a decrease
    assert int(opt.step_count.value) == steps


def test_lbfgs_zoom_steps_satisfy_the_wolfe_conditions():
    x, opt, loss = rosenbrock_setup(linesearch='zoom')
    grad = jax.grad(rosenbrock)
    for _ in range(12):
        before = np.asarray(x.value, np.float64)
        opt.step(closure=loss)
        after = np.asarray(x.value, np.float64)
        step, slope = after - before, float(np.dot(grad(jnp.asarray(before)), after - before))
        assert slope < 0
        assert float(rosenbrock(after)) <= float(rosenbrock(before)) + 1e-4 * slope + 1e-6
        assert abs(float(np.dot(grad(jnp.asarray(after)), step))) <= 0.9 * abs(slope) + 1e-5


def test_lbfgs_value_fn_with_registered_keys_matches_the_closure_and_jit(mlp):
    """value_fn sees the params keyed as registered (tuple keys), several groups included."""
    params = mlp.states(brainstate.ParamState)
    init = jax.tree.map(jnp.copy, {k: s.value for k, s in params.items()})
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 4)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(1).standard_normal((16, 3)), jnp.float32)

    def loss_fn():
        return jnp.mean((mlp(x) - y) ** 2)

    def value_fn(tree):
        assert set(tree) == {('l1', 'weight'), ('head', 'weight')}
        hidden = jnp.tanh(x @ tree[('l1', 'weight')]['weight'] + tree[('l1', 'weight')]['bias'])
        return jnp.mean((hidden @ tree[('head', 'weight')]['weight'] + tree[('head', 'weight')]['bias']
                         - y) ** 2)

    grad = brainstate.transform.grad(loss_fn, grad_states=params, return_value=True)
    initial = float(loss_fn())
    runs = {}
    for mode in ('closure', 'value_fn', 'jit'):
        for key, state in params.items():
            state.value = init[key]
        opt = stateopt.LBFGS(linesearch='zoom').register_trainable_weights(params)
        opt.add_param_group(mlp.head.states(brainstate.ParamState), lr=0.5, linesearch=None)

        def step(opt=opt, mode=mode):
            if mode == 'closure':
                opt.step(closure=grad)                    # returns (grads, loss)
            elif mode == 'value_fn':
                opt.update(grad()[0], value_fn=value_fn)
            else:
                opt.step(closure=loss_fn)                 # returns the loss only

        step = brainstate.transform.jit(step) if mode == 'jit' else step
        for _ in range(8):
            step()
        runs[mode] = values(params), float(loss_fn())
    assert runs['closure'][1] < 0.5 * initial
    for mode in ('value_fn', 'jit'):
        assert_close_f32(runs[mode], runs['closure'], steps=8, err_msg=mode)


def test_lbfgs_line_search_changes_only_its_group():
    """The first L-BFGS step has length min(1, ||g||): 10x too long here, so only zoom shortens it."""
    target = {k: jnp.asarray(v) + 0.1 for k, v in values(make_params()).items()}

    def value_fn(tree):
        return sum(jnp.sum((tree[k] - target[k]) ** 2 + (tree[k] - target[k]) ** 4) for k in tree)

    finals = []
    for search in (None, 'zoom'):
        states = make_params()
        opt = stateopt.LBFGS().register_trainable_weights({'w': states['w']})
        opt.add_param_group({'b': states['b']}, linesearch=search)
        for _ in range(3):
            opt.update(jax.grad(value_fn)({k: s.value for k, s in states.items()}), value_fn=value_fn)
        finals.append(values(states))
    assert_close_f32(finals[1]['w'], finals[0]['w'], steps=3)   # another line search, another compiled step
    assert float(value_fn({'b': finals[1]['b']})) < 0.1 * float(value_fn({'b': finals[0]['b']}))


def test_lbfgs_takes_an_optax_line_search_and_explicit_values():
    x, opt, loss = rosenbrock_setup(linesearch=optax.scale_by_backtracking_linesearch(30, 0.5))
    value_fn = lambda tree: rosenbrock(tree['x'])    # noqa: E731
    for _ in range(100):
        value, grads = jax.value_and_grad(rosenbrock)(x.value)
        opt.update({'x': grads}, value=value, value_fn=value_fn)
    assert float(loss()) < 1e-6


def test_lbfgs_line_search_without_the_loss_raises_and_changes_nothing():
    states = make_params()
    opt = stateopt.LBFGS(linesearch='zoom').register_trainable_weights(states)
    before = snapshot(opt, states)
    with pytest.raises(ValueError, match='value_fn'):
        opt.update({k: jnp.ones(s) for k, s in SHAPES.items()})
    assert_same(snapshot(opt, states), before)
    with pytest.raises(KeyError, match="'b'"):
        opt.update({'w': jnp.ones(SHAPES['w'])}, value_fn=lambda tree: 0.0)
    assert_same(snapshot(opt, states), before)


def test_lbfgs_state_dict_round_trip_with_a_line_search():
    x, opt, loss = rosenbrock_setup(linesearch='zoom')
    for _ in range(3):
        opt.step(closure=loss)
    saved, saved_x = jax.tree.map(np.asarray, opt.state_dict()), np.asarray(x.value)
    for _ in range(3):
        opt.step(closure=loss)
    uninterrupted = np.asarray(x.value)
    x2, opt2, loss2 = rosenbrock_setup(linesearch='zoom')
    x2.value = jnp.asarray(saved_x)
    opt2.load_state_dict(saved)
    for _ in range(3):
        opt2.step(closure=loss2)
    np.testing.assert_array_equal(np.asarray(x2.value), uninterrupted)


# -- schedule-free evaluation --------------------------------------------------------------------

@pytest.mark.parametrize('jit', [False, True], ids=['eager', 'jit'])
def test_schedule_free_evaluation_swaps_to_the_average_and_back(mlp, jit):
    params = mlp.states(brainstate.ParamState)
    start = jax.tree.map(np.asarray, {k: s.value for k, s in params.items()})
    opt = stateopt.ScheduleFreeAdamW(lr=0.05, weight_decay=0.01).register_trainable_weights(params)
    x = jnp.ones((4, 4))
    grads_seen = []

    def train_step():
        grads = brainstate.transform.grad(lambda: jnp.mean(mlp(x) ** 2), grad_states=params)()
        opt.update(grads)
        return grads

    def evaluate():
        with opt.evaluation():
            return mlp(x), {k: s.value for k, s in params.items()}

    if jit:
        train_step, evaluate = brainstate.transform.jit(train_step), brainstate.transform.jit(evaluate)
    for _ in range(4):
        grads_seen.append(jax.tree.map(np.asarray, train_step()))
    y = values(params)
    out, inside = evaluate()
    assert_same(values(params), y)                                   # y back, bit for bit
    averaged = opt.eval_params()
    assert set(averaged) == set(params)                              # keyed as registered
    for key in params:
        for leaf in start[key]:
            state, p = {}, np.asarray(start[key][leaf], np.float64)
            for grads in grads_seen:
                p, state = ref.schedule_free(p, grads[key][leaf], state, lr=0.05, betas=(0.9, 0.999),
                                             weight_decay=0.01, adam=True)
            assert_close_f32(y[key][leaf], p, steps=4)
            assert_close_f32(averaged[key][leaf], state['x'], steps=4)
            assert_close_f32(inside[key][leaf], state['x'], steps=4)
    for key, state in params.items():
        state.value = averaged[key]
    # the model ran at x: outputs near zero are sums of activations times weights of order 1
    assert_close_f32(out, mlp(x), steps=2, scale=1.0)


def test_schedule_free_groups_average_with_their_own_momentum():
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, 6)
    opt = stateopt.ScheduleFreeSGD(lr=0.1).register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, momentum=0.5)
    generic.run_eager(opt, states, grads)
    averaged = opt.eval_params()
    for key, momentum in (('w', 0.9), ('b', 0.5)):
        state, p = {}, np.asarray(start[key], np.float64)
        for g in grads:
            p, state = ref.schedule_free(p, g[key], state, lr=0.1, momentum=momentum)
        assert_close_f32(averaged[key], state['x'], steps=6)


# -- Muon ------------------------------------------------------------------------------------------

MATRICES = {'w': (4, 3), 'v': (3, 6)}


@pytest.mark.parametrize('name, value', [('momentum', 0.8), ('nesterov', False), ('ns_steps', 2)])
def test_muon_matrix_hyperparameters_change_their_group(name, value):
    grads = grad_sequence(MATRICES, 6, seed=7)
    finals = []
    for override in ({}, {name: value}):
        states = make_params(shapes=MATRICES)
        opt = stateopt.Muon(lr=0.05).register_trainable_weights({'w': states['w']})
        opt.add_param_group({'v': states['v']}, **override)
        generic.run_eager(opt, states, grads)
        finals.append(values(states))
        start = values(make_params(shapes=MATRICES))
        want = ref_trajectory(ref.muon, start['v'], [g['v'] for g in grads], lr=0.05, **override)[-1]
        assert_close_f32(finals[-1]['v'], want, steps=6)
    assert_close_f32(finals[1]['w'], finals[0]['w'], steps=6)   # a static override compiles another step
    assert not np.array_equal(finals[0]['v'], finals[1]['v'])


def test_muon_orthogonalises_matrices_and_falls_back_to_adamw():
    shapes = {'matrix': (6, 4), 'bias': (4,), 'kernel': (2, 2, 3)}
    states = make_params(shapes=shapes)
    start = values(states)
    opt = stateopt.Muon(lr=0.1, momentum=0.5, weight_decay=0.1).register_trainable_weights(states)
    grads = grad_sequence(shapes, 1, seed=3)
    generic.run_eager(opt, states, grads)
    after = values(states)
    update = (start['matrix'] * (1 - 0.1 * 0.1) - after['matrix']) / 0.1
    singular = np.linalg.svd(update, compute_uv=False)
    assert singular.min() > 0.5 and singular.max() < 1.5        # about semi-orthogonal
    for key in ('bias', 'kernel'):                               # AdamW: the first step is sign(g)
        want = start[key] * (1 - 0.1 * 0.1) - 0.1 * np.sign(grads[0][key])
        assert_close_f32(after[key], want)


def test_muon_minimises_a_matrix_least_squares_problem():
    rng = np.random.default_rng(0)
    a, target = rng.standard_normal((20, 8)), rng.standard_normal((20, 5))
    w = brainstate.ParamState(jnp.zeros((8, 5)))
    opt = stateopt.Muon(lr=optax.cosine_decay_schedule(0.05, 600)).register_trainable_weights({'w': w})
    loss = lambda: jnp.mean((jnp.asarray(a, jnp.float32) @ w.value - target) ** 2)   # noqa: E731
    grad = brainstate.transform.grad(loss, grad_states={'w': w})
    step = brainstate.transform.jit(lambda: brainstate.transform.for_loop(
        lambda _: opt.update(grad()), jnp.arange(600)))
    step()
    best = np.linalg.lstsq(a, target, rcond=None)[0]
    assert float(loss()) < float(np.mean((a @ best - target) ** 2)) + 1e-3


# -- Lookahead and the schedules the reference ignored -----------------------------------------

def test_lookahead_synchronises_every_sync_period():
    w = brainstate.ParamState(jnp.zeros(3))
    opt = stateopt.Lookahead(optax.identity(), sync_period=3, alpha=0.25, lr=1.0)
    opt = opt.register_trainable_weights({'w': w})
    seen = []
    for _ in range(7):
        opt.update({'w': jnp.ones(3)})
        seen.append(float(w.value[0]))
    # fast: -1, -2, -3 -> slow 0 + 0.25 * (-3 - 0) = -0.75; then -1.75, -2.75, -3.75 -> -1.5; -2.5
    assert seen == [-1.0, -2.0, -0.75, -1.75, -2.75, -1.5, -2.5]
    assert float(opt.state_dict()['state']['w']['slow'][0]) == -1.5


@pytest.mark.parametrize('cls, kwargs, rule, hyperparams', [
    (stateopt.Fromage, dict(momentum=0.5), ref.fromage, dict(momentum=0.5)),
    (stateopt.Lookahead, dict(base_optimizer=optax.scale_by_adam(), sync_period=2), ref.lookahead,
     dict(base='adam', sync_period=2)),
    (stateopt.Lars, dict(trust_coefficient=0.1), ref.lars, dict(trust_coefficient=0.1)),
    (stateopt.ScheduleFreeSGD, dict(), ref.schedule_free, dict(momentum=0.9)),
    (stateopt.Prodigy, dict(d0=1e-2), ref.prodigy, dict(d0=1e-2)),
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


# -- Sophia with Hutchinson's estimate ------------------------------------------------------------

def quadratic_setup(**kwargs):
    x = brainstate.ParamState(jnp.full(5, 3.0))
    opt = stateopt.Sophia(**kwargs).register_trainable_weights({'x': x})
    loss = lambda: 0.5 * jnp.sum(CURVATURE * x.value ** 2)   # noqa: E731
    return x, opt, loss, brainstate.transform.grad(loss, grad_states={'x': x})


def test_sophia_hutchinson_estimates_a_diagonal_hessian_exactly():
    """For a diagonal Hessian u ⊙ Hu = diag(H) whatever the signs u: the reference is exact."""
    x, opt, loss, grad = quadratic_setup(lr=0.05, update_interval=3)
    trajectory = []
    for _ in range(10):
        opt.step(grad(), closure=loss)
        trajectory.append(np.asarray(x.value))
    p, state = np.full(5, 3.0), {}
    for step, got in enumerate(trajectory, 1):
        p, state = ref.sophia(p, CURVATURE * p, state, lr=0.05, update_interval=3,
                              hessian=lambda g: np.asarray(CURVATURE, np.float64))
        assert_close_f32(got, p, steps=step)


@pytest.mark.parametrize('mode', ['closure', 'value_fn', 'jit'])
def test_sophia_minimises_rosenbrock_with_hutchinson(mode):
    x = brainstate.ParamState(jnp.array([-1.2, 1.0]))
    opt = stateopt.Sophia(lr=optax.cosine_decay_schedule(0.05, 3000), weight_decay=0.0, gamma=0.05,
                          update_interval=2).register_trainable_weights({'x': x})
    loss = lambda: rosenbrock(x.value)    # noqa: E731
    grad = brainstate.transform.grad(loss, grad_states={'x': x})
    value_fn = lambda tree: rosenbrock(tree['x'])   # noqa: E731
    if mode == 'closure':
        step = brainstate.transform.jit(lambda: opt.step(grad(), closure=loss))
    elif mode == 'value_fn':
        step = brainstate.transform.jit(lambda: opt.update(grad(), value_fn=value_fn))
    else:
        step = brainstate.transform.jit(lambda: brainstate.transform.for_loop(
            lambda _: opt.step(grad(), closure=loss), jnp.arange(100)))
    for _ in range(3000 if mode != 'jit' else 30):
        step()
    assert float(loss()) < 1e-3 and np.abs(np.asarray(x.value) - 1).max() < 0.05, x.value


def test_sophia_eager_and_jit_agree_and_state_dict_round_trips():
    runs = []
    for jit in (False, True):
        x, opt, loss, grad = quadratic_setup(lr=0.05, update_interval=2)
        def step(opt=opt, grad=grad, loss=loss):
            opt.step(grad(), closure=loss)

        step = brainstate.transform.jit(step) if jit else step
        for _ in range(4):
            step()
        runs.append((np.asarray(x.value), jax.tree.map(np.asarray, opt.opt_state.value)))
    assert_close_f32(runs[1], runs[0], steps=4)
    saved, saved_x = jax.tree.map(np.asarray, opt.state_dict()), np.asarray(x.value)
    for _ in range(3):
        opt.step(grad(), closure=loss)
    x2, opt2, loss2, grad2 = quadratic_setup(lr=0.05, update_interval=2)
    x2.value = jnp.asarray(saved_x)
    opt2.load_state_dict(saved)
    for _ in range(3):
        opt2.step(grad2(), closure=loss2)
    np.testing.assert_array_equal(np.asarray(x2.value), np.asarray(x.value))


def test_sophia_needs_the_loss_for_hutchinson_but_not_for_a_given_estimator():
    states = make_params()
    grads = {k: jnp.ones(s) for k, s in SHAPES.items()}
    opt = stateopt.Sophia().register_trainable_weights(states)
    before = snapshot(opt, states)
    with pytest.raises(ValueError, match='closure'):
        opt.update(grads)
    assert_same(snapshot(opt, states), before)
    stateopt.Sophia(hessian=SQUARED).register_trainable_weights(states).update(grads)
    assert not np.array_equal(values(states)['w'], before[0]['w'])


@pytest.mark.parametrize('cls, hyperparams', [
    (stateopt.ScheduleFreeSGD, dict(momentum=0.9)),
    (stateopt.ScheduleFreeAdamW, dict(betas=(0.9, 0.999), adam=True)),
], ids=['ScheduleFreeSGD', 'ScheduleFreeAdamW'])
def test_schedule_free_weight_lr_power_weighs_the_average_by_the_schedule(cls, hyperparams):
    """Under a warm-up schedule, weight_lr_power changes the averaging weights of its group only."""
    schedule = optax.linear_schedule(0.01, 0.1, 8)
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, 8, seed=5)
    opt = cls(lr=schedule).register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, weight_lr_power=0.0)
    generic.run_eager(opt, states, grads)
    finals = {}
    for key, power in (('w', 2.0), ('b', 0.0), ('b-other', 2.0)):
        state, p = {}, np.asarray(start[key[0]], np.float64)
        for step, g in enumerate(grads):
            p, state = ref.schedule_free(p, np.asarray(g[key[0]], np.float64), state,
                                         lr=float(schedule(step)), weight_lr_power=power, **hyperparams)
        finals[key] = p
    assert_close_f32(values(states)['w'], finals['w'], steps=8)
    assert_close_f32(values(states)['b'], finals['b'], steps=8)
    assert np.abs(finals['b'] - finals['b-other']).max() > 1e-3
