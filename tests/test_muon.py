"""Muon: its matrix-only hyper-parameters, the orthogonalised step and the AdamW fallback."""

import brainstate
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref
import test_optimizer as generic
from catalogue import grad_sequence
from conftest import assert_close_f32, make_params, values

import stateopt

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
        want = ref.trajectory(ref.muon, start['v'], [g['v'] for g in grads], lr=0.05, **override)[-1]
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
