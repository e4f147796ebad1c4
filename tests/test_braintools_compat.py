"""braintools.optim's usage patterns, run against stateopt (cases written from its documentation)."""

import pathlib

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from conftest import assert_close_f32

import stateopt


def _states(*names, size=2):
    return {name: brainstate.ParamState(jnp.ones(size)) for name in names}


def test_braintools_keyword_names_register_and_add_groups():
    opt = stateopt.Adam(lr=0.1).register_trainable_weights(param_states=_states('w'))
    group = opt.add_param_group(params=_states('b'), lr=0.01)
    assert [g.names for g in opt.param_groups] == [['w'], ['b']] and group is opt.param_groups[1]
    with pytest.raises(TypeError, match='not both'):
        stateopt.Adam().register_trainable_weights(_states('w'), param_states=_states('v'))
    with pytest.raises(TypeError, match='needs the States'):
        stateopt.Adam().register_trainable_weights()
    with pytest.raises(TypeError, match=r'add_param_group takes states or params='):
        opt.add_param_group(_states('c'), params=_states('d'))
    assert [g.names for g in opt.param_groups] == [['w'], ['b']]


#: optimizer, constructor arguments, attribute -> the value braintools' attribute reads.
ATTRIBUTES = {
    'Adam betas': (stateopt.Adam, dict(betas=(0.8, 0.95)), 'betas', (0.8, 0.95)),
    'Adam eps': (stateopt.Adam, dict(eps=1e-6), 'eps', 1e-6),
    'AdamW weight_decay': (stateopt.AdamW, dict(weight_decay=0.05), 'weight_decay', 0.05),
    'SGD momentum': (stateopt.SGD, dict(momentum=0.9), 'momentum', 0.9),
    'LBFGS memory_size': (stateopt.LBFGS, dict(memory_size=7), 'memory_size', 7),
    'Rprop etas': (stateopt.Rprop, dict(etas=(0.4, 1.3)), 'etas', (0.4, 1.3)),
    'Adam amsgrad': (stateopt.Adam, dict(amsgrad=True), 'amsgrad', True),
    'SOFO tangent_size': (stateopt.SOFO, dict(model=abs, loss_fn=max, tangent_size=32), 'tangent_size', 32),
    'SOFO momentum': (stateopt.SOFO, dict(model=abs, loss_fn=max, momentum=0.9), 'momentum', 0.9),
    'SOFOScan damping': (stateopt.SOFOScan, dict(rnn_cell=abs, loss_fn=max, damping=1e-3), 'damping', 1e-3),
}


@pytest.mark.parametrize('cls, kwargs, name, expected', ATTRIBUTES.values(), ids=ATTRIBUTES)
def test_hyperparameters_read_as_attributes(cls, kwargs, name, expected):
    value = getattr(cls(**kwargs).register_trainable_weights(_states('w')), name)
    # the value given, as the group stores it (float32 for dynamic numbers): no arithmetic between
    np.testing.assert_array_equal(np.asarray(value, np.float32), np.asarray(expected, np.float32))


def test_setting_an_attribute_sets_every_group_that_did_not_override_it():
    opt = stateopt.Adam(lr=0.1).register_trainable_weights(_states('w'))
    opt.add_param_group(_states('b'), eps=1e-3)
    opt.add_param_group(_states('c'))
    opt.eps = 1e-6
    assert [float(g['eps']) for g in opt.param_groups] == pytest.approx([1e-6, 1e-3, 1e-6])
    assert opt.defaults['eps'] == 1e-6 and opt.eps == pytest.approx(1e-6)
    opt.add_param_group(_states('d'))
    assert float(opt.param_groups[3]['eps']) == pytest.approx(1e-6)      # new groups take the new default


def test_setting_a_static_or_invalid_attribute_is_refused_and_changes_nothing():
    opt = stateopt.Adam(lr=0.1).register_trainable_weights(_states('w'))
    opt.add_param_group(_states('b'))
    before = [g.hyperparams() for g in opt.param_groups]
    with pytest.raises(ValueError, match="'amsgrad' is fixed when the group is created"):
        opt.amsgrad = True
    with pytest.raises(ValueError, match='eps'):
        opt.eps = -1.0
    assert [g.hyperparams() for g in opt.param_groups] == before and opt.defaults['eps'] == 1e-8


