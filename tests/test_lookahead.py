"""Lookahead's synchronisation of the slow weights."""

import brainstate
import jax.numpy as jnp
import optax

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
