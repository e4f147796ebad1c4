"""What users get wrong, and the edges they reach: one clear answer, and nothing changes."""

import copy
import subprocess
import sys

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from catalogue import CASES
from conftest import SHAPES, assert_close_f32, assert_same, make_params, snapshot, values

import stateopt

GRADS = {key: jnp.full(shape, 0.5, jnp.float32) for key, shape in SHAPES.items()}


def _sgd_momentum(states=None):
    states = make_params() if states is None else states
    return states, stateopt.SGD(lr=0.1, momentum=0.9).register_trainable_weights(states)


# -- raw JAX transforms are refused before anything changes ---------------------------------------

RAW_TRANSFORMS = {
    'jax.jit': lambda update: jax.jit(lambda: update(GRADS))(),
    'jax.vmap': lambda update: jax.vmap(lambda s: update({k: g * s for k, g in GRADS.items()}))(
        jnp.ones(2)),
    'jax.grad': lambda update: jax.grad(lambda s: (update({k: g * s for k, g in GRADS.items()}), s)[1])(
        1.0),
    'jax.lax.scan': lambda update: jax.lax.scan(lambda c, s: (update(GRADS), (c, s))[1], 0.0,
                                                jnp.ones(2)),
    'jax.lax.fori_loop': lambda update: jax.lax.fori_loop(0, 2, lambda i, c: (update(GRADS), c)[1], 0.0),
    'jax.eval_shape': lambda update: jax.eval_shape(lambda: (update(GRADS), 0.0)[1]),
    'jax.jvp': lambda update: jax.jvp(lambda s: (update({k: g * s for k, g in GRADS.items()}), s)[1],
                                      (1.0,), (1.0,)),
}


@pytest.mark.parametrize('transform', list(RAW_TRANSFORMS))
def test_raw_jax_transforms_are_refused_and_change_nothing(transform):
    states, opt = _sgd_momentum()
    opt.update(GRADS)
    before = snapshot(opt, states)
    with pytest.raises(brainstate.TraceContextError, match='raw JAX transform.*brainstate.transform.jit'):
        RAW_TRANSFORMS[transform](opt.update)
    assert_same(snapshot(opt, states), before)
    assert not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(
        [state.value for state in states.values()]))
    opt.update(GRADS)           # still usable: the second step of SGD with momentum, buffer 0.9 * 0.5 + 0.5
    expected = {k: v - 0.1 * 0.95 for k, v in before[0].items()}
    for key, value in values(states).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-6, atol=1e-6)


# -- hyper-parameters must fit the float32 the steps compute in ----------------------------------

OUT_OF_FLOAT32 = [
    (stateopt.Adam, dict(lr=1e39), 'lr', 'overflows'),
    (stateopt.Adam, dict(weight_decay=1e39), 'weight_decay', 'overflows'),
    (stateopt.Adam, dict(eps=1e-50), 'eps', 'smallest normal'),
    (stateopt.Adam, dict(eps=1e-40), 'eps', 'smallest normal'),    # subnormal: flushed to 0 on CPUs
    (stateopt.Adam, dict(grad_clip_norm=1e-50), 'grad_clip_norm', 'smallest normal'),
    (stateopt.Adam, dict(grad_clip_value=1e39), 'grad_clip_value', 'overflows'),
    (stateopt.AdamW, dict(lr=-1e39), 'lr', '>= 0'),
    (stateopt.RMSprop, dict(eps=1e-45), 'eps', 'smallest normal'),
    (stateopt.SGD, dict(lr=4e38), 'lr', 'overflows'),
]


@pytest.mark.parametrize('cls, kwargs, name, why', OUT_OF_FLOAT32,
                         ids=[f'{c.__name__}-{k}' for c, k, _, _ in OUT_OF_FLOAT32])
def test_hyperparameters_outside_float32_are_refused(cls, kwargs, name, why):
    with pytest.raises(ValueError, match=f'{name}.*{why}|{why}.*{name}'):
        cls(**kwargs)


@pytest.mark.parametrize('key, value, why', [('lr', 1e39, 'overflows'), ('weight_decay', 1e39, 'overflows'),
                                             ('lr', 1e-39, 'smallest normal')])
