"""donating_jit: a whole train step with donated State buffers."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MLP, assert_same, values

import stateopt

X = jnp.asarray(np.random.default_rng(0).standard_normal((16, 4)), jnp.float32)
Y = jnp.asarray(np.random.default_rng(1).standard_normal((16, 3)), jnp.float32)


def make_run(jit):
    brainstate.random.seed(0)
    model = MLP()
    params = model.states(brainstate.ParamState)
    opt = stateopt.AdamW(lr=1e-2, grad_clip_norm=1.0).register_trainable_weights(params)
    opt.add_param_group(model.head.states(brainstate.ParamState), lr=3e-3)

    @jit
    def train_step(x, y):
        grads, loss = brainstate.transform.grad(
            lambda: jnp.mean((model(x) - y) ** 2), grad_states=params, return_value=True)()
        opt.update(grads)
        return loss

    return model, params, opt, train_step


def test_matches_brainstate_jit_bit_for_bit():
    runs = []
    for jit in (brainstate.transform.jit, stateopt.donating_jit):
        _, params, opt, train_step = make_run(jit)
        losses = [float(train_step(X, Y)) for _ in range(5)]
        runs.append((losses, values(params), jax.tree.map(np.asarray, opt.opt_state.value)))
    # donating_jit compiles train_step's own jaxpr: its optimised HLO differs only by buffer copies
    assert runs[0][0] == runs[1][0]
    assert_same(runs[0][1:], runs[1][1:])
    assert runs[1][0][-1] < runs[1][0][0]


def test_values_the_caller_holds_stay_valid_and_read_only_states_are_kept():
    model, params, opt, train_step = make_run(stateopt.donating_jit)
    scale = brainstate.State(jnp.float32(1.0))       # read, never written: not donated
    step = stateopt.donating_jit(lambda x, y: train_step(x * scale.value, y))
    step(X, Y)
    held_value = params[('l1', 'weight')].value
    held_leaf = params[('head', 'weight')].value['weight']
    held_state = opt.state_dict()
    copies = jax.tree.map(np.array, (held_value, held_leaf, held_state))
    for _ in range(3):
        step(X, Y)
    assert_same((held_value, held_leaf, held_state), copies)
    assert float(scale.value) == 1.0
    assert int(opt.step_count.value) == 4


def test_owned_scalar_is_donated_without_a_copy_unless_someone_holds_it():
    from stateopt import _donation

    state = stateopt.OptimState(jnp.int32(3))
    _donation.mark_unread((state,))                  # as after a step: nobody read .value
    first = _donation.owned_leaves(state)
    assert first[0] is _donation.RAW(state)          # nobody else holds it: no copy
    del first
    held = _donation.RAW(state)                      # an outside holder, who never read .value
    leaves = _donation.owned_leaves(state)
    assert leaves[0] is not held and int(leaves[0]) == 3
    del held, leaves
    model, params, opt, train_step = make_run(stateopt.donating_jit)
    train_step(X, Y)
    calls = []
    real_copy = _donation._copy
    _donation._copy = lambda leaf: calls.append(leaf) or real_copy(leaf)
    try:
        for _ in range(3):
            train_step(X, Y)
    finally:
        _donation._copy = real_copy
    assert calls == []                               # a plain train step copies nothing


def test_static_arguments_and_compilation_count():
    w = brainstate.ParamState(jnp.ones(3))
    traces = []

    @stateopt.donating_jit(static_argnums=1)
    def scale(x, power):
        traces.append(power)
        w.value = w.value * x ** power
        return w.value.sum()

    assert float(scale(jnp.float32(2.0), 2)) == pytest.approx(12.0)
    assert float(scale(jnp.float32(2.0), 2)) == pytest.approx(48.0)
    assert float(scale(jnp.float32(2.0), 1)) == pytest.approx(96.0)
    assert traces == [2, 1]


def test_inside_another_transform_it_is_traced_inline():
    _, params, opt, train_step = make_run(stateopt.donating_jit)
    looped = brainstate.transform.jit(
        lambda: brainstate.transform.for_loop(lambda _: train_step(X, Y), jnp.arange(3)))
    losses = looped()
    assert losses.shape == (3,) and int(opt.step_count.value) == 3