def test_param_states_lists_the_registered_states():
    states = _states('w', 'b')
    opt = stateopt.SGD().register_trainable_weights(states)
    manager = opt.param_states
    assert isinstance(manager, stateopt.UniqueStateManager)
    assert manager.to_dict() == {'b': states['b'], 'w': states['w']}
    manager.clear()                          # a copy: the optimizer keeps its States
    assert len(opt.param_states) == 2


def test_adafactor_reads_a_negative_decay_rate_as_the_same_exponent():
    runs = []
    for decay_rate in (0.8, -0.8):
        states = _states('w', size=(3, 2))
        opt = stateopt.Adafactor(decay_rate=decay_rate).register_trainable_weights(states)
        for step in range(3):
            opt.update({'w': jnp.full((3, 2), 0.5 + step, jnp.float32)})
        runs.append((opt.decay_rate, np.asarray(states['w'].value)))
    # read back as given (braintools' attribute), run as the same exponent
    assert runs[0][0] == pytest.approx(0.8) and runs[1][0] == pytest.approx(-0.8)
    np.testing.assert_array_equal(runs[1][1], runs[0][1])      # the same compiled step on the same values
    opt.param_groups[0]['decay_rate'] = -0.5
    assert float(opt.param_groups[0]['decay_rate']) == -0.5


# -- schedulers -------------------------------------------------------------------------------

def test_scheduler_current_lrs_get_lr_apply_and_step_epoch():
    opt = stateopt.SGD(lr=0.1).register_trainable_weights(_states('w'))
    opt.add_param_group(_states('b'), lr=0.02)
    sched = stateopt.StepLR(opt, 1, 0.5)
    sched.step_epoch()
    # torch's StepLR after one step with step_size=1: base * gamma.
    assert_close_f32(sched.current_lrs.value, [0.05, 0.01])
    assert sched.get_lr() == opt.get_last_lr()
    sched.apply(lambda lr: lr * 2)
    assert_close_f32(opt.get_last_lr(), [0.1, 0.02])
    sched.current_lrs.value = [0.3, 0.4]
    assert_close_f32(opt.get_last_lr(), [0.3, 0.4])
    sched.step()  # torch's chainable StepLR steps on from the lrs set: lr * gamma
    assert_close_f32(opt.get_last_lr(), [0.15, 0.2])
    with pytest.raises(ValueError, match='one per param group'):
        sched.current_lrs.value = [0.1]
    with pytest.raises(ValueError, match=r'apply_fn\(lr\) for group 0'):
        sched.apply(lambda lr: -lr)
    assert_close_f32(opt.get_last_lr(), [0.15, 0.2])


def _torch_sequential(t, milestones, rules):
    """The lr of torch's SequentialLR of closed-form rules at step t: the active rule at its own step."""
    active = sum(m <= t for m in milestones)
    start = ([0] + list(milestones))[active]
    return rules[active](t - start)


def test_sequential_lr_jumps_to_an_epoch_and_reports_the_active_scheduler():
    sched = stateopt.SequentialLR([stateopt.ConstantLR(base_lr=1.0, factor=0.5, total_iters=10),
                                   stateopt.ExponentialLR(base_lr=1.0, gamma=0.9)], milestones=[3])
    rules = [lambda s: 0.5, lambda s: 0.9 ** s]
    for epoch in [5, 2, 7, 3]:
        sched.step(epoch=epoch)
        assert int(sched.current_scheduler_idx) == int(epoch >= 3)
        assert_close_f32(sched.get_lr()[0], _torch_sequential(epoch, [3], rules))
    sched.step()  # on from the jump, one step
    assert_close_f32(sched.get_lr()[0], 0.9 ** 1)
    sched.step(5)  # braintools' positional epoch
    assert_close_f32(sched.get_lr()[0], 0.9 ** 2)
    with pytest.raises(ValueError, match='takes no metric'):
        sched.step(0.5)


