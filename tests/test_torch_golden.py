"""The torch-named optimizers against torch.optim itself, and where they go beyond it.

Golden trajectories come from tests/fixtures/torch_optim.npz, written by
tests/fixtures/make_torch_optim_fixtures.py with torch 2.13 (torch is not imported here).
"""

import json
from pathlib import Path

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from conftest import assert_close_f32, assert_same, snapshot, values

import stateopt
from stateopt import functional as F
from stateopt.optimizers.radam import radam_sma_length

FIXTURE = np.load(Path(__file__).parent / 'fixtures' / 'torch_optim.npz')
META = json.loads(str(FIXTURE['meta']))
CONFIGS = META['configs']


def stateopt_kwargs(torch_class: str, kwargs: dict) -> dict:
    """torch's constructor arguments as stateopt's (only Adafactor names them differently)."""
    kwargs = {key: tuple(value) if isinstance(value, list) else value for key, value in kwargs.items()}
    if torch_class == 'Adafactor':
        renamed = {'beta2_decay': 'decay_rate', 'd': 'clip_threshold'}
        kwargs = {renamed.get(key, key): -value if key == 'beta2_decay' else value
                  for key, value in kwargs.items()}
        if 'eps' in kwargs and kwargs['eps'][0] is None:   # torch's None: the dtype's machine epsilon
            kwargs['eps'] = (float(np.finfo(np.float32).eps), kwargs['eps'][1])
    return kwargs


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_reproduces_torch_trajectory(config):
    spec = CONFIGS[config]
    first, second = META['groups']
    states = {name: brainstate.ParamState(jnp.asarray(FIXTURE[f'init/{name}'])) for name in first + second}
    opt = getattr(stateopt, spec['class'])(**stateopt_kwargs(spec['class'], spec['kwargs']))
    opt.register_trainable_weights({name: states[name] for name in first})
    opt.add_param_group({name: states[name] for name in second},
                        **stateopt_kwargs(spec['class'], spec['overrides']))
    grads = {name: FIXTURE[f'grads/{name}'] for name in states}
    for step in range(len(grads['w'])):
        opt.update({name: jnp.asarray(g[step]) for name, g in grads.items()})
        for name, state in states.items():
            assert_close_f32(state.value, FIXTURE[f'{config}/{name}'][step], steps=step + 1,
                             err_msg=f'{config} {name} step {step + 1}')


def test_fixture_was_written_by_torch_2_13_and_covers_the_torch_named_catalogue():
    assert META['torch'].startswith('2.13')
    covered = {spec['class'] for spec in CONFIGS.values()}
    torch_named = {'SGD', 'Adam', 'AdamW', 'Adagrad', 'Adadelta', 'RMSprop', 'Adamax', 'NAdam', 'RAdam',
                   'Rprop', 'Adafactor'}
    assert covered == torch_named


def rprop_run(lrs, grads):
    """Positions of one Rprop parameter driven by ``lrs[t]`` at step ``t``."""
    w = brainstate.ParamState(jnp.zeros(3))
    opt = stateopt.Rprop(lr=lrs[0]).register_trainable_weights({'w': w})
    positions = []
    for lr, g in zip(lrs, grads):
        opt.param_groups[0]['lr'] = lr
        opt.update({'w': jnp.asarray(g, jnp.float32)})
        positions.append(np.asarray(w.value))
    return positions, opt


RPROP_GRADS = [[1.0, -1.0, 0.5], [2.0, 1.0, 0.5], [1.0, 1.0, -0.5], [3.0, 2.0, -1.0], [1.0, -1.0, -1.0]]


def test_rprop_lr_change_rescales_the_step_sizes():
    """torch's Rprop ignores a new lr; here the step sizes scale by lr_t / lr_{t-1}."""
    lrs = [0.01, 0.01, 0.005, 0.005, 0.02]
    got, _ = rprop_run(lrs, RPROP_GRADS)
    p, state, want = np.zeros(3), {}, []
    for t, g in enumerate(RPROP_GRADS):
        if t and lrs[t] != lrs[t - 1]:
            state['step_size'] = state['step_size'] * lrs[t] / lrs[t - 1]
        p, state = reference.rprop(p, np.asarray(g), state, lr=lrs[0])
        want.append(p)
    assert_close_f32(np.asarray(got), np.asarray(want), steps=len(lrs))


def test_rprop_follows_an_optax_schedule_and_a_zero_lr_changes_nothing():
    schedule = optax.piecewise_constant_schedule(0.01, {2: 0.5})
    w = brainstate.ParamState(jnp.zeros(2))
    opt = stateopt.Rprop(lr=schedule).register_trainable_weights({'w': w})
    for _ in range(4):
        opt.update({'w': jnp.ones(2)})
    assert_close_f32(w.value, -np.full(2, 0.01 + 0.012 + 0.5 * (0.0144 + 0.01728)), steps=4)
    frozen, opt = rprop_run([0.01, 0.0, 0.0], RPROP_GRADS[:3])
    before = snapshot(opt, {})
    np.testing.assert_array_equal(frozen[1], frozen[0])
    np.testing.assert_array_equal(frozen[2], frozen[0])
    opt.update({'w': jnp.ones(3)})
    assert_same(snapshot(opt, {})[1], before[1])  # a zero-lr step also keeps the state


