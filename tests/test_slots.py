"""Slots of the optimizer state: owned by structure, named by declaration, old layouts migrated."""

import pathlib
import sys

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from catalogue import CASES
from conftest import assert_close_f32

import stateopt

sys.path.insert(0, str(pathlib.Path(__file__).parent / 'fixtures'))
import make_state_dicts_v1 as layout1  # noqa: E402

LAYOUT1_FILE = pathlib.Path(__file__).parent / 'fixtures' / 'state_dicts_v1.msgpack'

#: Parameter names that are also keys inside some optimizer's state (Muon's 'adam' and 'muon',
#: optax's 'mu' and 'nu', chains' '0', NamedTuple fields), with shapes that send Muon's 'adam' to
#: its Newton-Schulz branch and its 'muon' to its Adam branch.
CONFUSING = {'adam': (2, 3), 'muon': (3,), 'mu': (3,), 'nu': (2, 2), 'count': (2,), '0': (1,),
             'inner_states': (2,), 'exp_avg': (3,), 'momentum_buffer': (2,), 'trace': (2,), 'slow': (2,),
             'fast_state': (2,), 'z': (2,), 'variance': (2, 2)}


def _params(names: dict) -> dict:
    rng = np.random.default_rng(0)
    return {name: brainstate.ParamState(jnp.asarray(rng.standard_normal(shape), jnp.float32))
            for name, shape in names.items()}


def _grads(states: dict, step: int) -> dict:
    return {name: jnp.full(state.value.shape, 0.1 * (step + 1), jnp.float32) - 0.05 * state.value
            for name, state in states.items()}


@pytest.mark.parametrize('case', CASES, ids=[case.id for case in CASES])
def test_parameters_named_like_keys_of_the_state_keep_their_own_slots(case):
    plain_names = {f'p{i:02d}': shape for i, shape in enumerate(CONFUSING.values())}
    runs = []
    for names in (CONFUSING, plain_names):
        states = _params(names)
        opt = case.make().register_trainable_weights(states)
        for step in range(2):
            opt.update(_grads(states, step))
        runs.append((states, opt, opt.state_dict()))
    (states, opt, confusing), (_, _, plain) = runs
    renamed = dict(zip(CONFUSING, plain_names))     # sorted alike: each name pairs with its twin
    assert sorted(confusing['state']) == sorted(n for n in CONFUSING if renamed[n] in plain['state'])
    for name, slots in confusing['state'].items():
        twin = plain['state'][renamed[name]]
        assert sorted(slots) == sorted(twin), name
        assert_close_f32(slots, twin, steps=2, err_msg=name)
    assert_close_f32(confusing['group_state'], plain['group_state'], steps=2)
    # a parameter moved to a new group keeps its slots, whatever it is called
    before = jax.tree.map(np.asarray, confusing['state'].get('muon', {}))
    opt.add_param_group({'muon': states['muon']})
    after = opt.state_dict()['state'].get('muon', {})
    assert sorted(after) == sorted(before)
    for slot, value in before.items():
        np.testing.assert_array_equal(np.asarray(after[slot]), value, err_msg=slot)


@pytest.mark.parametrize('name', list(layout1.LAYOUT1))
def test_a_layout_1_state_dict_loads_under_the_declared_names(name):
    fresh = getattr(stateopt, name)(**layout1.LAYOUT1[name])
    fresh.register_trainable_weights(layout1.params())
    stateopt.load_checkpoint(str(LAYOUT1_FILE), {name: fresh}, strict=False)
    trained = getattr(stateopt, name)(**layout1.LAYOUT1[name])
    trained.register_trainable_weights(layout1.params())
    for step in range(layout1.STEPS):
        trained.update(layout1.grads(step))
    loaded, expected = fresh.state_dict(), trained.state_dict()
    assert loaded['version'] == 2 and int(loaded['step_count']) == layout1.STEPS
    assert {k: sorted(v) for k, v in loaded['state'].items()} == \
        {k: sorted(v) for k, v in expected['state'].items()}
    # stateopt of another commit wrote the file: the same arithmetic, maybe other compiled code
    assert_close_f32(loaded['state'], expected['state'], steps=layout1.STEPS)
    assert_close_f32(loaded['group_state'], expected['group_state'], steps=layout1.STEPS)


def test_a_state_dict_of_a_newer_layout_is_refused():
    opt = stateopt.Adam().register_trainable_weights(_params({'w': (2,)}))
    state_dict = opt.state_dict()
    before = jax.tree.map(np.asarray, state_dict)
    with pytest.raises(ValueError,
                       match='version is the int 3; this stateopt reads state-dict layouts 1 to 2'):
        opt.load_state_dict({**state_dict, 'version': 3})
    jax.tree.map(np.testing.assert_array_equal, opt.state_dict(), before)