def test_assigned_hyperparameters_outside_float32_are_refused(key, value, why):
    states, opt = _sgd_momentum()
    before = snapshot(opt, states)
    with pytest.raises(ValueError, match=f'{key}.*{why}'):
        opt.param_groups[0][key] = value
    assert_same(snapshot(opt, states), before)


def test_the_largest_and_smallest_float32_values_still_work():
    w = brainstate.ParamState(jnp.ones(2))
    opt = stateopt.Adam(lr=1e-3, eps=float(np.finfo(np.float32).tiny)).register_trainable_weights({'w': w})
    opt.update({'w': jnp.ones(2)})
    assert_close_f32(w.value, np.full(2, 1 - 1e-3))


# -- step counts saturate instead of wrapping ------------------------------------------------------

INT32_MAX = np.iinfo(np.int32).max


@pytest.mark.parametrize('case', CASES, ids=[case.id for case in CASES])
def test_step_counts_saturate_at_the_int32_limit(case):
    states = make_params()
    opt = case.make().register_trainable_weights(states)
    opt.update(GRADS)
    near = lambda leaf: jnp.full_like(leaf, INT32_MAX - 2) if leaf.dtype == jnp.int32 else leaf
    opt.step_count.value = near(opt.step_count.value)
    opt.opt_state.value = jax.tree.map(near, opt.opt_state.value)
    for _ in range(4):
        opt.update(GRADS)
    assert int(opt.step_count) == INT32_MAX
    counts = [leaf for leaf in jax.tree.leaves(opt.opt_state.value) if leaf.dtype == jnp.int32]
    assert all(int(count) in (INT32_MAX - 2, INT32_MAX) for count in counts), counts   # kept or saturated
    for key, value in values(states).items():
        assert np.isfinite(value).all(), key


# -- one compilation per structure --------------------------------------------------------------

def _compilations(run) -> int:
    count = []
    listener = lambda event, *args, **kwargs: count.append(event) \
        if event == '/jax/core/compile/backend_compile_duration' else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        run()
    finally:
        jax.monitoring.clear_event_listeners()
    return len(count)


WEAK_VALUES = {
    'jnp.full': lambda: jnp.full(3, 1.0),
    'scalar': lambda: jnp.asarray(2.0),
    'nested': lambda: {'a': jnp.full(2, 0.5), 'b': jnp.ones(2) * 2.0},
}


@pytest.mark.parametrize('mode', ['eager', 'brainstate.jit', 'donating_jit'])
@pytest.mark.parametrize('make', list(WEAK_VALUES))
def test_weakly_typed_parameters_compile_once(make, mode):
    state = brainstate.ParamState(WEAK_VALUES[make]())
    opt = stateopt.Adam(lr=0.1).register_trainable_weights({'p': state})
    grads = {'p': jax.tree.map(lambda v: jnp.ones(jnp.shape(v), jnp.float32), state.value)}
    update = {'eager': opt.update, 'brainstate.jit': brainstate.transform.jit(opt.update),
              'donating_jit': stateopt.donating_jit(opt.update)}[mode]
    update(grads)                                 # compiles
    assert _compilations(lambda: [update(grads) for _ in range(3)]) == 0
    assert int(opt.step_count) == 4


# -- grads: what was passed, and what is expected -----------------------------------------------

def test_states_or_the_grads_loss_pair_passed_as_grads_are_named():
    states, opt = _sgd_momentum()
    before = snapshot(opt, states)
    pair = brainstate.transform.grad(lambda: sum(jnp.sum(s.value ** 2) for s in states.values()),
                                     grad_states=states, return_value=True)()
    for compiled in (False, True):      # eager, and inside brainstate.transform.jit
        update = (lambda g: brainstate.transform.jit(lambda: opt.update(g))()) if compiled else opt.update
        with pytest.raises(TypeError, match=r"grads\['[wb]'\] is a ParamState, not a gradient"):
            update(states)
        with pytest.raises(TypeError, match=r'\(grads, loss\) pair.*grads, loss ='):
            update(pair)
    assert_same(snapshot(opt, states), before)