def test_chained_scheduler_jumps_to_an_epoch():
    sched = stateopt.ChainedScheduler([stateopt.ConstantLR(base_lr=1.0, factor=0.5, total_iters=2),
                                       stateopt.ExponentialLR(base_lr=1.0, gamma=0.9)])
    sched.step(epoch=4)  # torch: the product of the two rules, 1.0 * 0.9^4 after ConstantLR ends
    assert_close_f32(sched.get_lr()[0], 0.9 ** 4)
    plateau = stateopt.ChainedScheduler([stateopt.ReduceLROnPlateau(base_lr=0.1)])
    with pytest.raises(ValueError, match='cannot jump'):
        plateau.step(1.0, epoch=3)


def test_sequential_lr_children_with_their_own_base_lr():
    # braintools runs each child from its own base_lr: 1.0, then 0.8, then 0.5.
    sched = stateopt.SequentialLR([stateopt.ConstantLR(base_lr=1.0, factor=1.0, total_iters=0),
                                   stateopt.ConstantLR(base_lr=0.8, factor=1.0, total_iters=0),
                                   stateopt.ExponentialLR(base_lr=0.5, gamma=0.5)], milestones=[3, 5])
    lrs = [float(sched(t)) for t in range(7)]
    assert_close_f32(np.asarray(lrs), np.array([1.0, 1.0, 1.0, 0.8, 0.8, 0.5, 0.25]))
    opt = stateopt.SGD(lr=sched).register_trainable_weights(_states('w'))
    opt.add_param_group(_states('b'), lr=0.1)  # group 1 keeps its ratio to group 0 in every phase
    for _ in range(3):
        sched.step()
    assert_close_f32(opt.get_last_lr(), [0.8, 0.08])


def test_plateau_mode_worse_and_one_cycle_min_lrs():
    assert stateopt.ReduceLROnPlateau(mode='min').mode_worse == np.inf
    assert stateopt.ReduceLROnPlateau(mode='max').mode_worse == -np.inf
    sched = stateopt.OneCycleLR(max_lr=[1.0, 0.5], total_steps=10, div_factor=10.0, final_div_factor=100.0)
    # torch: min_lr = initial_lr / final_div_factor = max_lr / div_factor / final_div_factor
    assert_close_f32(sched.min_lrs, [1e-3, 5e-4])
    assert_close_f32(float(sched(9)), 1e-3)


# -- the optimizer's lr and transform surface -------------------------------------------------

def test_a_number_lr_reads_as_a_constant_scheduler_over_the_groups():
    opt = stateopt.SGD(lr=0.1).register_trainable_weights(_states('w'))
    opt.add_param_group(_states('b'), lr=0.02)
    assert isinstance(opt.lr_scheduler, stateopt.ConstantLR) and opt.lr is opt.lr_scheduler
    assert opt.schedulers == [] and opt.param_groups[0]['lr'] == pytest.approx(0.1)
    for _ in range(3):
        opt.lr_scheduler.step()   # a constant schedule never changes the lrs
    assert_close_f32(opt.get_last_lr(), [0.1, 0.02])
    opt.lr_apply(lambda lr: lr * 0.5)
    assert_close_f32(opt.get_last_lr(), [0.05, 0.01])
    assert opt.state_dict()['lr_scheduler'] is None  # the format of an optimizer with a number lr
    # Attaching a real scheduler replaces the constant one.
    sched = stateopt.ExponentialLR(base_lr=0.1, gamma=0.5)
    opt.add_scheduler(sched)
    assert opt.lr_scheduler is sched and opt.schedulers == [sched]
    sched.step()  # torch's ExponentialLR: each group's lr times gamma
    assert_close_f32(opt.get_last_lr(), [0.05, 0.01])
    with pytest.raises(ValueError, match='already driven'):
        opt.add_scheduler(stateopt.StepLR(base_lr=0.1))
    with pytest.raises(TypeError, match='add_scheduler takes a stateopt scheduler'):
        opt.add_scheduler(0.1)


def test_lr_apply_on_a_scheduler_optimizer():
    opt = stateopt.Adam(stateopt.StepLR(0.1))  # braintools' positional lr
    opt.lr_apply(lambda lr: lr * 0.5)
    assert_close_f32(opt.current_lr, 0.05)


