"""The packed parameter layout (stateopt.PackedParams): the model's States read slices of one buffer
per dtype, and an element-wise optimizer steps that buffer as one array."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from catalogue import CASES, grad_sequence
from conftest import SHAPES, assert_close_f32, make_params, values

import stateopt

STEPS = 8
PACKABLE = [case for case in CASES if case.cls._elementwise]
NOT_PACKABLE = sorted({case.cls for case in CASES if not case.cls._elementwise}, key=lambda c: c.__name__)


def buffer_grads(packed: stateopt.PackedParams, grads: dict) -> dict:
    """The gradient with respect to ``packed`` of ``sum_k <state_k, grads[k]>``: each array's
    gradient in its place in the buffers (taken through brainstate's grad, as a user takes it)."""
    params = packed.params

    def loss(g):
        return sum(jnp.vdot(params[(key,)].value, g[key]) for key in g)

    return brainstate.transform.grad(loss, grad_states=packed)({k: jnp.asarray(v) for k, v in grads.items()})


@pytest.mark.parametrize('case', PACKABLE, ids=[case.id for case in PACKABLE])
def test_packed_rows_follow_the_reference_rule(case):
    """Every element-wise row, packed in two PackedParams (the second one in its own group
    with the row's overrides), follows the numpy reference array by array."""
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, STEPS, seed=2)
    body = stateopt.PackedParams({'w': states['w']})
    head = stateopt.PackedParams({'b': states['b']}, name='head')
    opt = case.make().register_trainable_weights(body)
    opt.add_param_group(head, **case.group)
    for g in grads:
        opt.update({**buffer_grads(body, {'w': g['w']}), **buffer_grads(head, {'b': g['b']})})
    got = values(states)
    want_w = reference.trajectory(case.rule, start['w'], [g['w'] for g in grads], **case.ref)[-1]
    want_b = reference.trajectory(case.rule, start['b'], [g['b'] for g in grads],
                                  **case.ref_with(**case.group))[-1]
    assert_close_f32(got['w'], want_w, steps=STEPS, err_msg=case.id)
    assert_close_f32(got['b'], want_b, steps=STEPS, err_msg=case.id)


@pytest.mark.parametrize('cls', NOT_PACKABLE, ids=[cls.__name__ for cls in NOT_PACKABLE])
def test_a_rule_with_per_array_quantities_refuses_a_packed_buffer(cls):
    packed = stateopt.PackedParams(make_params())
    with pytest.raises(TypeError, match='cannot run on the packed buffer'):
        cls._check_packed([(('float32',), packed['float32'])])


class MLP(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = brainstate.nn.Linear(6, 16)
        self.l2 = brainstate.nn.Linear(16, 3)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def data():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.standard_normal((8, 6)), jnp.float32), jnp.asarray(rng.standard_normal((8, 3)),
                                                                               jnp.float32)


def optax_trajectory(model_values: dict, x, y, steps: int) -> dict:
    """The same model trained by optax.adamw on its unpacked arrays: the reference."""
    def forward(p, x):
        h = jax.nn.relu(x @ p[('l1', 'weight')]['weight'] + p[('l1', 'weight')]['bias'])
        return h @ p[('l2', 'weight')]['weight'] + p[('l2', 'weight')]['bias']

    def loss(p):
        return jnp.mean((forward(p, x) - y) ** 2)

    tx = optax.adamw(1e-2, weight_decay=1e-2)
    params, state = model_values, tx.init(model_values)
    for _ in range(steps):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize('mode', ['eager', 'jit', 'donating_jit', 'for_loop'])
