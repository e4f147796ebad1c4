"""Sophia with Hutchinson's Hessian estimate, from a closure or a value_fn."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref
from catalogue import SQUARED
from conftest import SHAPES, assert_close_f32, assert_same, make_params, snapshot, values
from test_catalogue import CURVATURE, rosenbrock

import stateopt


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
