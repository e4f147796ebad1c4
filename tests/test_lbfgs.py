"""L-BFGS beyond the group reference: line searches, closures and value_fn."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import SHAPES, assert_close_f32, assert_same, make_params, snapshot, values
from test_catalogue import rosenbrock

import stateopt


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