def test_grad_errors_name_the_leaf_by_its_key_and_show_structures():
    layer = brainstate.ParamState({'weight': jnp.ones((2, 3)), 'bias': jnp.zeros(3)})
    opt = stateopt.SGD(lr=0.1).register_trainable_weights({'layers': {0: layer}})
    with pytest.raises(ValueError, match=r"'layers.0' at \['weight'\] has shape \(3, 2\)"):
        opt.update({'layers': {0: {'weight': jnp.ones((3, 2)), 'bias': jnp.ones(3)}}})
    with pytest.raises(ValueError, match=r"'layers.0' is float32\[3\], but the parameter is "
                                         r"\{'bias': float32\[3\], 'weight': float32\[2, 3\]\}"):
        opt.update({'layers': {0: jnp.ones(3)}})
    opt.update({'layers': {0: {'weight': jnp.ones((2, 3)), 'bias': jnp.ones(3)}}})
    layer.value = jnp.ones(3)
    with pytest.raises(ValueError, match=r"'layers.0' changed from \{'bias': float32\[3\], 'weight': "
                                         r"float32\[2, 3\]\} to float32\[3\]"):
        opt.update({'layers': {0: jnp.ones(3)}})


@pytest.mark.parametrize('cls', [stateopt.SGD, stateopt.LBFGS])
def test_a_closure_given_positionally_is_the_closure(cls):
    keyword_states, positional_states = make_params(), make_params()
    results = []
    for states, call in ((keyword_states, lambda opt, f: opt.step(closure=f)),
                         (positional_states, lambda opt, f: opt.step(f))):
        opt = cls(lr=0.1).register_trainable_weights(states)
        loss_fn = lambda states=states: sum(jnp.sum(s.value ** 2) for s in states.values())
        closure = lambda states=states, loss_fn=loss_fn: brainstate.transform.grad(
            loss_fn, grad_states=states, return_value=True)()
        results.append([float(call(opt, closure)) for _ in range(3)])
    assert results[0] == results[1] and results[0][2] < results[0][0]
    assert_same(values(keyword_states), values(positional_states))


# -- param groups ------------------------------------------------------------------------------

@pytest.mark.parametrize('hyperparams', [dict(lr=0.01), dict(lr=0.01, momentum=0.5, weight_decay=0.1)])
def test_torch_form_of_add_param_group_is_the_keyword_form(hyperparams):
    trajectories = []
    for form in ('keyword', 'torch'):
        states, opt = _sgd_momentum()
        if form == 'keyword':
            group = opt.add_param_group({'b': states['b']}, **hyperparams)
        else:
            group = opt.add_param_group({'params': {'b': states['b']}, **hyperparams})
        assert group.names == ['b'] and {k: group[k] for k in hyperparams} == pytest.approx(hyperparams)
        for _ in range(3):
            opt.update(GRADS)
        trajectories.append(values(states))
    assert_same(*trajectories)


def test_torch_form_with_a_key_given_twice_is_refused():
    states, opt = _sgd_momentum()
    before = snapshot(opt, states)
    with pytest.raises(TypeError, match="'lr' both in the group dict and as keyword"):
        opt.add_param_group({'params': {'b': states['b']}, 'lr': 0.01}, lr=0.02)
    assert_same(snapshot(opt, states), before) and len(opt.param_groups) == 1


@pytest.mark.parametrize('change', ['append', 'extend', 'insert', 'pop', 'remove', 'clear', 'setitem',
                                    'delitem', 'iadd'])
def test_param_groups_cannot_be_changed_in_place(change):
    states, opt = _sgd_momentum()
    groups = opt.param_groups
    act = {'append': lambda: groups.append({'params': {}}), 'extend': lambda: groups.extend([{}]),
           'insert': lambda: groups.insert(0, {}), 'pop': lambda: groups.pop(),
           'remove': lambda: groups.remove(groups[0]), 'clear': lambda: groups.clear(),
           'setitem': lambda: groups.__setitem__(0, {}), 'delitem': lambda: groups.__delitem__(0),
           'iadd': lambda: groups.__iadd__([{}])}[change]
    with pytest.raises(TypeError, match=r'add_param_group\(states, lr=\.\.\.\)'):
        act()
    assert len(opt.param_groups) == 1 and opt.param_groups[0].names == ['b', 'w']
    opt.param_groups[0]['lr'] = 0.05                  # a group is still edited through its keys
    assert opt.get_last_lr() == [0.05]