def test_rprop_accepts_clipping_which_keeps_every_sign_and_refuses_weight_decay():
    # braintools' signature: clipping is applied, and Rprop's rule sees only the signs, so the
    # trajectory is torch's unclipped one.
    w = brainstate.ParamState(jnp.zeros(3))
    opt = stateopt.Rprop(lr=0.01, grad_clip_norm=1e-3, grad_clip_value=1e-4)
    opt.register_trainable_weights({'w': w})
    p, state = np.zeros(3), {}
    for t, g in enumerate(RPROP_GRADS):
        opt.update({'w': jnp.asarray(g, jnp.float32)})
        p, state = reference.rprop(p, np.asarray(g), state, lr=0.01)
        assert_close_f32(w.value, p, steps=t + 1, err_msg=f'step {t}')
    opt = stateopt.Rprop().register_trainable_weights({'w': brainstate.ParamState(jnp.zeros(2))})
    with pytest.raises(TypeError, match='weight_decay'):
        opt.add_param_group({'v': brainstate.ParamState(jnp.zeros(2))}, weight_decay=0.1)


def test_adafactor_lr_none_is_torch_default_lr():
    finals = []
    for lr in (None, 1e-2):
        w = brainstate.ParamState(jnp.full((2, 3), 2.0))
        opt = stateopt.Adafactor(lr=lr).register_trainable_weights({'w': w})
        for step in range(3):
            opt.update({'w': jnp.full((2, 3), 1.0 + step)})
        finals.append(values({'w': w}))
        assert opt.param_groups[0]['lr'] == pytest.approx(1e-2)
    assert_same(*finals)   # lr=None is checked into 1e-2: the same compiled step on the same inputs


def test_adafactor_zero_gradient_rows_stay_finite_with_a_tiny_eps1():
    """eps1 = 1e-30 squares to 0 in float32; zero rows must give zero steps, not NaN."""
    w = brainstate.ParamState(jnp.ones((2, 3)))
    opt = stateopt.Adafactor(weight_decay=0.0).register_trainable_weights({'w': w})
    opt.update({'w': jnp.array([[0.0, 0.0, 0.0], [1.0, -1.0, 2.0]])})
    assert np.isfinite(np.asarray(w.value)).all()
    np.testing.assert_array_equal(w.value[0], np.ones(3))


def test_rmsprop_momentum_of_a_bufferless_group_cannot_be_raised():
    states = {'w': brainstate.ParamState(jnp.ones(2))}
    opt = stateopt.RMSprop(lr=0.1).register_trainable_weights(states)
    opt.update({'w': jnp.ones(2)})
    before = snapshot(opt, states)
    with pytest.raises(ValueError, match='momentum'):
        opt.param_groups[0]['momentum'] = 0.9
    assert_same(snapshot(opt, states), before)
    buffered = stateopt.RMSprop(lr=0.1, momentum=0.9).register_trainable_weights(
        {'v': brainstate.ParamState(jnp.ones(2))})
    buffered.param_groups[0]['momentum'] = 0.0     # a buffered group may switch momentum off
    assert float(buffered.param_groups[0]['momentum']) == 0.0


def test_torch_spellings_and_functional_names():
    assert stateopt.NAdam is stateopt.Nadam
    assert {'NAdam', 'Nadam', 'RMSprop', 'Rprop', 'Adafactor'} <= set(stateopt.OPTIMIZERS)
    for name in ('adagrad', 'adadelta', 'rmsprop', 'adamax', 'nadam', 'radam', 'rprop', 'adafactor'):
        assert {f'{name}_init', f'{name}_update', f'{name}_step'} <= set(F.__all__)
    p = jnp.ones((2, 2))
    p, _ = F.rprop_step(p, jnp.ones((2, 2)), F.rprop_init(p), lr=0.25)
    assert_close_f32(p, np.full((2, 2), 0.75))


@pytest.mark.parametrize('beta2', [0.5, 0.9, 0.99, 0.999, 0.9999])
def test_radam_sma_length_is_accurate_in_float32(beta2):
    b = float(np.float32(beta2))   # the float32 beta2 the compiled step receives
    steps = np.array([1, 2, 5, 6, 10, 100, 1000, 100000], np.float64)
    want = (2 / (1 - b) - 1) - 2 * steps * b ** steps / (1 - b ** steps)
    got = jax.vmap(lambda t: radam_sma_length(beta2, t))(jnp.asarray(steps, jnp.float32))
    assert_close_f32(got, want, scale=1.0)   # relative accuracy: the length is 1 at step 1, up to 2e4 later
