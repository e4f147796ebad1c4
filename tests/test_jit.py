"""donating_jit: a whole train step with donated State buffers."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MLP, assert_close_f32, assert_same, snapshot, values

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


def test_keyword_arguments_dynamic_and_static():
    w = brainstate.ParamState(jnp.ones(3))
    traces = []

    @stateopt.donating_jit(static_argnames='power')
    def scale(x, *, shift, power):
        traces.append(power)
        w.value = w.value * x ** power + shift
        return w.value.sum()

    assert float(scale(jnp.float32(2.0), shift=jnp.float32(1.0), power=2)) == 15.0      # 3 * (1 * 4 + 1)
    assert float(scale(jnp.float32(2.0), power=2, shift=jnp.float32(0.0))) == 60.0     # 3 * (5 * 4)
    assert float(scale(jnp.float32(2.0), shift=jnp.float32(0.0), power=1)) == 120.0
    assert traces == [2, 1]


def test_the_arrays_a_call_receives_for_written_states_are_deleted(monkeypatch):
    from stateopt import _jit

    received = []
    protected, owned = _jit.DonationGuard.protected, _jit.owned_leaves
    monkeypatch.setattr(_jit.DonationGuard, 'protected',
                        lambda guard, states, values: (protected(guard, states, values),
                                                       received.extend(jax.tree.leaves(values)))[0])
    monkeypatch.setattr(_jit, 'owned_leaves',
                        lambda state: (leaves := owned(state), received.extend(leaves))[0])
    model, params, opt, train_step = make_run(stateopt.donating_jit)
    held = params[('l1', 'weight')].value           # the caller holds it: the call gets a copy
    for _ in range(3):
        train_step(X, Y)
        assert received and all(array.is_deleted() for array in received if isinstance(array, jax.Array))
        received.clear()
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(held))


# -- shardings given to donating_jit are checked before anything runs ----------------------------

ONE_DEVICE = jax.sharding.NamedSharding(jax.sharding.Mesh(jax.devices()[:1], ('model',)),
                                        jax.sharding.PartitionSpec())


def test_shardings_must_be_shardings():
    w = brainstate.ParamState(jnp.ones(3))
    wrong = {
        "state_shardings has the key 'w' \\(str\\), not a brainstate State.*callable":
            dict(state_shardings={'w': ONE_DEVICE}),
        r"state_shardings\[ParamState\(float32\[3\]\)\] is 'replicated', not a jax.sharding.Sharding.*"
        r"NamedSharding\(mesh, spec\)": dict(state_shardings={w: 'replicated'}),
        r"state_shardings is a list: give a dict \{State: Sharding\} or a callable":
            dict(state_shardings=[w]),
        r"in_shardings\[1\] is (P|PartitionSpec)\('model',?\), a PartitionSpec.*NamedSharding\(mesh, ":
            dict(in_shardings=(None, jax.sharding.PartitionSpec('model'))),
        r"out_shardings\['loss'\] is 3, not a jax.sharding.Sharding or None": dict(out_shardings={'loss': 3}),
    }
    for message, options in wrong.items():
        with pytest.raises(TypeError, match=message):
            stateopt.donating_jit(lambda x: x, **options)


def test_misfitting_shardings_are_refused_at_the_first_call_and_change_nothing():
    _, params, opt, train_step = make_run(lambda fn: fn)
    before = snapshot(opt, params)
    wrong = {
        r"state_shardings\(ParamState\(float32\[8\], float32\[4, 8\]\)\) returned 'everywhere', not a "
        r"jax.sharding.Sharding or None": (TypeError, dict(state_shardings=lambda state: 'everywhere')),
        r'in_shardings has 3 entries, but train_step was called with 2 positional arguments':
            (ValueError, dict(in_shardings=(ONE_DEVICE, None, None))),
        r'in_shardings\[0\] is \(.*\), which is not a tree prefix of argument 0 of train_step':
            (ValueError, dict(in_shardings=((ONE_DEVICE, ONE_DEVICE), None))),
        r'out_shardings is \(.*\), which is not a tree prefix of what train_step returns':
            (ValueError, dict(out_shardings=(ONE_DEVICE, ONE_DEVICE))),
        r'in_shardings is a dict: as for jax.jit, give one Sharding for all positional arguments of '
        r'train_step, or a tuple': (ValueError, dict(in_shardings={'x': ONE_DEVICE})),
    }
    for message, (error, options) in wrong.items():
        with pytest.raises(error, match=message):
            stateopt.donating_jit(train_step, **options)(X, Y)
        assert_same(snapshot(opt, params), before)


def test_shardings_on_one_device():
    _, params, opt, train_step = make_run(lambda fn: fn)
    weight = params[('l1', 'weight')]
    step = stateopt.donating_jit(train_step, in_shardings=(ONE_DEVICE, None), out_shardings=ONE_DEVICE,
                                 state_shardings={weight: ONE_DEVICE})
    loss = step(X, Y)
    assert loss.sharding == ONE_DEVICE
    assert weight.value['weight'].sharding == ONE_DEVICE
    losses = [float(loss)] + [float(step(X, Y)) for _ in range(2)]
    _, params_ref, opt_ref, train_step_ref = make_run(stateopt.donating_jit)
    expected = [float(train_step_ref(X, Y)) for _ in range(3)]
    # the same step with and without the shardings: XLA may fuse the two programs differently
    assert_close_f32(np.asarray(losses), np.asarray(expected), steps=3)
    assert_close_f32(values(params), values(params_ref), steps=3)
    assert weight.value['weight'].sharding == ONE_DEVICE
