"""ZeRO-1, ``state_sharding=``: run by test_zero.py in a pytest of its own with 8 fake CPU devices
(their number is fixed before jax starts). Imported by the main run's doctest collection, it is inert:
every test takes the ``mesh`` fixture, which skips where there are fewer than 8 devices."""

import re

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MODES, assert_close_f32, assert_same, run_in_mode, snapshot, values
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import stateopt

#: Parameters of a data-parallel model: replicated over the 8 devices. 'odd' has no dimension that 8
#: divides, so its state stays replicated; the others' moments are split in eight.
SHAPES = {'w': (64, 32), 'b': (32,), 'odd': (3,)}
EIGHTH = {'w': (8, 32), 'b': (4,), 'odd': (3,)}


@pytest.fixture
def mesh():
    if len(jax.devices()) < 8:
        pytest.skip('run by test_zero.py, with 8 fake devices')
    return Mesh(np.array(jax.devices()[:8]), ('data',))


def replicated(mesh, seed=0, dtype=jnp.float32, shapes=SHAPES) -> dict:
    rng = np.random.default_rng(seed)
    return {key: brainstate.ParamState(jax.device_put(jnp.asarray(rng.standard_normal(shape), dtype),
                                                      NamedSharding(mesh, P())))
            for key, shape in shapes.items()}


def unplaced(seed=0, dtype=jnp.float32, shapes=SHAPES) -> dict:
    rng = np.random.default_rng(seed)
    return {key: brainstate.ParamState(jnp.asarray(rng.standard_normal(shape), dtype))
            for key, shape in shapes.items()}


def gradients(n: int, dtype=jnp.float32, shapes=SHAPES) -> list:
    rng = np.random.default_rng(1)
    return [{key: jnp.asarray(rng.standard_normal(shape), dtype) for key, shape in shapes.items()}
            for _ in range(n)]


def shard_shapes(array) -> set:
    return {shard.data.shape for shard in array.addressable_shards}


@pytest.mark.parametrize('mode', MODES)
def test_each_device_holds_an_eighth_of_the_moments_and_the_numbers_stay(mesh, mode):
    params = replicated(mesh)
    opt = stateopt.AdamW(lr=0.05, weight_decay=0.1, grad_clip_norm=1.0, state_sharding='data')
    opt.register_trainable_weights(params)
    run_in_mode(opt, gradients(4), mode)
    state = opt.state_dict()['state']
    for key in SHAPES:
        for slot in ('exp_avg', 'exp_avg_sq'):
            assert shard_shapes(state[key][slot]) == {EIGHTH[key]}, (key, slot)
        assert params[key].value.sharding.spec == P(), key     # the parameters keep theirs
        assert shard_shapes(params[key].value) == {SHAPES[key]}
    held = sum(shard.data.nbytes for key in SHAPES for slot in ('exp_avg', 'exp_avg_sq')
               for shard in state[key][slot].addressable_shards if shard.device == jax.devices()[0])
    assert held == 4 * 2 * sum(np.prod(EIGHTH[key]) for key in SHAPES)
    reference = unplaced()
    plain = stateopt.AdamW(lr=0.05, weight_decay=0.1, grad_clip_norm=1.0)
    plain.register_trainable_weights(reference)
    run_in_mode(plain, gradients(4), 'eager')
    # the sharded step sums the global norm's squares in another order: float32 rounding of 4 steps
    assert_close_f32(values(params), values(reference), steps=4)
    assert_close_f32(jax.tree.map(np.asarray, state), jax.tree.map(np.asarray, plain.state_dict()['state']),
                     steps=4)


def test_the_update_gathers_no_more_than_each_parameter(mesh):
    """Under ZeRO-1 a step gathers each parameter's new value once (it is replicated), nothing larger
    and no moment: the all-gathers of the compiled step are at most one per parameter array."""
    from stateopt._donation import RAW
    params = replicated(mesh)
    opt = stateopt.AdamW(lr=0.05, state_sharding='data').register_trainable_weights(params)
    opt.update(gradients(1)[0])
    plan = opt._get_plan()
    args = (tuple(RAW(s) for s in plan.states), gradients(1)[0], jax.tree.leaves(RAW(opt.opt_state)),
            tuple(RAW(g._hyper) for g in opt._groups), RAW(opt.step_count), {}, {}, ())
    text = plan.compiled.lower(*args).compile().as_text()
    gathered = [tuple(int(d) for d in dims.split(',') if d)
                for dims in re.findall(r'= f32\[([\d,]*)\]\S* all-gather(?:-start)?\(', text)]
    # w's and b's updates (their moments are split); 'odd' is computed whole on every device
    assert SHAPES['w'] in gathered and len(gathered) <= 2, gathered
    assert set(gathered) <= {SHAPES['w'], SHAPES['b']}, gathered


def test_masters_and_accumulators_are_split_as_the_moments(mesh):
    params = replicated(mesh, dtype=jnp.bfloat16)
    settings = dict(lr=0.05, master_dtype=jnp.float32, gradient_accumulation_steps=2)
    opt = stateopt.AdamW(**settings, state_sharding='data').register_trainable_weights(params)
    grads = gradients(4, jnp.bfloat16)
    run_in_mode(opt, grads[:3], 'donating_jit')
    for position, key in enumerate(sorted(SHAPES)):
        master, = opt.master_params.value[position]
        accumulated = opt.accumulated_grads.value[position]
        assert shard_shapes(master) == {EIGHTH[key]}, key
        assert shard_shapes(accumulated) == {EIGHTH[key]}, key
        assert params[key].value.sharding.spec == P()
    run_in_mode(opt, grads[3:], 'eager')
    reference = unplaced(dtype=jnp.bfloat16)
    plain = stateopt.AdamW(**settings).register_trainable_weights(reference)
    run_in_mode(plain, grads, 'eager')
    # masters: float32 rounding of 2 applied steps; the bf16 parameters are the masters rounded, so
    # an ulp of float32 apart may round to neighbouring bf16 values: compare the masters
    assert_close_f32([np.asarray(m) for m, in opt.master_params.value],
                     [np.asarray(m) for m, in plain.master_params.value], steps=2)


