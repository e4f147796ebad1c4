"""UniqueStateManager and OptimState."""

import brainstate
import jax
import jax.numpy as jnp
import pytest
from conftest import MLP

import stateopt


def test_unique_by_identity_and_first_key_wins():
    w, b = brainstate.ParamState(jnp.ones(3)), brainstate.ParamState(jnp.zeros(2))
    manager = stateopt.UniqueStateManager({('layer', 'w'): w, ('alias', 'w'): w, ('layer', 'b'): b})
    assert manager.states == (w, b) or set(manager.states) == {w, b}
    assert len(manager) == 2
    assert manager.path_of(w) in ((('alias', 'w'),), (('layer', 'w'),))
    assert w in manager and brainstate.ParamState(jnp.ones(1)) not in manager


def test_tuple_keys_stay_tuple_keys_and_nesting_is_kept():
    model = MLP()
    manager = stateopt.UniqueStateManager(model.states(brainstate.ParamState))
    assert set(manager.to_pytree()) == {('l1', 'weight'), ('head', 'weight')}
    nested = stateopt.UniqueStateManager({'enc': {'w': brainstate.ParamState(jnp.ones(2))}})
    assert list(nested.to_pytree()) == ['enc'] and list(nested.to_pytree()['enc']) == ['w']
    values = nested.to_pytree_value()
    assert values['enc']['w'].tolist() == [1.0, 1.0]
    assert nested.names == ('enc.w',)


def test_merge_with_adds_only_new_states_and_keeps_order():
    a, b, c = (brainstate.ParamState(jnp.ones(1)) for _ in range(3))
    manager = stateopt.UniqueStateManager({'a': a, 'b': b})
    assert manager.plan_merge({'b': b, 'c': c, 'again': a}) == [(('c',), c)]
    assert manager.merge_with({'b': b, 'c': c, 'again': a}) is manager   # braintools returns the manager
    assert manager.states == (a, b, c)


def test_two_states_under_one_key_raise_and_nothing_is_registered():
    a, b, c = (brainstate.ParamState(jnp.ones(1)) for _ in range(3))
    manager = stateopt.UniqueStateManager({'a': a})
    with pytest.raises(KeyError, match="'a'"):
        manager.merge_with({'c': c, 'a': b})
    assert manager.states == (a,)


def test_keys_naming_the_same_parameter_raise():
    manager = stateopt.UniqueStateManager({('l1', 'weight'): brainstate.ParamState(jnp.ones(1))})
    with pytest.raises(KeyError, match="'l1.weight'"):
        manager.merge_with({'l1.weight': brainstate.ParamState(jnp.ones(1))})


def test_nested_keys_hiding_each_other_raise():
    manager = stateopt.UniqueStateManager({'a': {'b': brainstate.ParamState(jnp.ones(1))}})
    with pytest.raises(KeyError, match='nested'):
        manager.merge_with({'a': brainstate.ParamState(jnp.ones(1))})
    with pytest.raises(KeyError, match='nested'):
        manager.merge_with({'a': {'b': {'c': brainstate.ParamState(jnp.ones(1))}}})


def test_non_states_are_refused_with_their_key():
    with pytest.raises(TypeError, match="'x'"):
        stateopt.UniqueStateManager({'x': jnp.ones(2)})
    with pytest.raises(TypeError, match='single State'):
        stateopt.UniqueStateManager(brainstate.ParamState(jnp.ones(2)))


def test_optim_state_is_a_long_term_state():
    state = stateopt.OptimState(jnp.zeros(2))
    assert isinstance(state, brainstate.LongTermState)
    assert not isinstance(state, brainstate.ParamState)


def test_param_name():
    assert stateopt.param_name((('l1', 'weight'),)) == 'l1.weight'
    assert stateopt.param_name(('a', 0, 'b')) == 'a.0.b'


def test_braintools_api_of_the_manager():
    w, b, t = (brainstate.ParamState(jnp.full(2, float(i))) for i in range(3))
    manager = stateopt.UniqueStateManager(pytree={('l1', 'weight'): w, ('l2', 'tied'): w, ('l1', 'bias'): b})
    assert manager.num_unique_states == len(manager) == 2
    assert manager.unique_paths == [(('l1', 'bias'),), (('l1', 'weight'),)]
    assert manager.unique_states == [b, w]
    assert manager.get_flattened() == [((('l1', 'bias'),), b), ((('l1', 'weight'),), w)]
    assert list(manager.to_dict()) == ['l1.bias', 'l1.weight'] and manager.to_dict()['l1.weight'] is w
    assert {k: v.tolist() for k, v in manager.to_dict_value().items()} == {'l1.bias': [1.0, 1.0],
                                                                           'l1.weight': [0.0, 0.0]}
    # a path as a key tuple, the bare tuple key, a JAX key path or the name
    jax_path = (jax.tree_util.DictKey(('l1', 'weight')),)
    for path in ((('l1', 'weight'),), ('l1', 'weight'), jax_path, 'l1.weight'):
        assert manager.get_state_by_path(path) is w, path
    assert manager.get_state_by_path('nope') is None
    assert manager.update_state('l1.weight', t) is True and manager.get_state_by_path('l1.weight') is t
    assert t in manager and w not in manager
    assert manager.update_state('nope', w) is False
    with pytest.raises(ValueError, match='already registered'):
        manager.update_state('l1.weight', b)
    assert list(manager.make_unique({'x': b, 'y': b})) == ['x'] and manager.unique_states == [b]
    manager.clear()
    assert len(manager) == 0 and manager.to_pytree() == {}
    with pytest.raises(TypeError, match='not both'):
        stateopt.UniqueStateManager({'a': w}, pytree={'a': w})