def test_tied_weights_take_their_gradient_once():
    shared = brainstate.ParamState(jnp.array([1.0, -2.0, 3.0]))
    tied = {'encoder': shared, 'decoder': shared}
    loss = lambda: jnp.sum(shared.value ** 2)
    for update in ('eager', 'jit'):
        shared.value = jnp.array([1.0, -2.0, 3.0])
        opt = stateopt.SGD(lr=0.1).register_trainable_weights(tied)
        step = opt.update if update == 'eager' else brainstate.transform.jit(opt.update)
        grads = brainstate.transform.grad(loss, grad_states=tied)()
        np.testing.assert_array_equal(grads['encoder'], grads['decoder'])   # the whole gradient, twice
        step(grads)
        assert_close_f32(shared.value, np.array([1.0, -2.0, 3.0]) * (1 - 0.1 * 2))
        assert opt.param_groups[0].names == ['decoder']
        grads = brainstate.transform.grad(loss, grad_states=tied)()
        step({'decoder': grads['decoder']})                                 # the first key alone
        assert_close_f32(shared.value, np.array([1.0, -2.0, 3.0]) * 0.8 ** 2, steps=2)
    with pytest.raises(KeyError, match="no gradient for 'decoder'"):
        opt.update({'encoder': grads['encoder']})


# -- counters, copies, the package --------------------------------------------------------------

def test_counters_print_their_number_and_convert():
    states, opt = _sgd_momentum()
    sched = stateopt.StepLR(base_lr=0.1, step_size=1)
    for _ in range(3):
        opt.update(GRADS)
        sched.step()
    assert repr(opt.step_count) == str(opt.step_count) == 'OptimState(value=3)'
    assert int(opt.step_count) == 3 and float(opt.step_count) == 3.0 and [0, 1, 2, 3][opt.step_count] == 3
    assert str(sched.last_epoch) == 'OptimState(value=3)' and int(sched.last_epoch) == 3
    assert '_exposed' not in repr(opt.opt_state)
    with pytest.raises(TypeError, match='holding one number'):
        int(opt.opt_state)

    @brainstate.transform.jit
    def traced():
        return int(opt.step_count)

    with pytest.raises(TypeError, match='traced'):
        traced()


def test_deepcopy_owns_independent_states_and_continues_the_same():
    states = make_params()
    sched = stateopt.StepLR(base_lr=0.1, step_size=1, gamma=0.5)
    opt = stateopt.Adam(lr=sched).register_trainable_weights(states)
    opt.update(GRADS)
    sched.step()
    twin = copy.deepcopy(opt)
    twin_states = twin.param_groups[0]['params']
    assert all(twin_states[key] is not states[key] for key in states)
    assert twin.lr_scheduler is not sched and twin.lr_scheduler.optimizer is twin
    for _ in range(2):
        twin.update(GRADS)
        twin.lr_scheduler.step()
    assert int(opt.step_count) == 1 and sched.get_last_lr() == [0.05]      # the original did not move
    for _ in range(2):
        opt.update(GRADS)
        sched.step()
    assert_same(values(states), values(twin_states))          # same compiled step, same inputs
    assert twin.lr_scheduler.get_last_lr() == sched.get_last_lr() == [0.0125]


def test_a_deep_copy_of_an_optimizer_that_compiled_a_loss_step_steps_itself():
    # the step compiled for a value_fn is bound to the optimizer that compiled it: a copy must not reuse it
    x = brainstate.ParamState(jnp.array([3.0, -1.0]))
    value_fn = lambda params: jnp.sum(params['x'] ** 2)
    opt = stateopt.LBFGS().register_trainable_weights({'x': x})
    opt.update({'x': 2 * x.value}, value_fn=value_fn)
    before = x.value
    twin = copy.deepcopy(opt)
    twin_x = twin.param_groups[0]['params']['x']
    twin.update({'x': 2 * twin_x.value}, value_fn=value_fn)
    assert int(opt.step_count) == 1 and int(twin.step_count) == 2
    assert_same(x.value, before)                     # the original did not move
    assert not np.array_equal(np.asarray(twin_x.value), np.asarray(before))


