"""state_dict / load_state_dict: keyed by names, validated, all-or-nothing."""

import copy
import re

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from catalogue import CASES, GROUP_CASES, grad_sequence
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
    'group count': (corrupt(('param_groups',), lambda g: g[:1]), ValueError, 'holds 1 entries'),
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


# -- crafted and damaged state dicts -------------------------------------------------------

def scheduled():
    """An Adam with a StepLR and two groups, after 3 steps, and its state dict with numpy arrays."""
    states = make_params()
    scheduler = stateopt.StepLR(base_lr=0.01, step_size=2, gamma=0.5)
    opt = stateopt.Adam(lr=scheduler).register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']})
    for g in grad_sequence(SHAPES, 3):
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
        scheduler.step()
    sd = jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, opt.state_dict())
    sd['param_groups'] = [dict(g) for g in sd['param_groups']]
    sd['state'] = {k: dict(v) for k, v in sd['state'].items()}
    return opt, states, scheduler, sd


def scheduled_snapshot(opt, states, scheduler) -> tuple:
    return snapshot(opt, states), jax.tree.map(np.asarray, scheduler.state_dict()), \
        [group.hyperparams() for group in opt.param_groups]


#: name -> (edit, the entry the message must name). Wrong types at every level of the layout.
CRAFTED = {
    'param_groups int': (corrupt(('param_groups',), 5), 'param_groups'),
    'param_groups dict': (corrupt(('param_groups',), {'a': 1}), 'param_groups'),
    'param_groups one': (corrupt(('param_groups',), lambda g: g[:1]), 'param_groups'),
    'param_groups ints': (corrupt(('param_groups',), [1, 2]), 'param_groups[0]'),
    'group string': (corrupt(('param_groups', 1), 'group'), 'param_groups[1]'),
    'group params int': (corrupt(('param_groups', 0, 'params'), 3), "param_groups[0]['params']"),
    'group params arrays': (corrupt(('param_groups', 0, 'params'), [np.ones(2)]),
                            "param_groups[0]['params']"),
    'group params missing': (corrupt(('param_groups', 1, 'params'), KeyError), "param_groups[1]['params']"),
    'lr size 3': (corrupt(('param_groups', 0, 'lr'), np.ones(3, np.float32)), "param_groups[0]['lr']"),
    'lr string': (corrupt(('param_groups', 1, 'lr'), 'fast'), "param_groups[1]['lr']"),
    'lr missing': (corrupt(('param_groups', 1, 'lr'), KeyError), "param_groups[1]['lr']"),
    'betas int': (corrupt(('param_groups', 0, 'betas'), 3), "param_groups[0]['betas']"),
    'betas entry array': (corrupt(('param_groups', 0, 'betas'), (np.ones(2), 0.9)),
                          "param_groups[0]['betas']"),
    'amsgrad array': (corrupt(('param_groups', 0, 'amsgrad'), np.array([True, False])),
                      "param_groups[0]['amsgrad']"),
    'amsgrad string': (corrupt(('param_groups', 1, 'amsgrad'), 'no'), "param_groups[1]['amsgrad']"),
    'state list': (corrupt(('state',), [1]), 'state'),
    'state slots int': (corrupt(('state', 'w'), 5), "state['w']"),
    'state slots list': (corrupt(('state', 'b'), [np.zeros(5)]), "state['b']"),
    'state slot string': (corrupt(('state', 'w', 'exp_avg'), 'x'), "state['w']['exp_avg']"),
    'state slot none': (corrupt(('state', 'b', 'exp_avg_sq'), None), "state['b']['exp_avg_sq']"),
    'state slot missing': (corrupt(('state', 'b', 'exp_avg_sq'), KeyError), "state['b']['exp_avg_sq']"),
    'state slot shape': (corrupt(('state', 'w', 'exp_avg'), np.zeros((4, 3), np.float32)),
                         "state['w']['exp_avg']"),
    'state param missing': (corrupt(('state', 'w'), KeyError), "state['w']"),
    'state int key': (corrupt(('state', 3), {'exp_avg': np.zeros(1)}), 'state[3]'),
    'group_state int': (corrupt(('group_state',), 1), 'group_state'),
    'group_state entry int': (corrupt(('group_state', 0), 1), 'group_state[0]'),
    'group_state count string': (corrupt(('group_state', 0, 'count'), 'x'), "group_state[0]['count']"),
    'group_state count 1.5': (corrupt(('group_state', 1, 'count'), 1.5), "group_state[1]['count']"),
    'group_state count array 1.5': (corrupt(('group_state', 1, 'count'), np.float32(1.5)),
                                    "group_state[1]['count']"),
    'step_count string': (corrupt(('step_count',), 'abc'), 'step_count'),
    'step_count shape 2': (corrupt(('step_count',), np.zeros(2, np.int32)), 'step_count'),
    'step_count list': (corrupt(('step_count',), [1, 2]), 'step_count'),
    'step_count 1.5': (corrupt(('step_count',), 1.5), 'step_count'),
    'step_count 2**40': (corrupt(('step_count',), 2 ** 40), 'step_count'),
    'step_count none': (corrupt(('step_count',), None), 'step_count'),
    'step_count negative': (corrupt(('step_count',), -1), 'step_count'),
    'lr_scheduler int': (corrupt(('lr_scheduler',), 5), 'lr_scheduler'),
    'lr_scheduler none': (corrupt(('lr_scheduler',), None), 'lr_scheduler'),
    'lr_scheduler no last_epoch': (corrupt(('lr_scheduler', 'last_epoch'), KeyError),
                                   "lr_scheduler['last_epoch']"),
    'lr_scheduler extra': (corrupt(('lr_scheduler', 'extra'), 1), "lr_scheduler['extra']"),
    'lr_scheduler lrs int': (corrupt(('lr_scheduler', 'lrs'), 3), "lr_scheduler['lrs']"),
    'lr_scheduler lrs short': (corrupt(('lr_scheduler', 'lrs'), lambda lrs: lrs[:1]), "lr_scheduler['lrs']"),
    'lr_scheduler lr array': (corrupt(('lr_scheduler', 'lrs', 1), np.ones(3, np.float32)),
                              "lr_scheduler['lrs'][1]"),
    'lr_scheduler last_epoch array': (corrupt(('lr_scheduler', 'last_epoch'), np.zeros(3, np.int32)),
                                      "lr_scheduler['last_epoch']"),
    'lr_scheduler last_epoch 1.5': (corrupt(('lr_scheduler', 'last_epoch'), 1.5),
                                    "lr_scheduler['last_epoch']"),
    'lr_scheduler last_epoch negative': (corrupt(('lr_scheduler', 'last_epoch'), -2),
                                         "lr_scheduler['last_epoch']"),
    'optimizer_class int': (corrupt(('optimizer_class',), 3), 'optimizer_class'),
}


