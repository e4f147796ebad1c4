"""Slots of the optimizer state: owned by structure, named by declaration, old layouts migrated."""

import pathlib
import sys

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
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


#: Constructor arguments that give an optimizer all of its slots (a momentum buffer, AMSGrad's
#: maximum, ...); the others are built with their defaults.
_ALL_SLOTS = {'Lookahead': dict(base_optimizer=stateopt.Adam()), 'Adam': dict(amsgrad=True),
              'RMSprop': dict(momentum=0.9, centered=True), 'SGD': dict(momentum=0.9),
              'Adafactor': dict(beta1=0.9)}

#: The state-dict layout (version 2) of every optimizer: the slots of a matrix 'w', of a vector
#: 'b', and of the group. torch's names where torch has the optimizer. A change here breaks
#: every checkpoint written before it: bump LAYOUT_VERSION and migrate instead.
LAYOUT = {
    'SGD': ('momentum_buffer', 'momentum_buffer', 'count'),
    'Momentum': ('momentum_buffer', 'momentum_buffer', 'count'),
    'MomentumNesterov': ('momentum_buffer', 'momentum_buffer', 'count'),
    'Adam': ('exp_avg exp_avg_sq max_exp_avg_sq', 'exp_avg exp_avg_sq max_exp_avg_sq', 'count'),
    'AdamW': ('exp_avg exp_avg_sq', 'exp_avg exp_avg_sq', 'count'),
    'Adagrad': ('sum', 'sum', 'count'),
    'Adadelta': ('acc_delta square_avg', 'acc_delta square_avg', ''),
    'RMSprop': ('grad_avg momentum_buffer square_avg', 'grad_avg momentum_buffer square_avg', ''),
    'Adamax': ('exp_avg exp_inf', 'exp_avg exp_inf', 'count'),
    'Nadam': ('exp_avg exp_avg_sq', 'exp_avg exp_avg_sq', 'count mu_product'),
    'NAdam': ('exp_avg exp_avg_sq', 'exp_avg exp_avg_sq', 'count mu_product'),
    'RAdam': ('exp_avg exp_avg_sq', 'exp_avg exp_avg_sq', 'count'),
    'Rprop': ('prev step_factor', 'prev step_factor', ''),
    'Adafactor': ('exp_avg variance.col variance.row', 'exp_avg variance', 'count'),
    'Lamb': ('exp_avg exp_avg_sq', 'exp_avg exp_avg_sq', 'count'),
    'Lars': ('momentum_buffer', 'momentum_buffer', ''),
    'Lookahead': ('fast.exp_avg fast.exp_avg_sq slow', 'fast.exp_avg fast.exp_avg_sq slow',
                  'count fast.count'),
    'Yogi': ('exp_avg exp_avg_sq', 'exp_avg exp_avg_sq', 'count'),
    'LBFGS': ('old_dirs old_stps prev_grad prev_params', 'old_dirs old_stps prev_grad prev_params',
              'count ro'),
    'AdaBelief': ('exp_avg exp_avg_var', 'exp_avg exp_avg_var', 'count'),
    'Lion': ('exp_avg', 'exp_avg', 'count'),
    'SM3': ('accumulators.0 accumulators.1 momentum_buffer', 'accumulators.0 momentum_buffer', ''),
    'Novograd': ('exp_avg exp_avg_sq', 'exp_avg exp_avg_sq', 'count'),
    'Fromage': ('momentum_buffer', 'momentum_buffer', ''),
    'Muon': ('momentum_buffer', 'exp_avg exp_avg_sq', 'adam_count muon_count ns_coeffs'),
    'ScheduleFreeSGD': ('z', 'z', 'count max_lr weight_sum'),
    'ScheduleFreeAdamW': ('exp_avg_sq z', 'exp_avg_sq z', 'base_count count max_lr weight_sum'),
    'Prodigy': ('exp_avg exp_avg_sq grad_sum params0', 'exp_avg exp_avg_sq grad_sum params0',
                'count estim_lr numerator_weighted'),
    'ADOPT': ('exp_avg exp_avg_sq', 'exp_avg exp_avg_sq', 'count'),
    'Adan': ('exp_avg exp_avg_diff exp_avg_sq prev_grad', 'exp_avg exp_avg_diff exp_avg_sq prev_grad',
             'count'),
    'NAdamW': ('exp_avg exp_avg_sq', 'exp_avg exp_avg_sq', 'count'),
    'Sophia': ('exp_avg hessian', 'exp_avg hessian', 'count rng_key'),
}


@pytest.mark.parametrize('name', stateopt.OPTIMIZERS)
def test_every_optimizer_keys_its_state_by_the_declared_names(name):
    cls = getattr(stateopt, name)
    states = {'w': brainstate.ParamState(jnp.ones((2, 3))), 'b': brainstate.ParamState(jnp.ones(3))}
    state_dict = cls(**_ALL_SLOTS.get(name, {})).register_trainable_weights(states).state_dict()
    found = tuple(' '.join(sorted(slots)) for slots in (
        state_dict['state'].get('w', {}), state_dict['state'].get('b', {}), state_dict['group_state'][0]))
    assert found == LAYOUT[name]


def test_the_layout_table_covers_the_catalogue():
    assert sorted(LAYOUT) == sorted(stateopt.OPTIMIZERS)


@pytest.mark.parametrize('case', CASES, ids=[case.id for case in CASES])
def test_every_slot_of_every_optimizer_is_declared(case):
    opt = case.make().register_trainable_weights(_params({'w': (2, 3), 'b': (3,)}))
    declared = opt._declared_slots(opt.param_groups[0])
    state_dict = opt.state_dict()
    keys = [key for slots in [*state_dict['state'].values(), *state_dict['group_state']] for key in slots]
    undeclared = [key for key in keys
                  if not any(key == name or key.startswith(name + '.') for name in declared)]
    assert not undeclared, f'{type(opt).__name__} does not declare the slots {undeclared}'
    assert set(opt._never_negative(opt.param_groups[0])) <= set(declared)


class _WrappedLamb(stateopt.Lamb):
    """Lamb with its algorithm wrapped in one more chain, its slots declared at their new paths."""

    slots = {name: f'1.{path}' for name, path in stateopt.Lamb.slots.items()}

    @classmethod
    def _algorithm(cls, hp):
        return optax.chain(optax.identity(), stateopt.Lamb._algorithm(hp))


def test_rearranging_an_algorithm_state_keeps_its_checkpoint_keys():
    states = _params({'w': (2, 3)})
    lamb = stateopt.Lamb().register_trainable_weights(states)
    lamb.update(_grads(states, 0))
    wrapped = _WrappedLamb().register_trainable_weights(_params({'w': (2, 3)}))
    with pytest.warns(UserWarning, match='slots fit, but another algorithm wrote them'):
        wrapped.load_state_dict(lamb.state_dict(), strict=False)   # the keys of one fit the other
    assert_close_f32(wrapped.state_dict()['state'], lamb.state_dict()['state'], steps=1)
    assert sorted(wrapped.state_dict()['state']['w']) == ['exp_avg', 'exp_avg_sq']