#: optimizer, hyper-parameters -> the same step written as an optax composition.
DEFAULT_TX = {
    'adam coupled decay': (stateopt.Adam, dict(lr=0.1, weight_decay=0.1), lambda: optax.chain(
        optax.add_decayed_weights(0.1), optax.scale_by_adam(), optax.scale(-0.1))),
    'base OptaxOptimizer': (stateopt.OptaxOptimizer, dict(lr=0.1, weight_decay=0.1), lambda: optax.chain(
        optax.add_decayed_weights(0.1), optax.scale_by_adam(), optax.scale(-0.1))),
    'sgd clipped': (stateopt.SGD, dict(lr=0.2, grad_clip_norm=0.5), lambda: optax.chain(
        optax.clip_by_global_norm(0.5), optax.sgd(0.2))),
    'adamw': (stateopt.AdamW, dict(lr=0.1, weight_decay=0.1), lambda: optax.adamw(
        0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1)),
}


@pytest.mark.parametrize('case', list(DEFAULT_TX))
def test_default_tx_is_the_step_as_an_optax_transformation(case):
    cls, hp, reference = DEFAULT_TX[case]
    ours, ref = cls(**hp).default_tx(), reference()
    params = {'w': jnp.array([1.0, -2.0, 3.0])}
    p_ours, p_ref = params, params
    s_ours, s_ref = ours.init(params), ref.init(params)
    for t in range(4):
        g = {'w': jnp.array([0.5, 1.5, -2.5]) * (t + 1)}
        u, s_ours = ours.update(g, s_ours, p_ours)
        p_ours = optax.apply_updates(p_ours, u)
        u, s_ref = ref.update(g, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u)
        assert_close_f32(p_ours['w'], p_ref['w'], steps=t + 1, scale=3.0, err_msg=f'{case} step {t}')


def test_param_groups_opt_states_lists_each_groups_state():
    opt = stateopt.Adam(lr=0.1).register_trainable_weights(_states('w', size=3))
    opt.add_param_group(_states('b', size=2), lr=0.01)
    opt.update({'w': jnp.ones(3), 'b': jnp.ones(2)})
    states = opt.param_groups_opt_states
    assert len(states) == 2
    # Adam's first moment after one step of a gradient of ones: (1 - beta1) * 1
    assert_close_f32(states[0].exp_avg['w'], np.full(3, 0.1))
    assert_close_f32(states[1].exp_avg['b'], np.full(2, 0.1))


# -- string keys beside tuple keys (the OptaxOptimizer docstring's group example) ---------------

