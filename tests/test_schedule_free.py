"""Schedule-free SGD and AdamW: evaluation at the average, per-group momentum, weight_lr_power."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref
import test_optimizer as generic
from catalogue import grad_sequence
from conftest import SHAPES, assert_close_f32, assert_same, make_params, values

import stateopt


@pytest.mark.parametrize('jit', [False, True], ids=['eager', 'jit'])
def test_schedule_free_evaluation_swaps_to_the_average_and_back(mlp, jit):
    params = mlp.states(brainstate.ParamState)
    start = jax.tree.map(np.asarray, {k: s.value for k, s in params.items()})
    opt = stateopt.ScheduleFreeAdamW(lr=0.05, weight_decay=0.01).register_trainable_weights(params)
    x = jnp.ones((4, 4))
    grads_seen = []

    def train_step():
        grads = brainstate.transform.grad(lambda: jnp.mean(mlp(x) ** 2), grad_states=params)()
        opt.update(grads)
        return grads

    def evaluate():
        with opt.evaluation():
            return mlp(x), {k: s.value for k, s in params.items()}

    if jit:
        train_step, evaluate = brainstate.transform.jit(train_step), brainstate.transform.jit(evaluate)
    for _ in range(4):
        grads_seen.append(jax.tree.map(np.asarray, train_step()))
    y = values(params)
    out, inside = evaluate()
    assert_same(values(params), y)                                   # y back, bit for bit
    averaged = opt.eval_params()
    assert set(averaged) == set(params)                              # keyed as registered
    for key in params:
        for leaf in start[key]:
            state, p = {}, np.asarray(start[key][leaf], np.float64)
            for grads in grads_seen:
                p, state = ref.schedule_free(p, grads[key][leaf], state, lr=0.05, betas=(0.9, 0.999),
                                             weight_decay=0.01, adam=True)
            assert_close_f32(y[key][leaf], p, steps=4)
            assert_close_f32(averaged[key][leaf], state['x'], steps=4)
            assert_close_f32(inside[key][leaf], state['x'], steps=4)
    for key, state in params.items():
        state.value = averaged[key]
    # the model ran at x: outputs near zero are sums of activations times weights of order 1
    assert_close_f32(out, mlp(x), steps=2, scale=1.0)


def test_schedule_free_groups_average_with_their_own_momentum():
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, 6)
    opt = stateopt.ScheduleFreeSGD(lr=0.1).register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, momentum=0.5)
    generic.run_eager(opt, states, grads)
    averaged = opt.eval_params()
    for key, momentum in (('w', 0.9), ('b', 0.5)):
        state, p = {}, np.asarray(start[key], np.float64)
        for g in grads:
            p, state = ref.schedule_free(p, g[key], state, lr=0.1, momentum=momentum)
        assert_close_f32(averaged[key], state['x'], steps=6)


@pytest.mark.parametrize('cls, hyperparams', [
    (stateopt.ScheduleFreeSGD, dict(momentum=0.9)),
    (stateopt.ScheduleFreeAdamW, dict(betas=(0.9, 0.999), adam=True)),
], ids=['ScheduleFreeSGD', 'ScheduleFreeAdamW'])
def test_schedule_free_weight_lr_power_weighs_the_average_by_the_schedule(cls, hyperparams):
    """Under a warm-up schedule, weight_lr_power changes the averaging weights of its group only."""
    schedule = optax.linear_schedule(0.01, 0.1, 8)
    states = make_params()
    start = values(states)
    grads = grad_sequence(SHAPES, 8, seed=5)
    opt = cls(lr=schedule).register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b']}, weight_lr_power=0.0)
    generic.run_eager(opt, states, grads)
    finals = {}
    for key, power in (('w', 2.0), ('b', 0.0), ('b-other', 2.0)):
        state, p = {}, np.asarray(start[key[0]], np.float64)
        for step, g in enumerate(grads):
            p, state = ref.schedule_free(p, np.asarray(g[key[0]], np.float64), state,
                                         lr=float(schedule(step)), weight_lr_power=power, **hyperparams)
        finals[key] = p
    assert_close_f32(values(states)['w'], finals['w'], steps=8)
    assert_close_f32(values(states)['b'], finals['b'], steps=8)
    assert np.abs(finals['b'] - finals['b-other']).max() > 1e-3