def assert_names_the_entry(error: BaseException, entry: str) -> None:
    message = str(error)
    assert entry in message, message
    assert not (message[:1] in ('"', "'") and message[-1:] == message[:1]), message   # not quoted


@pytest.mark.parametrize('name', list(CRAFTED))
def test_crafted_state_dicts_raise_one_error_naming_the_entry(name):
    edit, entry = CRAFTED[name]
    opt, states, scheduler, sd = scheduled()
    before = scheduled_snapshot(opt, states, scheduler)
    crafted = edit(copy.deepcopy(sd))
    raised = []
    for method in (opt.check_state_dict, opt.load_state_dict):
        with pytest.raises((KeyError, ValueError, TypeError)) as info:
            method(crafted)
        assert_names_the_entry(info.value, entry)
        assert info.value.__cause__ is None and info.value.__context__ is None
        np.testing.assert_equal(scheduled_snapshot(opt, states, scheduler), before)
        raised.append((type(info.value), str(info.value)))
    assert raised[0] == raised[1]       # check_state_dict raises what load_state_dict would


# -- the optimizer class -------------------------------------------------------------------

def test_state_dict_of_another_class_with_the_same_slots_is_refused_unless_not_strict():
    adam, _ = trained(stateopt.Adam, weight_decay=0.01)
    sd = adam.state_dict()
    assert sd['optimizer_class'] == 'Adam'
    adamw, states = trained(stateopt.AdamW)
    before = snapshot(adamw, states)
    for method in (adamw.check_state_dict, adamw.load_state_dict):
        with pytest.raises(ValueError, match=r"optimizer_class.*'Adam'.*'AdamW'.*strict=False") as info:
            method(sd)
        assert_names_the_entry(info.value, 'optimizer_class')
    assert_same(snapshot(adamw, states), before)
    with pytest.warns(UserWarning, match=r"'Adam'.*'AdamW'"):
        adamw.load_state_dict(sd, strict=False)
    assert_same(adamw.opt_state.value, adam.opt_state.value)
    assert int(adamw.step_count.value) == 3 and adamw.param_groups[0]['weight_decay'] == pytest.approx(0.01)


def test_state_dicts_without_a_class_entry_keep_loading():
    opt, _ = trained()
    sd = opt.state_dict()
    del sd['optimizer_class']
    target, _ = trained(lr=0.5)
    target.load_state_dict(sd)
    assert_same(target.opt_state.value, opt.opt_state.value)
    assert target.get_last_lr() == [0.01, 0.003]


# -- values no run produces ----------------------------------------------------------------