def test_a_packed_model_trains_like_optax_on_its_arrays(mode):
    model = MLP()
    params = model.states(brainstate.ParamState)
    x, y = data()
    want = optax_trajectory({k: jax.tree.map(jnp.asarray, s.value) for k, s in params.items()}, x, y, 5)
    packed = stateopt.PackedParams(params)
    assert isinstance(params[('l1', 'weight')], brainstate.ParamState)
    opt = stateopt.AdamW(lr=1e-2, weight_decay=1e-2).register_trainable_weights(packed)

    def step():
        grads = brainstate.transform.grad(lambda: jnp.mean((model(x) - y) ** 2), grad_states=packed)()
        opt.update(grads)

    if mode == 'for_loop':     # the five steps as one loop, traced once
        brainstate.transform.jit(lambda: brainstate.transform.for_loop(lambda i: step(), jnp.arange(5)))()
    else:
        run = {'eager': step, 'jit': brainstate.transform.jit(step),
               'donating_jit': stateopt.donating_jit(step)}[mode]
        for _ in range(5):
            run()
    for key, state in params.items():
        for name in ('weight', 'bias'):
            assert_close_f32(state.value[name], want[key][name], steps=5, err_msg=f'{mode} {key} {name}')


def test_the_gradient_of_a_packed_model_is_one_concatenate_not_a_pad_per_array():
    """Traced, a buffer's arrays are cut by one split, whose gradient is one concatenate: a
    slice per array would transpose to a buffer-sized pad per array (work that grows with
    arrays x parameters)."""
    states = {str(i): brainstate.ParamState(jnp.full((4, 3), float(i))) for i in range(20)}
    packed = stateopt.PackedParams(states)
    opt = stateopt.SGD(lr=0.1).register_trainable_weights(packed)

    def train():
        loss = lambda: sum(jnp.sum(s.value ** 2) for s in states.values())
        opt.update(brainstate.transform.grad(loss, grad_states=packed)())

    text = stateopt.donating_jit(train).lower().as_text()
    assert text.count('stablehlo.pad') == 0 and 'stablehlo.concatenate' in text
    stateopt.donating_jit(train)()
    for i, state in states.items():
        assert_close_f32(state.value, np.full((4, 3), float(i) * 0.8))


def test_views_read_and_write_their_slices_and_refuse_bad_values():
    states = make_params()
    before = values(states)
    packed = stateopt.PackedParams(states)
    assert set(packed) == {'float32'} and packed['float32'].value.shape == (17,)
    np.testing.assert_array_equal(states['w'].value, before['w'])
    np.testing.assert_array_equal(states['b'].value, before['b'])
    states['b'].value = jnp.arange(5.0)
    np.testing.assert_array_equal(states['b'].value, np.arange(5.0))
    np.testing.assert_array_equal(states['w'].value, before['w'])
    buffer = np.asarray(packed['float32'].value)
    for bad, error in [(jnp.zeros(4), ValueError), (jnp.zeros(5, jnp.int32), TypeError),
                       ({'b': jnp.zeros(5)}, ValueError)]:
        with pytest.raises(error, match="packed parameter 'b'"):
            states['b'].value = bad
        np.testing.assert_array_equal(packed['float32'].value, buffer)


def test_two_dtypes_get_two_buffers_and_keys_carry_the_name():
    w = brainstate.ParamState(jnp.ones(3, jnp.float32))
    h = brainstate.ParamState(jnp.ones(2, jnp.bfloat16))
    packed = stateopt.PackedParams({'w': w, 'h': h}, name='net')
    assert sorted(packed) == ['net.bfloat16', 'net.float32']
    assert packed['net.bfloat16'].value.dtype == jnp.bfloat16
    opt = stateopt.SGD(lr=0.5).register_trainable_weights(packed)
    opt.update({'net.float32': jnp.ones(3), 'net.bfloat16': jnp.ones(2, jnp.bfloat16)})
    np.testing.assert_array_equal(w.value, [0.5] * 3)
    assert h.value.dtype == jnp.bfloat16 and h.value.tolist() == [0.5, 0.5]