class _Net(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = brainstate.nn.Linear(3, 2)


@pytest.mark.parametrize('mode', ['eager', 'jit'])
def test_a_string_key_group_beside_tuple_keys_registers_and_trains(mode):
    model, special = _Net(), brainstate.ParamState(jnp.array([1.0, -1.0]))
    opt = stateopt.Adam(lr=1e-2)
    opt.register_trainable_weights(model.linear.states(brainstate.ParamState))  # tuple keys
    opt.add_param_group({'special': special}, lr=1e-3)                        # a string key
    assert [group.names for group in opt.param_groups] == [['weight'], ['special']]
    linear = model.linear.states(brainstate.ParamState)
    w0 = jax.tree.map(np.asarray, linear[('weight',)].value)
    s0 = np.asarray(special.value)
    grads_w = {'weight': jnp.full((3, 2), 0.5), 'bias': jnp.full((2,), -2.0)}
    grads_s = jnp.array([3.0, -0.25])

    def step():
        grads = {key: grads_w for key in linear}
        grads['special'] = grads_s   # keyed as the user wrote them, str beside tuple
        opt.update(grads)

    (brainstate.transform.jit(step) if mode == 'jit' else step)()
    (brainstate.transform.jit(step) if mode == 'jit' else step)()
    # two steps of torch's Adam (the numpy reference), each group with its own lr
    want_w = {}
    for name in ('weight', 'bias'):
        p, state = w0[name].astype(np.float64), {}
        for _ in range(2):
            p, state = reference.adam(p, np.asarray(grads_w[name], np.float64), state, lr=1e-2)
        want_w[name] = p
    p, state = s0.astype(np.float64), {}
    for _ in range(2):
        p, state = reference.adam(p, np.asarray(grads_s, np.float64), state, lr=1e-3)
    for name in ('weight', 'bias'):
        assert_close_f32(linear[('weight',)].value[name], want_w[name], steps=2)
    assert_close_f32(special.value, p, steps=2)
    # the state dict keys them by name; a fresh optimizer loads it
    saved = opt.state_dict()
    assert set(saved['state']) == {'weight', 'special'}
    other = stateopt.Adam(lr=1e-2)
    other.register_trainable_weights(model.linear.states(brainstate.ParamState))
    other.add_param_group({'special': special}, lr=1e-3)
    other.load_state_dict(saved)
    assert int(other.step_count.value) == 2
    with pytest.raises(KeyError, match='no gradient for'):
        opt.update({key: grads_w for key in linear})


# -- state dicts answer braintools' keys ------------------------------------------------------

def test_state_dict_answers_braintools_keys_without_storing_them_twice(tmp_path):
    opt = stateopt.AdamW(lr=0.1).register_trainable_weights(_states('w', size=3))
    opt.add_param_group(_states('b', size=2), lr=0.01)
    opt.update({'w': jnp.ones(3), 'b': jnp.ones(2)})
    sd = opt.state_dict()
    for key in ('lr', 'base_lr', 'opt_state', 'param_groups_opt_states'):
        assert key in sd and key not in list(sd) and key not in sd.keys()
    assert_close_f32(sd['lr'], 0.1)
    assert sd['base_lr'] == pytest.approx(0.1)
    assert sd['opt_state']['state']['w'] is sd['state']['w']
    per_group = sd['param_groups_opt_states']
    assert list(per_group) == ['0', '1'] and list(per_group['1']['state']) == ['b']
    assert sd.get('opt_state') is not None and sd.get('missing', 7) == 7
    with pytest.raises(KeyError):
        sd['missing']
    # jax.tree sees the layout only, and gives a StateDict back, which still answers
    copied = jax.tree.map(np.asarray, sd)
    assert isinstance(copied, stateopt.StateDict) and 'opt_state' in copied
    assert sorted(copied) == sorted(sd) and len(jax.tree.leaves(copied)) == len(jax.tree.leaves(dict(sd)))
    fresh = stateopt.AdamW(lr=0.1).register_trainable_weights(_states('w', size=3))
    fresh.add_param_group(_states('b', size=2), lr=0.01)
    fresh.load_state_dict(copied)
    assert int(fresh.step_count.value) == 1
    stateopt.save_checkpoint(tmp_path / 'ck', opt)
    restored = stateopt.load_checkpoint(tmp_path / 'ck', fresh)
    assert restored is not None and int(fresh.step_count.value) == 1


# -- optimizers and schedulers are brainstate graph nodes ---------------------------------------

def _trained_pair():
    w = brainstate.ParamState(jnp.array([1.0, -2.0, 3.0]))
    b = brainstate.ParamState(jnp.array([0.5, 0.5]))
    sched = stateopt.StepLR(base_lr=0.1, step_size=1, gamma=0.5)
    opt = stateopt.Adam(lr=sched).register_trainable_weights({'w': w})
    opt.add_param_group({'b': b}, lr=0.01)
    return opt, sched, w, b


def _step(opt, sched):
    opt.update({'w': jnp.array([1.0, 2.0, -1.0]), 'b': jnp.array([0.3, -0.3])})
    sched.step()


def test_graph_states_find_every_optimizer_state_and_round_trip():
    opt, sched, w, b = _trained_pair()
    _step(opt, sched)
    found = brainstate.graph.states(opt)
    owned = {id(opt.step_count), id(opt.opt_state), id(sched.last_epoch)} | \
        {id(group._hyper) for group in opt.param_groups}
    assert owned <= {id(state) for state in found.values()}
    assert all(isinstance(state, stateopt.OptimState) for state in found.values())  # not the params
    saved = brainstate.graph.treefy_states(opt)
    want = jax.tree.map(np.asarray, opt.state_dict())
    for _ in range(2):
        _step(opt, sched)
    brainstate.graph.update_states(opt, saved)
    got = jax.tree.map(np.asarray, opt.state_dict())
    jax.tree.map(np.testing.assert_array_equal, got, want)   # the same arrays put back, no arithmetic
    assert opt.get_last_lr() == pytest.approx([0.05, 0.005])


def test_a_module_holding_an_optimizer_finds_its_states():
    class Trainer(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = brainstate.nn.Linear(3, 2)
            self.opt = stateopt.SGD(lr=0.1, momentum=0.9)
            self.opt.register_trainable_weights(self.linear.states(brainstate.ParamState))

    trainer = Trainer()
    paths = set(trainer.states().keys())
    assert ('opt', 'step_count') in paths and ('opt', 'opt_state') in paths
    assert ('linear', 'weight') in paths
    assert len(trainer.states(brainstate.ParamState)) == 1   # the optimizer adds no parameter
    assert isinstance(trainer.opt.lr_scheduler, stateopt.ConstantLR)  # made on first read ...
    assert set(trainer.states().keys()) == paths                      # ... and not in the graph


def test_a_deep_copy_of_a_graph_node_optimizer_owns_its_states():
    import copy
    opt, sched, w, b = _trained_pair()
    twin = copy.deepcopy(opt)
    assert {id(s) for s in brainstate.graph.states(twin).values()}.isdisjoint(
        id(s) for s in brainstate.graph.states(opt).values())
    _step(opt, sched)
    assert int(twin.step_count.value) == 0 and twin.get_last_lr() == pytest.approx([0.1, 0.01])


# -- braintools 0.3.0 checkpoints resume -------------------------------------------------------

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
#: written by fixtures/make_braintools_checkpoint.py with braintools 0.3.0: three steps of a
#: two-group AdamW with a StepLR, then braintools' fourth step
BT = np.load(FIXTURES / 'braintools_adamw.npz')


def _bt_adamw(cls=stateopt.AdamW, group_decay=0.0):
    w, b = brainstate.ParamState(jnp.asarray(BT['W0'])), brainstate.ParamState(jnp.asarray(BT['B0']))
    opt = cls(lr=stateopt.StepLR(base_lr=0.1, step_size=2, gamma=0.5), weight_decay=0.01)
    opt.register_trainable_weights({'w': w})
    opt.add_param_group({'b': b}, lr=0.05, weight_decay=group_decay)
    return opt, w, b


def test_a_braintools_checkpoint_resumes_with_braintools_next_step():
    opt, w, b = _bt_adamw()
    stateopt.load_checkpoint(FIXTURES / 'braintools_adamw_ok.msgpack',
                             {'model': {'w': w, 'b': b}, 'optimizer': opt})
    np.testing.assert_array_equal(w.value, BT['w3'])   # the saved values, copied
    assert int(opt.step_count.value) == 3
    # group 0 follows the scheduler; braintools' scheduler never reached group 1, added after it
    assert_close_f32(opt.get_last_lr(), [float(BT['lrs'][0]), 0.05])
    opt.update({'w': jnp.asarray(BT['gw'][3]), 'b': jnp.asarray(BT['gb'][3])})
    # braintools' step 4 (optax's chain) and ours (torch's AdamW) are different float32 code
    assert_close_f32(w.value, BT['w4'], scale=2.0)
    assert_close_f32(b.value, BT['b4'], scale=0.5)


def test_a_braintools_optimizer_state_dict_loads_by_load_state_dict_and_load_checkpoint():
    from stateopt._braintools import read_braintools_checkpoint
    saved = read_braintools_checkpoint(str(FIXTURES / 'braintools_adamw_opt_only.msgpack'))
    for load in (lambda opt: opt.load_state_dict(saved),
                 lambda opt: stateopt.load_checkpoint(FIXTURES / 'braintools_adamw_opt_only.msgpack', opt)):
        opt, w, b = _bt_adamw()
        load(opt)
        assert int(opt.step_count.value) == 3
        assert_close_f32(opt.state_dict()['group_state'][1]['count'], 3)


def test_braintools_groups_that_ran_another_rule_are_refused_and_nothing_changes():
    path = FIXTURES / 'braintools_adamw_adam_group.msgpack'
    opt, w, b = _bt_adamw(group_decay=0.01)
    before = jax.tree.map(np.asarray, opt.state_dict())
    with pytest.raises(stateopt.CheckpointMismatchError, match='param group 1: braintools ran every added '
                                                               'group as Adam'):
        stateopt.load_checkpoint(path, {'model': {'w': w, 'b': b}, 'optimizer': opt})
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, opt.state_dict()), before)
    np.testing.assert_array_equal(w.value, BT['W0'])
    adam, w, b = _bt_adamw(stateopt.Adam, group_decay=0.01)
    with pytest.raises(stateopt.CheckpointMismatchError, match=r'param group 0: braintools ran it as AdamW'):
        stateopt.load_checkpoint(path, {'model': {'w': w, 'b': b}, 'optimizer': adam})
    with pytest.raises(ValueError, match='loads into stateopt.Adam and stateopt.AdamW'):
        stateopt.SGD(lr=0.1).register_trainable_weights({'w': w}).load_state_dict(
            {'step_count': 1, 'param_groups': {'0': {'lr': 0.1}}, 'opt_state': {}})