def test_functional_is_an_attribute_of_the_package():
    code = 'import stateopt; print(stateopt.functional.adamw_update.__name__)'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == 'adamw_update', result.stderr[-2000:]


# -- lr schedules ------------------------------------------------------------------------------

def test_a_number_replacing_a_schedule_shows():
    states = make_params()
    opt = stateopt.SGD(lr=optax.linear_schedule(0.1, 0.0, 10)).register_trainable_weights(states)
    group = opt.param_groups[0]
    assert 'lr=<schedule>' in repr(opt) and 'lr=<schedule>' in repr(group) and group.lr_schedule is not None
    opt.update(GRADS)
    assert opt.get_last_lr() == [pytest.approx(0.09)]
    group['lr'] = 0.5
    assert 'SGD(lr=0.5,' in repr(opt) and 'lr=0.5,' in repr(group) and group.lr_schedule is None
    assert opt.get_last_lr() == [0.5]


def test_a_negative_scheduled_lr_is_refused_eagerly():
    states = make_params()
    opt = stateopt.SGD(lr=optax.linear_schedule(0.1, -0.1, 4)).register_trainable_weights(states)
    for _ in range(3):                                     # lrs 0.1, 0.05, 0.0
        opt.update(GRADS)
    before = snapshot(opt, states)
    with pytest.raises(ValueError, match=r'param group 0 gives lr=-0\.05 at step 3'):
        opt.update(GRADS)
    assert_same(snapshot(opt, states), before)


# -- tx trees -----------------------------------------------------------------------------------

def test_a_pytree_mask_keyed_by_parameter_names_works():
    states = make_params()
    opt = stateopt.OptaxOptimizer(tx=optax.masked(optax.scale_by_sign(), {'w': True, 'b': False}), lr=0.1)
    opt.register_trainable_weights(states)
    start = values(states)
    opt.update({'w': jnp.full((3, 4), 0.5), 'b': jnp.full(5, 0.5)})
    assert_close_f32(values(states)['w'], start['w'] - 0.1)        # sign
    assert_close_f32(values(states)['b'], start['b'] - 0.05)       # masked: g


def test_a_pytree_mask_that_does_not_fit_a_group_says_how_to_write_it():
    states = make_params()
    opt = stateopt.OptaxOptimizer(tx=optax.masked(optax.scale_by_sign(), {'w': True, 'b': False}), lr=0.1)
    opt.register_trainable_weights(states)
    before = snapshot(opt, states)
    with pytest.raises(ValueError, match=r"(?s)could not create its state.*\{param name: value\}.*callable"):
        opt.add_param_group({'b': states['b']}, lr=0.01)
    assert_same(snapshot(opt, states), before)
    assert len(opt.param_groups) == 1
    wrong_keys = stateopt.OptaxOptimizer(tx=optax.masked(optax.scale_by_sign(), {('l1', 'w'): True}))
    with pytest.raises(ValueError, match=r"'l1.w'"):
        wrong_keys.register_trainable_weights({('l1', 'w'): brainstate.ParamState(jnp.ones(2))})
    assert not wrong_keys.param_groups[0].names


KEY_ERRORS = {
    'grads missing a key': lambda opt, states: opt.update({'w': GRADS['w']}),
    'grads with an unknown key': lambda opt, states: opt.update({**GRADS, 'c': jnp.ones(1)}),
    'a group key that does not exist': lambda opt, states: opt.param_groups[0]['learning_rate'],
    'an unknown hyper-parameter': lambda opt, states: opt.param_groups[0].__setitem__('rho', 0.9),
    'two States under one key': lambda opt, states: opt.register_trainable_weights(
        {'w': brainstate.ParamState(jnp.ones(2))}),
}


@pytest.mark.parametrize('case', list(KEY_ERRORS))
def test_key_errors_read_as_sentences(case):
    states, opt = _sgd_momentum()
    with pytest.raises(KeyError) as error:
        KEY_ERRORS[case](opt, states)
    assert str(error.value) == error.value.args[0] and len(str(error.value)) > 30   # not in quotes