def test_refusals_change_nothing():
    states = make_params()
    packed = stateopt.PackedParams(states)
    buffer = np.asarray(packed['float32'].value)
    with pytest.raises(ValueError, match='already held by another PackedParams'):
        stateopt.PackedParams({'w': states['w']})
    with pytest.raises(TypeError, match="key '[wb]' is held by a stateopt.PackedParams"):
        stateopt.Adam(lr=0.1).register_trainable_weights(states)
    with pytest.raises(TypeError, match='Lamb updates each parameter array as a whole'):
        stateopt.Lamb(lr=0.1).register_trainable_weights(packed)
    with pytest.raises(ValueError, match='weight_decay_mask'):
        stateopt.AdamW(lr=0.1, weight_decay_mask=stateopt.decay_matrices_only
                       ).register_trainable_weights(packed)
    opt = stateopt.AdamW(lr=0.1).register_trainable_weights(packed)
    head = stateopt.PackedParams({'h': brainstate.ParamState(jnp.ones(2))}, name='head')
    for route in (lambda: opt.add_param_group(head, weight_decay_mask=stateopt.decay_matrices_only),
                  lambda: opt.add_param_group(packed, weight_decay_mask=stateopt.decay_matrices_only)):
        with pytest.raises(ValueError, match='weight_decay_mask'):
            route()
        assert len(opt.param_groups) == 1 and opt.param_groups[0].names == ['float32']
    for bad in (jnp.zeros(16), jnp.zeros(17, jnp.bfloat16)):
        with pytest.raises(ValueError, match='a PackedBuffer holds 17 float32 values'):
            packed['float32'].value = bad
    with pytest.raises(ValueError, match='no States'):
        stateopt.PackedParams({})
    with pytest.raises(TypeError, match='int32'):
        stateopt.PackedParams({'n': brainstate.ParamState(jnp.zeros(2, jnp.int32))})
    fresh = brainstate.ParamState(jnp.ones(2))

    @brainstate.transform.jit
    def inside():
        stateopt.PackedParams({'f': fresh})

    with pytest.raises(ValueError, match='before any brainstate.transform'):
        inside()
    assert not stateopt._packed.is_packed_view(fresh)
    np.testing.assert_array_equal(packed['float32'].value, buffer)


def test_checkpoint_of_the_model_and_optimizer_round_trips(tmp_path):
    states = make_params()
    packed = stateopt.PackedParams(states)
    opt = stateopt.Adam(lr=0.1).register_trainable_weights(packed)
    opt.update({'float32': jnp.ones(17)})
    path = tmp_path / 'run.msgpack'
    stateopt.save_checkpoint(path, {'model': states, 'optimizer': opt})
    saved, moments = values(states), jax.tree.map(np.asarray, opt.opt_state.value)
    opt.update({'float32': jnp.ones(17)})
    stateopt.load_checkpoint(path, {'model': states, 'optimizer': opt})
    for key in states:
        np.testing.assert_array_equal(states[key].value, saved[key])
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, opt.opt_state.value), moments)
    assert int(opt.step_count.value) == 1


def test_a_value_read_before_a_step_stays_valid():
    states = make_params()
    packed = stateopt.PackedParams(states)
    opt = stateopt.SGD(lr=0.1).register_trainable_weights(packed)
    held_view, held_buffer = states['w'].value, packed['float32'].value
    first, first_w = np.asarray(held_buffer), np.asarray(held_view)
    opt.update({'float32': jnp.ones(17)})
    np.testing.assert_array_equal(held_buffer, first)
    np.testing.assert_array_equal(held_view, first_w)
    assert_close_f32(packed['float32'].value, first - 0.1)


def test_packable_optimizers_are_the_elementwise_catalogue():
    names = stateopt._optimizer.packable_optimizers()
    assert {'SGD', 'Adam', 'AdamW', 'RMSprop', 'Lion'} <= set(names)
    assert not {'Lamb', 'Lars', 'Adafactor', 'Muon', 'LBFGS', 'SM3', 'Novograd'} & set(names)


