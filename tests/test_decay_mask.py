"""Weight-decay masks: per group, in State dicts of arrays, in state dicts and checkpoints, and refusals.

The masked trajectories of every optimizer in the catalogue are checked against the reference rules
in test_optimizer.py::test_a_decay_mask_leaves_the_masked_arrays_undecayed_and_still_updated.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close_f32, assert_same, snapshot

import stateopt


def linear_states(seed=0):
    """A brainstate Linear's States: one State ``weight`` holding {'weight': matrix, 'bias': vector}."""
    brainstate.random.seed(seed)
    return brainstate.nn.Linear(3, 2).states(brainstate.ParamState)


def zero_grads(states):
    return {key: jax.tree.map(jnp.zeros_like, state.value) for key, state in states.items()}


@pytest.mark.parametrize('mask', [stateopt.decay_matrices_only,
                                  {('weight',): {'weight': True, 'bias': False}}],
                         ids=['decay_matrices_only', 'dict inside a State'])
def test_arrays_inside_one_state_are_masked_one_by_one(mask):
    # with zero gradients AdamW's step is the decay alone: p * (1 - lr * weight_decay) where decayed
    states = linear_states()
    before = jax.tree.map(np.asarray, states[('weight',)].value)
    opt = stateopt.AdamW(lr=0.1, weight_decay=0.5, weight_decay_mask=mask).register_trainable_weights(states)
    opt.update(zero_grads(states))
    after = states[('weight',)].value
    assert_close_f32(after['weight'], before['weight'] * (1 - 0.1 * 0.5))
    assert_same(after['bias'], before['bias'])


def test_each_group_has_its_own_mask():
    w, b = brainstate.ParamState(jnp.ones((2, 2))), brainstate.ParamState(jnp.ones(2))
    opt = stateopt.SGD(lr=0.1, weight_decay=0.5, weight_decay_mask={'w': False})
    opt.register_trainable_weights({'w': w})
    opt.add_param_group({'b': b}, weight_decay_mask=None)          # this group decays everything
    opt.update({'w': jnp.zeros((2, 2)), 'b': jnp.zeros(2)})
    assert_same(w.value, jnp.ones((2, 2)))
    assert_close_f32(b.value, jnp.full(2, 1 - 0.1 * 0.5))
    assert opt.weight_decay_mask == {'w': False} and opt.param_groups[1]['weight_decay_mask'] is None


def test_a_dict_mask_missing_an_entry_is_refused_at_registration_and_nothing_changes():
    w, b = brainstate.ParamState(jnp.ones((2, 2))), brainstate.ParamState(jnp.ones(2))
    opt = stateopt.AdamW(weight_decay_mask={'w': True}).register_trainable_weights({'w': w})
    before = snapshot(opt, {'w': w})
    with pytest.raises(ValueError, match="weight_decay_mask has no entry for 'b'"):
        opt.register_trainable_weights({'w': w, 'b': b})
    assert_same(snapshot(opt, {'w': w}), before)
    assert [group.names for group in opt.param_groups] == [['w']]


BAD = [   # (mask, message)
    ({'w': 1}, 'weight_decay_mask must be None, a function'),
    ('matrices', 'weight_decay_mask must be None, a function'),
]


@pytest.mark.parametrize('mask, message', BAD, ids=['not bool', 'a string'])
def test_bad_masks_are_refused_by_the_constructor_naming_the_fix(mask, message):
    with pytest.raises(ValueError, match=message):
        stateopt.AdamW(weight_decay_mask=mask)


def test_a_mask_that_reads_the_numbers_is_refused_at_registration_and_nothing_changes():
    # the compiled step knows shapes and dtypes only: refused when the States register, not at a step
    w, b = brainstate.ParamState(jnp.ones((2, 2))), brainstate.ParamState(jnp.ones(2))
    opt = stateopt.AdamW(weight_decay_mask=lambda name, value: jnp.sum(value) > 0)
    with pytest.raises(ValueError, match="computed from the parameter's numbers"):
        opt.register_trainable_weights({'w': w})
    assert opt.param_groups[0].names == [] and int(opt.step_count) == 0
    masked = stateopt.AdamW(weight_decay_mask={'w': True}).register_trainable_weights({'w': w})
    before = snapshot(masked, {'w': w})
    with pytest.raises(ValueError, match="computed from the parameter's numbers"):
        masked.add_param_group({'b': b}, weight_decay_mask=lambda name, value: value[0] > 0)
    assert_same(snapshot(masked, {'w': w}), before)
    assert [group.names for group in masked.param_groups] == [['w']]


def test_optimizers_without_weight_decay_say_so_not_that_they_decay_inside():
    with pytest.raises(TypeError, match="unexpected keyword argument 'weight_decay_mask'"):
        stateopt.Rprop(weight_decay_mask=stateopt.decay_matrices_only)


def test_masks_go_through_state_dicts_and_checkpoints(tmp_path):
    runs = []
    for _ in range(2):
        states = linear_states()
        opt = stateopt.AdamW(lr=0.1, weight_decay=0.5,
                             weight_decay_mask={('weight',): {'weight': True, 'bias': False}})
        runs.append((opt.register_trainable_weights(states), states))
    (first, first_states), (second, second_states) = runs
    grads = {key: jax.tree.map(jnp.ones_like, state.value) for key, state in first_states.items()}
    first.update(grads)
    stateopt.save_checkpoint(tmp_path / 'run', {'params': first_states, 'optimizer': first})
    stateopt.load_checkpoint(tmp_path / 'run', {'params': second_states, 'optimizer': second})
    first.update(grads)
    second.update(grads)
    assert_same(first_states[('weight',)].value, second_states[('weight',)].value)
    other = stateopt.AdamW(lr=0.1, weight_decay=0.5).register_trainable_weights(linear_states())
    with pytest.raises(ValueError, match="'weight_decay_mask'.*fixed when a group is created"):
        other.load_state_dict(first.state_dict())