#: class name -> the state-dict slots that hold second moments, accumulators of squares or of
#: absolute values, step sizes or weight sums: no run makes them negative. Written from each
#: algorithm's published update rule; every other floating slot may be negative.
NEVER_NEGATIVE = {
    'Adam': {'exp_avg_sq', 'max_exp_avg_sq'}, 'AdamW': {'exp_avg_sq', 'max_exp_avg_sq'},
    'Adagrad': {'sum'}, 'Adadelta': {'square_avg', 'acc_delta'}, 'RMSprop': {'square_avg'},
    'Adamax': {'exp_inf'}, 'Nadam': {'exp_avg_sq', 'mu_product'}, 'RAdam': {'exp_avg_sq'},
    'Rprop': {'step_factor'}, 'Adafactor': {'variance', 'variance.row', 'variance.col'},
    'Lamb': {'exp_avg_sq'}, 'Lookahead': {'fast.exp_avg_sq', 'fast.max_exp_avg_sq'},
    'Yogi': {'exp_avg_sq'}, 'AdaBelief': {'exp_avg_var'}, 'SM3': {'accumulators.0', 'accumulators.1'},
    'Novograd': {'exp_avg_sq'}, 'Muon': {'exp_avg_sq'}, 'ScheduleFreeSGD': {'weight_sum', 'max_lr'},
    'ScheduleFreeAdamW': {'weight_sum', 'max_lr', 'exp_avg_sq'},
    'Prodigy': {'exp_avg_sq', 'estim_lr'}, 'ADOPT': {'exp_avg_sq'}, 'Adan': {'exp_avg_sq'},
    'NAdamW': {'exp_avg_sq'},
}
ROWS = CASES + GROUP_CASES


def test_every_catalogue_optimizer_has_rows_for_the_value_checks():
    assert {getattr(stateopt, name) for name in stateopt.OPTIMIZERS} <= {case.cls for case in ROWS}
    assert set(NEVER_NEGATIVE) <= set(stateopt.OPTIMIZERS)


def slot_entries(sd: dict) -> list:
    """``(where, path in sd)`` of every optimizer-state array, as errors name them."""
    entries = [(f'state[{name!r}][{slot!r}]', ('state', name, slot))
               for name, slots in sd['state'].items() for slot in slots]
    entries += [(f'group_state[{index}][{slot!r}]', ('group_state', index, slot))
                for index, slots in enumerate(sd['group_state']) for slot in slots]
    return entries


def replaced(sd: dict, path: tuple, value) -> dict:
    crafted = {**sd, 'state': {name: dict(slots) for name, slots in sd['state'].items()},
               'group_state': [dict(slots) for slots in sd['group_state']]}
    crafted[path[0]][path[1]][path[2]] = value
    return crafted


@pytest.mark.parametrize('case', ROWS, ids=[case.id for case in ROWS])
def test_values_no_run_produces_are_refused(case):
    states = make_params()
    opt = case.make().register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, **case.group)
    for g in grad_sequence(SHAPES, 4):
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
    sd = jax.tree.map(np.asarray, opt.state_dict())
    before = snapshot(opt, states)
    never_negative = NEVER_NEGATIVE.get(type(opt).__name__, set())
    checked = set()
    for where, path in slot_entries(sd):
        slot = path[2]
        value = sd[path[0]][path[1]][slot]
        if value.size == 0:
            continue
        if np.issubdtype(value.dtype, np.floating):
            if slot in never_negative:
                assert (value >= 0).all(), f'{where} is negative after a run: {value}'
                checked.add(slot)
            bad = {'nan': np.nan, 'inf': -np.inf, 'negative': -1.5 - np.abs(value.flat[0])}
            refused = {'nan', 'inf'} | ({'negative'} if slot in never_negative else set())
        elif np.issubdtype(value.dtype, np.signedinteger):
            bad, refused = {'negative': -1}, {'negative'}
        else:
            continue
        for kind, number in bad.items():
            crafted_value = np.array(value)
            crafted_value.flat[0] = number
            crafted = replaced(sd, path, crafted_value)
            if kind in refused:
                for method in (opt.check_state_dict, opt.load_state_dict):
                    with pytest.raises(ValueError, match=re.escape(where)) as info:
                        method(crafted)
                    assert ('finite' if kind != 'negative' else '>= 0') in str(info.value)
                assert_same(snapshot(opt, states), before)
            else:
                opt.load_state_dict(crafted)
                assert np.asarray(opt.state_dict()[path[0]][path[1]][slot]).flat[0] == np.float32(number)
                opt.load_state_dict(sd)
    assert checked == {slot for _, (_, _, slot) in slot_entries(sd)} & never_negative
    with pytest.raises(ValueError, match='step_count'):
        opt.load_state_dict({**sd, 'step_count': np.int32(-1)})
    assert_same(snapshot(opt, states), before)


def test_counts_load_from_any_integer_dtype_that_holds_them():
    opt, _ = trained()
    sd = opt.state_dict()
    dtype = np.asarray(sd['step_count']).dtype
    target, _ = trained(lr=0.5)
    target.load_state_dict({**sd, 'step_count': np.asarray(7, np.int16),
                            'group_state': [{**slots, 'count': np.asarray(int(slots['count']), np.int64)}
                                            for slots in sd['group_state']]})
    assert int(target.step_count.value) == 7 and target.step_count.value.dtype == dtype
    assert_same(target.opt_state.value, opt.opt_state.value)
    for too_big in (np.iinfo(dtype).max + 1, np.asarray(np.iinfo(np.int32).max + 1, np.int64)):
        if np.iinfo(dtype).max >= too_big:
            continue
        with pytest.raises(ValueError, match=r'step_count .*outside the range'):
            target.load_state_dict({**sd, 'step_count': too_big})
    assert int(target.step_count.value) == 7