def test_small_arrays_packed_beside_large_ones_as_they_are():
    """One optimizer trains a large array as it is and the small ones packed, as optax trains all."""
    rng = np.random.default_rng(3)
    big = brainstate.ParamState(jnp.asarray(0.3 * rng.standard_normal((6, 5)), jnp.float32))
    small = {f'b{i}': brainstate.ParamState(jnp.asarray(rng.standard_normal(5), jnp.float32))
             for i in range(4)}
    start = {'w': big.value, **{k: s.value for k, s in small.items()}}
    x = jnp.asarray(0.3 * rng.standard_normal((3, 6)), jnp.float32)   # tanh well inside its range

    def loss_of(w, biases):
        h = x @ w
        for b in biases:
            h = jnp.tanh(h + b)
        return jnp.sum(h ** 2)

    tx = optax.adamw(1e-2, weight_decay=1e-2)
    want, state = start, tx.init(start)
    for _ in range(3):
        g = jax.grad(lambda p: loss_of(p['w'], [p[f'b{i}'] for i in range(4)]))(want)
        updates, state = tx.update(g, state, want)
        want = optax.apply_updates(want, updates)
    packed = stateopt.PackedParams(small)
    trained = {'big': {'w': big}, 'small': packed}
    opt = stateopt.AdamW(lr=1e-2, weight_decay=1e-2).register_trainable_weights(trained)
    for _ in range(3):
        grads = brainstate.transform.grad(
            lambda: loss_of(big.value, [small[f'b{i}'].value for i in range(4)]), grad_states=trained)()
        assert set(grads) == {'big', 'small'} and set(grads['small']) == {'float32'}
        opt.update(grads)
    assert_close_f32(big.value, want['w'], steps=3)
    for key, state in small.items():
        assert_close_f32(state.value, want[key], steps=3, err_msg=key)


def test_ema_and_forward_mode_see_the_packed_values():
    """An EMA of the packed States and a forward-mode derivative through them work on the
    values the States read."""
    w = brainstate.ParamState(jnp.array([0.0, 4.0]))
    b = brainstate.ParamState(jnp.array([2.0]))
    packed = stateopt.PackedParams({'w': w, 'b': b})
    ema = stateopt.EMA({'w': w, 'b': b}, decay=0.75)
    w.value = jnp.array([4.0, 0.0])
    ema.update()                                   # 0.75 * old + 0.25 * new
    assert_close_f32(ema.averages['w'].value, np.array([1.0, 3.0]))
    assert_close_f32(ema.averages['b'].value, np.array([2.0]))

    def loss():
        return jnp.sum(w.value ** 2) + b.value[0]

    jacobian = brainstate.transform.jacfwd(loss, grad_states=packed)()    # forward mode, per element
    assert_close_f32(jacobian['float32'], np.array([1.0, 8.0, 0.0]))     # buffer order: b, then w


def _trained_pair(case, steps: int, seed: int):
    """A packed and an unpacked optimizer of ``case`` on equal values, and the gradients ahead."""
    packed_states, plain_states = make_params(seed), make_params(seed)
    packed = stateopt.PackedParams(packed_states)
    packed_opt = case.make().register_trainable_weights(packed)
    plain_opt = case.make().register_trainable_weights(plain_states)
    grads = grad_sequence(SHAPES, 2 * steps, seed=seed)
    return packed, packed_states, packed_opt, plain_states, plain_opt, grads


@pytest.mark.parametrize('case', PACKABLE, ids=[case.id for case in PACKABLE])
def test_state_dicts_are_keyed_by_parameter_and_load_into_either_layout(case):
    """A packed optimizer's state dict has the layout of the same optimizer unpacked: it loads
    into one, which then steps as the packed one does, and the packed one loads it back."""
    packed, packed_states, packed_opt, plain_states, plain_opt, grads = _trained_pair(case, 3, seed=4)
    for g in grads[:3]:
        packed_opt.update(buffer_grads(packed, g))
    saved = packed_opt.state_dict()
    assert jax.tree.structure(saved) == jax.tree.structure(plain_opt.state_dict())
    for key, state in plain_states.items():
        state.value = jnp.asarray(packed_states[key].value)
    plain_opt.load_state_dict(saved)
    for g in grads[3:]:
        packed_opt.update(buffer_grads(packed, g))
        plain_opt.update({k: jnp.asarray(v) for k, v in g.items()})
    for key in SHAPES:
        assert_close_f32(packed_states[key].value, plain_states[key].value, steps=3, err_msg=case.id)
    back = plain_opt.state_dict()
    packed_opt.load_state_dict(back)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, dict(packed_opt.state_dict())),
                 jax.tree.map(np.asarray, dict(back)))