@pytest.mark.parametrize('damage', ['truncated', 'one byte flipped'])
def test_a_damaged_braintools_checkpoint_is_named_as_such_and_changes_nothing(damage, tmp_path):
    data = (FIXTURES / 'braintools_adamw_ok.msgpack').read_bytes()
    if damage == 'truncated':
        data = data[:len(data) // 2]
    else:
        data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    (tmp_path / 'damaged.msgpack').write_bytes(data)
    opt, w, b = _bt_adamw()
    before = jax.tree.map(np.asarray, opt.state_dict())
    with pytest.raises(stateopt.CheckpointError,
                       match='starts like a braintools msgpack checkpoint but cannot be read as one'):
        stateopt.load_checkpoint(tmp_path / 'damaged.msgpack', {'model': {'w': w, 'b': b}, 'optimizer': opt})
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, opt.state_dict()), before)
    np.testing.assert_array_equal(w.value, BT['W0'])


def test_unique_state_manager_answers_braintools_attributes():
    shared = brainstate.ParamState(jnp.ones(2))
    other = brainstate.ParamState(jnp.zeros(3))
    manager = stateopt.UniqueStateManager()
    assert manager.seen_ids == set() and manager.pytree_structure is None and manager.flattened_states == []
    manager.merge_with({'a': shared, 'b': shared, 'c': other})
    assert manager.seen_ids == {id(shared), id(other)}
    assert [state for _, state in manager.flattened_states] == [shared, other]
    assert manager.pytree_structure.num_leaves == 2


