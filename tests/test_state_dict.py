"""state_dict / load_state_dict: keyed by names, validated, all-or-nothing."""

import copy

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from catalogue import grad_sequence
from conftest import SHAPES, assert_same, make_params, snapshot

import stateopt


def trained(cls=stateopt.Adam, **kwargs):
    states = make_params()
    opt = cls(**{'lr': 0.01, **kwargs}).register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, lr=0.003)
    for g in grad_sequence(SHAPES, 3):
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
    return opt, states


def test_layout_is_keyed_by_parameter_names():
    opt, _ = trained(amsgrad=True)
    sd = opt.state_dict()
    assert sd['param_groups'][0]['params'] == ['w'] and sd['param_groups'][1]['params'] == ['b']
    assert set(sd['state']) == {'w', 'b'}
    assert set(sd['state']['w']) == {'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'}
    assert int(sd['step_count']) == 3 and int(sd['group_state'][1]['count']) == 3
    assert float(sd['param_groups'][1]['lr']) == pytest.approx(0.003)
    assert sd['param_groups'][0]['amsgrad'] is True and sd['lr_scheduler'] is None
    assert 'params' not in sd['state']['w']      # no copy of the parameters


def corrupt(path, value):
    def apply(sd):
        node = sd
        for key in path[:-1]:
            node = node[key]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value(node[path[-1]]) if callable(value) else value
        return sd
    return apply


BAD = {
    'moment shape': (corrupt(('state', 'w', 'exp_avg'), lambda a: np.zeros((4, 3), np.float32)),
                     ValueError, r"state\['w'\]\['exp_avg'\].*shape"),
    'moment dtype': (corrupt(('state', 'w', 'exp_avg'), lambda a: np.asarray(a, np.float64)),
                     ValueError, r"state\['w'\]\['exp_avg'\].*dtype"),
    'missing slot': (corrupt(('state', 'b', 'exp_avg_sq'), KeyError), KeyError, "exp_avg_sq"),
    'unknown slot': (corrupt(('state', 'b', 'extra'), np.zeros(5, np.float32)), KeyError, "extra"),
    'missing param': (corrupt(('state', 'w'), KeyError), KeyError, "'w'"),
    'unknown param': (corrupt(('state', 'z'), {'exp_avg': np.zeros(1)}), KeyError, "'z'"),
    'group names': (corrupt(('param_groups', 1, 'params'), ['c']), ValueError, r"param_groups\[1\]"),
    'group count': (corrupt(('param_groups',), lambda g: g[:1]), ValueError, '1 param groups'),
    'negative lr': (corrupt(('param_groups', 0, 'lr'), -1.0), ValueError, 'lr'),
    'nan eps': (corrupt(('param_groups', 0, 'eps'), float('nan')), ValueError, 'eps'),
    'betas length': (corrupt(('param_groups', 0, 'betas'), (0.9,)), ValueError, 'betas'),
    'static flag': (corrupt(('param_groups', 0, 'amsgrad'), True), ValueError, 'amsgrad'),
    'missing hyper': (corrupt(('param_groups', 0, 'weight_decay'), KeyError), KeyError, 'weight_decay'),
    'unknown hyper': (corrupt(('param_groups', 0, 'rho'), 0.9), KeyError, 'rho'),
    'count shape': (corrupt(('step_count',), np.zeros(2, np.int32)), ValueError, 'step_count'),
    'count dtype': (corrupt(('step_count',), np.float32(3)), ValueError, 'step_count'),
    'group state': (corrupt(('group_state', 0, 'count'), KeyError), KeyError, 'count'),
    'no step count': (corrupt(('step_count',), KeyError), KeyError, 'step_count'),
    'unknown entry': (corrupt(('extra',), 1), KeyError, 'extra'),
    'scheduler': (corrupt(('lr_scheduler',), {'last_epoch': 1}), ValueError, 'scheduler'),
}


@pytest.mark.parametrize('bad', list(BAD), ids=list(BAD))
def test_bad_state_dicts_raise_and_change_nothing(bad):
    opt, states = trained()
    sd = jax.tree.map(np.asarray, opt.state_dict())
    sd['param_groups'] = [dict(g) for g in sd['param_groups']]
    sd['state'] = {k: dict(v) for k, v in sd['state'].items()}
    edit, error, match = BAD[bad]
    target, target_states = trained(lr=0.5)
    target.update({k: jnp.ones(s) for k, s in SHAPES.items()})
    before = snapshot(target, target_states)
    with pytest.raises(error, match=match):
        target.load_state_dict(edit(copy.deepcopy(sd)))
    assert_same(snapshot(target, target_states), before)


def test_state_dict_of_another_optimizer_is_refused():
    adam, _ = trained()
    sgd, states = trained(stateopt.SGD, momentum=0.9)
    before = snapshot(sgd, states)
    with pytest.raises((KeyError, ValueError)):
        sgd.load_state_dict(adam.state_dict())
    with pytest.raises(TypeError):
        sgd.load_state_dict([1, 2])
    assert_same(snapshot(sgd, states), before)


def test_loading_restores_hyperparameters_and_lrs():
    opt, _ = trained()
    opt.param_groups[1]['lr'] = 0.0125
    opt.param_groups[0]['betas'] = (0.5, 0.75)
    target, _ = trained()
    target.load_state_dict(opt.state_dict())
    assert target.get_last_lr() == [0.01, 0.0125]
    assert target.param_groups[0]['betas'] == pytest.approx((0.5, 0.75))
    assert_same(target.opt_state.value, opt.opt_state.value)


def test_model_params_round_trip(mlp):
    params = mlp.states(brainstate.ParamState)
    opt = stateopt.SGD(lr=0.1, momentum=0.9).register_trainable_weights(params)
    grads = brainstate.transform.grad(lambda: jnp.sum(mlp(jnp.ones((2, 4))) ** 2), grad_states=params)()
    opt.update(grads)
    sd = opt.state_dict()
    assert set(sd['state']) == {'l1.weight', 'head.weight'}
    assert set(sd['state']['l1.weight']) == {'momentum_buffer.weight', 'momentum_buffer.bias'}
    fresh = stateopt.SGD(lr=0.1, momentum=0.9).register_trainable_weights(params)
    fresh.load_state_dict(sd)
    assert_same(fresh.opt_state.value, opt.opt_state.value)