def test_param_groups_each_have_their_own_and_a_function_places_anything(mesh):
    params = replicated(mesh)
    opt = stateopt.Adam(lr=0.05, state_sharding='data').register_trainable_weights({'w': params['w']})
    seen = []

    def by_name(name, value):
        seen.append((name, value.shape))
        return NamedSharding(mesh, P('data')) if name == 'b' else None

    opt.add_param_group({'b': params['b'], 'odd': params['odd']}, state_sharding=by_name)
    assert set(seen) == {('b', (32,)), ('odd', (3,))}
    state = opt.state_dict()['state']
    assert state['w']['exp_avg'].sharding.spec == P('data')    # 'data': w's first dimension
    assert state['b']['exp_avg'].sharding.spec == P('data')    # what the function returned
    assert state['odd']['exp_avg'].sharding.spec == P()        # None: as its parameter
    assert [group['state_sharding'] for group in opt.param_groups] == ['data', by_name]


def test_a_function_must_return_a_sharding_that_fits(mesh):
    params = replicated(mesh)
    other = Mesh(np.array(jax.devices()[:4]), ('data',))
    answers = {
        'a string': (lambda name, value: 'data', TypeError, 'must return a jax.sharding.Sharding'),
        'other devices': (lambda name, value: NamedSharding(other, P()), ValueError, 'other devices'),
        'does not fit': (lambda name, value: NamedSharding(mesh, P(None, 'data')), ValueError,
                         'cannot shard an array of shape'),
    }
    for what, (function, error, message) in answers.items():
        opt = stateopt.Adam(lr=0.1).register_trainable_weights({'w': params['w']})
        before = snapshot(opt, {'w': params['w']})
        with pytest.raises(error, match=message):
            opt.add_param_group({'b': params['b']}, state_sharding=function)
        assert len(opt.param_groups) == 1, what
        assert_same(snapshot(opt, {'w': params['w']}), before)


def test_an_axis_the_mesh_lacks_or_no_mesh_is_refused_and_nothing_changes(mesh):
    params = replicated(mesh)
    opt = stateopt.Adam(lr=0.1, state_sharding='model')
    with pytest.raises(ValueError, match="state_sharding='model' names no axis.*'data'"):
        opt.register_trainable_weights(params)
    assert opt.param_groups[0]['params'] == [] or len(opt.param_groups[0]['params']) == 0
    with pytest.raises(ValueError, match="the parameters are not on one"):
        stateopt.Adam(state_sharding='data').register_trainable_weights(unplaced())
    with pytest.raises(ValueError, match="state_sharding must be None"):
        stateopt.Adam(state_sharding=3)


def test_moving_parameters_into_a_zero_group_splits_their_moments(mesh):
    params = replicated(mesh)
    opt = stateopt.Adam(lr=0.05).register_trainable_weights(params)
    run_in_mode(opt, gradients(2), 'eager')
    before = jax.tree.map(np.asarray, opt.state_dict()['state'])
    assert opt.state_dict()['state']['w']['exp_avg'].sharding.spec == P()
    opt.add_param_group({'w': params['w']}, state_sharding='data')
    state = opt.state_dict()['state']
    assert shard_shapes(state['w']['exp_avg']) == {EIGHTH['w']}
    assert_same(jax.tree.map(np.asarray, state), before)      # moved, not changed


@pytest.mark.parametrize('saved_with, loaded_with', [('data', None), (None, 'data'), ('data', 'unplaced')])
def test_a_state_dict_loads_onto_any_layout_exactly(mesh, saved_with, loaded_with):
    source = replicated(mesh)
    opt = stateopt.AdamW(lr=0.05, state_sharding=saved_with).register_trainable_weights(source)
    run_in_mode(opt, gradients(3), 'eager')
    saved = jax.tree.map(np.asarray, opt.state_dict())
    target = unplaced(seed=5) if loaded_with == 'unplaced' else replicated(mesh, seed=5)
    setting = None if loaded_with == 'unplaced' else loaded_with
    fresh = stateopt.AdamW(lr=0.05, state_sharding=setting).register_trainable_weights(target)
    shardings = jax.tree.map(lambda leaf: leaf.sharding, fresh.opt_state.value)
    fresh.load_state_dict(saved)
    assert_same(jax.tree.map(np.asarray, fresh.state_dict()), saved)
    assert jax.tree.map(lambda leaf: leaf.sharding, fresh.opt_state.value) == shardings


@pytest.mark.parametrize('mode', ['eager', 'jit'])
def test_an_ema_keeps_its_averages_where_the_parameters_are(mesh, mode):
    params = replicated(mesh)
    params['w'].value = jax.device_put(params['w'].value, NamedSharding(mesh, P('data')))
    ema = stateopt.EMA(params, decay=0.5)
    update = ema.update if mode == 'eager' else brainstate.transform.jit(ema.update)
    for _ in range(2):
        update()
    for key, average in ema.state_dict()['averages'].items():
        assert average.sharding == params[key].value.sharding, key
    assert ema.count.value.sharding == NamedSharding(mesh, P())      # not on one device
    assert int(ema.count.value) == 2