def test_cyclic_lr_checks_scale_mode_even_when_mode_sets_it():
    with pytest.raises(ValueError, match='scale_mode'):
        stateopt.CyclicLR(scale_mode='nope')


def test_chained_scheduler_children_with_their_own_base_lr():
    # braintools' documented warm-up: ConstantLR at its default base (1e-3) times 0.1, chained with a
    # MultiStepLR of base 0.1; braintools multiplies each child's factor to its own base:
    # 1e-3 * 0.1 * (MultiStepLR's lr / 0.1), then 1e-3 * 1.0 * 0.1^k after the warm-up.
    warmup = stateopt.ConstantLR(factor=0.1, total_iters=5)
    decay = stateopt.MultiStepLR(base_lr=0.1, milestones=[7, 9], gamma=0.1)
    sched = stateopt.ChainedScheduler([warmup, decay])
    want = [1e-3 * (0.1 if t < 5 else 1.0) * 0.1 ** sum(t >= m for m in (7, 9)) for t in range(11)]
    assert_close_f32(np.asarray([float(sched(t)) for t in range(11)]), np.asarray(want), steps=3)


def test_linear_lr_may_start_from_zero():
    sched = stateopt.LinearLR(base_lr=0.1, start_factor=0.0, total_iters=4)
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        sched.step()
    assert_close_f32(np.asarray(lrs), 0.1 * np.minimum(np.arange(6), 4) / 4)


def test_lbfgs_closure_steps_with_string_keys_beside_tuple_keys():
    def run(first_key):
        w = brainstate.ParamState(jnp.array([1.0, -2.0]))
        s = brainstate.ParamState(jnp.array([0.5, 3.0]))
        opt = stateopt.LBFGS(lr=0.5)
        opt.register_trainable_weights({first_key: w})
        opt.add_param_group({'s': s})
        for _ in range(3):
            opt.step(closure=lambda: jnp.sum((w.value - 1.0) ** 2) + jnp.sum(s.value ** 2))
        return np.append(np.asarray(w.value), np.asarray(s.value))

    # the same run keyed ('a',) beside 's', and 'a' beside 's' (keys JAX can order)
    assert_close_f32(run(('a',)), run('a'), steps=3, scale=3.0)