def test_a_state_dict_that_does_not_fit_the_packed_arrays_changes_nothing():
    packed = stateopt.PackedParams(make_params())
    opt = stateopt.Adam(lr=0.1).register_trainable_weights(packed)
    opt.update({'float32': jnp.ones(17)})
    good = opt.state_dict()
    before = jax.tree.map(np.asarray, opt.opt_state.value)
    missing = {**good, 'state': {'w': good['state']['w']}}
    wrong_shape = {**good, 'state': {**good['state'], 'b': {**good['state']['b'], 'exp_avg': jnp.zeros(4)}}}
    unknown = {**good, 'state': {**good['state'], 'b': {**good['state']['b'], 'velocity': jnp.zeros(5)}}}
    for bad, error, match in [(missing, KeyError, "state\\['b'\\] is missing"),
                              (wrong_shape, ValueError, "state\\['b'\\]\\['exp_avg'\\]"),
                              (unknown, KeyError, "unknown slots 'velocity'")]:
        with pytest.raises(error, match=match):
            opt.load_state_dict(bad)
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, opt.opt_state.value), before)


@pytest.mark.parametrize('settings', [dict(gradient_accumulation_steps=2), dict(master_dtype=jnp.float32)],
                         ids=['accumulation', 'master weights'])
def test_loop_and_master_entries_are_keyed_by_parameter_too(settings, tmp_path):
    dtype = jnp.bfloat16 if 'master_dtype' in settings else jnp.float32
    make = lambda: {k: brainstate.ParamState(jnp.asarray(v.value, dtype)) for k, v in make_params().items()}
    packed_states, plain_states = make(), make()
    packed = stateopt.PackedParams(packed_states)
    packed_opt = stateopt.AdamW(lr=0.1, **settings).register_trainable_weights(packed)
    plain_opt = stateopt.AdamW(lr=0.1, **settings).register_trainable_weights(plain_states)
    packed_opt.update({next(iter(packed)): jnp.ones(17, dtype)})
    stateopt.save_checkpoint(tmp_path / 'opt.msgpack', {'optimizer': packed_opt})
    stateopt.load_checkpoint(tmp_path / 'opt.msgpack', {'optimizer': plain_opt})
    saved, loaded = packed_opt.state_dict(), plain_opt.state_dict()
    entry = 'accumulation' if 'gradient_accumulation_steps' in settings else 'master_params'
    assert set(saved[entry] if entry == 'master_params' else saved[entry]['grads']) == {'w', 'b'}
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, dict(saved)),
                 jax.tree.map(np.asarray, dict(loaded)))


def test_packing_releases_the_arrays_it_replaces():
    """Once packed, the States hold no array of their own: only the buffer remains."""
    import gc
    import weakref

    states = {f's{i}': brainstate.ParamState(jnp.full((64, 64), float(i))) for i in range(5)}
    originals = [weakref.ref(state.value) for state in states.values()]
    stateopt.PackedParams(states)
    gc.collect()
    assert all(ref() is None for ref in originals)


@pytest.mark.parametrize('mode', ['eager', 'donating_jit'])
def test_packing_registered_states_is_refused_at_the_next_step(mode):
    """States packed after an optimizer registered them would no longer take its writes: its next
    step refuses, naming the key, and changes nothing."""
    states = make_params()
    opt = stateopt.Adam(lr=0.1).register_trainable_weights(states)
    step = opt.update if mode == 'eager' else stateopt.donating_jit(lambda g: opt.update(g))
    step({k: jnp.ones(s) for k, s in SHAPES.items()})
    stateopt.PackedParams(states)
    before = values(states), jax.tree.map(np.asarray, opt.opt_state.value), int(opt.step_count.value)
    with pytest.raises(TypeError, match="was packed by a stateopt.PackedParams after"):
        step({k: jnp.ones(s) for k, s in SHAPES.items()})
    after = values(states), jax.tree.map(np.asarray, opt.opt_state.value), int(opt.step_count.value)
    jax.tree.map(np.testing.assert_array_equal, after, before)
