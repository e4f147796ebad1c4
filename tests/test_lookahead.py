"""Lookahead's synchronisation of the slow weights."""

import brainstate
import jax.numpy as jnp
import optax
import pytest
from conftest import assert_close_f32

import stateopt


def test_lookahead_synchronises_every_sync_period():
    w = brainstate.ParamState(jnp.zeros(3))
    opt = stateopt.Lookahead(optax.identity(), sync_period=3, alpha=0.25, lr=1.0)
    opt = opt.register_trainable_weights({'w': w})
    seen = []
    for _ in range(7):
        opt.update({'w': jnp.ones(3)})
        seen.append(float(w.value[0]))
    # fast: -1, -2, -3 -> slow 0 + 0.25 * (-3 - 0) = -0.75; then -1.75, -2.75, -3.75 -> -1.5; -2.5
    assert seen == [-1.0, -2.0, -0.75, -1.75, -2.75, -1.5, -2.5]
    assert float(opt.state_dict()['state']['w']['slow'][0]) == -1.5


def _optax_lookahead_trajectory(fast, w0, grads, sync_period, alpha):
    """optax.lookahead's fast weights (the reference: the same rule, written by optax)."""
    tx = optax.lookahead(fast, sync_period=sync_period, slow_step_size=alpha, reset_state=False)
    params = optax.LookaheadParams.init_synced({'w': w0})
    state, out = tx.init(params), []
    for g in grads:
        updates, state = tx.update({'w': g}, state, params)
        params = optax.apply_updates(params, updates)
        out.append(params.fast['w'])
    return out


@pytest.mark.parametrize('make_fast', [lambda: optax.sgd(0.1, momentum=0.9), lambda: optax.adam(0.05)],
                         ids=['sgd-momentum', 'adam'])
def test_lookahead_with_a_complete_optax_base_follows_optax_lookahead(make_fast):
    w0 = jnp.array([1.0, -2.0, 0.5])
    grads = [jnp.array([0.3, -1.0, 2.0]) * (1 + 0.1 * t) for t in range(7)]
    w = brainstate.ParamState(w0)
    opt = stateopt.Lookahead(base_optimizer=make_fast(), sync_period=3, alpha=0.5)
    opt.register_trainable_weights({'w': w})
    want = _optax_lookahead_trajectory(make_fast(), w0, grads, 3, 0.5)
    for t, g in enumerate(grads):
        opt.update({'w': g})
        assert_close_f32(w.value, want[t], steps=t + 1, err_msg=f'step {t}')


def test_lookahead_refuses_an_lr_beside_a_complete_base_and_changes_nothing():
    with pytest.raises(ValueError, match='complete optax optimizer, which applies its own learning rate'):
        stateopt.Lookahead(base_optimizer=optax.adam(1e-3), lr=0.01)
    with pytest.raises(ValueError, match='would compound'):
        stateopt.Lookahead(base_optimizer=optax.adam(1e-3), lr=stateopt.StepLR(base_lr=0.1))
    opt = stateopt.Lookahead(base_optimizer=optax.adam(1e-3))
    opt.register_trainable_weights({'w': brainstate.ParamState(jnp.zeros(2))})
    with pytest.raises(ValueError, match='a group cannot set another'):
        opt.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, lr=0.1)
    assert len(opt.param_groups) == 1
    # A direction base keeps Lookahead's own default lr.
    assert stateopt.Lookahead(optax.scale_by_adam()).param_groups[0]['lr'] == pytest.approx(1e-3)
