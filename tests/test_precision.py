"""Low-precision parameters and state (stateopt/_precision.py): master weights in every mode, what the
user writes, state dicts, checkpoints and refusals; and every training-loop feature at once. The
catalogue-wide numbers are in test_optimizer.py."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from catalogue import grad_sequence
from conftest import MLP, MODES, SHAPES, assert_close_f32, assert_same, make_params, run_in_mode, values

import stateopt

BF16 = jnp.bfloat16
STEPS = 6


def bf16_params():
    states = make_params()
    for state in states.values():
        state.value = jnp.asarray(state.value, BF16)
    return states


def bf16_grads(steps, seed=0):
    return [{k: jnp.asarray(v, BF16) for k, v in g.items()} for g in grad_sequence(SHAPES, steps, seed=seed)]


def run(mode, grads, make=lambda: stateopt.AdamW(lr=1e-2, master_dtype=jnp.float32)):
    states = bf16_params()
    opt = make().register_trainable_weights(states)
    run_in_mode(opt, grads, mode)
    return opt, states


@pytest.mark.parametrize('mode', MODES)
def test_master_weights_follow_the_float32_rule_in_every_mode(mode):
    grads = bf16_grads(STEPS)
    opt, states = run(mode, grads)
    masters = opt.state_dict()['master_params']
    start = {k: np.asarray(v.value, np.float64) for k, v in bf16_params().items()}
    for k in SHAPES:
        want = reference.trajectory(reference.adam, start[k], [np.asarray(g[k], np.float64) for g in grads],
                                    lr=1e-2, weight_decay=1e-2, decoupled=True)[-1]
        assert_close_f32(masters[k], want, steps=STEPS)
        assert states[k].value.dtype == BF16
        np.testing.assert_array_equal(np.asarray(states[k].value), np.asarray(masters[k].astype(BF16)))


def test_small_steps_that_bf16_params_would_lose_are_kept_by_the_masters():
    """A 1e-4 step on a parameter of 1 is below half a bf16 ulp (2**-8): without masters it is lost
    every time; with them the steps add up and reach the parameter."""
    finals = {}
    for master in (None, jnp.float32):
        w = brainstate.ParamState(jnp.ones(3, BF16))
        opt = stateopt.SGD(lr=1e-4, master_dtype=master).register_trainable_weights({'w': w})
        for _ in range(100):
            opt.update({'w': jnp.ones(3, BF16)})
        finals[master] = float(w.value[0])
    assert finals[None] == 1.0
    assert finals[jnp.float32] == float(jnp.asarray(1 - 100 * 1e-4, BF16))


def test_a_value_the_user_writes_is_followed_by_its_master():
    w = brainstate.ParamState(jnp.ones(3, BF16))
    opt = stateopt.SGD(lr=1e-3, master_dtype=jnp.float32).register_trainable_weights({'w': w})
    for _ in range(3):
        opt.update({'w': jnp.ones(3, BF16)})
    w.value = w.value.at[0].set(5.0)         # a user's write (or a loaded model checkpoint)
    opt.update({'w': jnp.ones(3, BF16)})
    master = opt.master_params.value[0][0]
    assert float(master[0]) == pytest.approx(5.0 - 1e-3, abs=1e-6)   # from the written value
    assert float(master[1]) == pytest.approx(1.0 - 4e-3, abs=1e-6)   # the others keep their masters


def test_only_narrower_arrays_get_masters_and_moments_are_in_the_master_dtype():
    states = {'w': brainstate.ParamState(jnp.ones((3, 4), BF16)),
              'b': brainstate.ParamState(jnp.ones(5, jnp.float32)),
              'h': brainstate.ParamState({'k': jnp.ones(2, jnp.float16), 'f': jnp.ones(2, jnp.float32)})}
    opt = stateopt.Adam(master_dtype=jnp.float32).register_trainable_weights(states)
    masters = opt.state_dict()['master_params']
    assert set(masters) == {'w', 'h'}
    assert masters['h']['f'] is None and masters['h']['k'].dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(opt.state_dict()['state']))


def test_master_weights_in_state_dicts_and_checkpoints(tmp_path):
    grads = bf16_grads(2 * STEPS, seed=1)
    opt, states = run('eager', grads[:STEPS])
    stateopt.save_checkpoint(tmp_path / 'run.msgpack', {'model': states, 'opt': opt})
    for g in grads[STEPS:]:
        opt.update(g)
    want = (values(states), opt.state_dict()['master_params'])
    stateopt.load_checkpoint(tmp_path / 'run.msgpack', {'model': states, 'opt': opt})
    for g in grads[STEPS:]:
        opt.update(g)
    assert_same((values(states), opt.state_dict()['master_params']), want)


def test_state_dicts_across_master_settings():
    # float32 moments, as the masters' are: only the masters differ
    plain, states = run('eager', bf16_grads(2), make=lambda: stateopt.AdamW(lr=1e-2, state_dtype=jnp.float32))
    opt = stateopt.AdamW(lr=1e-2, master_dtype=jnp.float32).register_trainable_weights(states)
    opt.load_state_dict(plain.state_dict())          # saved without masters: made from the params
    for k, master in opt.state_dict()['master_params'].items():
        np.testing.assert_array_equal(np.asarray(master), np.asarray(states[k].value, np.float32))
    before = plain.state_dict()
    with pytest.raises(ValueError, match='has master_params .* keeps none; build it with the master_dtype'):
        plain.load_state_dict(opt.state_dict())
    assert_same(plain.state_dict(), before)


BAD_MASTERS = {
    'a missing param': (lambda m: {'w': m['w']}, KeyError, 'master copy of each low-precision param'),
    'a wrong dtype': (lambda m: {**m, 'b': np.zeros(5, np.float16)}, ValueError,
                      r"master_params\['b'\] has dtype float16, expected a float32"),
    'a NaN': (lambda m: {**m, 'b': np.full(5, np.nan, np.float32)}, ValueError, 'must be finite'),
    'not a dict': (lambda m: [m['w']], KeyError, 'master copy of each'),
}


@pytest.mark.parametrize('change, error, match', BAD_MASTERS.values(), ids=BAD_MASTERS)
def test_bad_master_params_are_refused_and_change_nothing(change, error, match):
    opt, states = run('eager', bf16_grads(2))
    sd = opt.state_dict()
    before = (opt.state_dict(), values(states))
    with pytest.raises(error, match=match):
        opt.load_state_dict({**sd, 'master_params': change(dict(sd['master_params']))})
    assert_same((opt.state_dict(), values(states)), before)


def test_moving_a_state_between_groups_keeps_its_master_and_moments():
    states = bf16_params()
    opt = stateopt.Adam(lr=1e-2, master_dtype=jnp.float32, state_dtype=BF16).register_trainable_weights(
        states)
    for g in bf16_grads(3):
        opt.update(g)
    before = opt.state_dict()
    opt.add_param_group({'b': states['b']}, lr=1e-3)
    after = opt.state_dict()
    assert_same((after['master_params'], after['state']), (before['master_params'], before['state']))


REFUSED = {
    'LBFGS state_dtype': (lambda: stateopt.LBFGS(state_dtype=BF16), TypeError, 'LBFGS takes no state_dtype: '
                                                                               'its memory holds'),
    'schedule-free state_dtype': (lambda: stateopt.ScheduleFreeAdamW(state_dtype=BF16), TypeError,
                                  'takes no state_dtype: its state holds the iterate z'),
    'Lookahead state_dtype': (lambda: stateopt.Lookahead(stateopt.Adam(), state_dtype=BF16), TypeError,
                              'takes no state_dtype: its state holds the slow weights'),
    'a base with masters': (lambda: stateopt.Lookahead(stateopt.Adam(master_dtype=jnp.float32)), ValueError,
                            'master_dtype=.* would not be used'),
    'an integer master': (lambda: stateopt.Adam(master_dtype=jnp.int32), ValueError,
                          'master_dtype must be a floating dtype'),
    'a string state dtype': (lambda: stateopt.Adam(state_dtype='small'), ValueError,
                             'state_dtype must be a floating dtype'),
    'per group': (lambda: stateopt.Adam().register_trainable_weights({'w': bf16_params()['w']})
                  .add_param_group({'b': bf16_params()['b']}, master_dtype=jnp.float32), ValueError,
                  "'master_dtype' of Adam is a setting of the whole optimizer"),
}


@pytest.mark.parametrize('make, error, match', REFUSED.values(), ids=REFUSED)
def test_what_the_precision_settings_refuse(make, error, match):
    with pytest.raises(error, match=match):
        make()


# -- every feature at once -----------------------------------------------------------------------

ACCUMULATE = 4


def make_run(seed):
    """A bf16 MLP: a two-group AdamW with a warm-up cosine scheduler, float32 masters, bf16 moments,
    accumulation over 4 calls, non-finite skipping, a decay mask and an EMA of the weights; its train
    step under donating_jit."""
    brainstate.random.seed(seed)
    model = MLP()
    params = model.states(brainstate.ParamState)
    for state in params.values():
        state.value = jax.tree.map(lambda v: v.astype(BF16), state.value)
    sched = stateopt.WarmupCosineSchedule(base_lr=1e-2, warmup_steps=2, total_steps=8)
    opt = stateopt.AdamW(lr=sched, weight_decay=0.1, weight_decay_mask=stateopt.decay_matrices_only,
                         master_dtype=jnp.float32, state_dtype=BF16, gradient_accumulation_steps=ACCUMULATE,
                         skip_nonfinite=True)
    opt.register_trainable_weights(params)
    opt.add_param_group(model.head.states(brainstate.ParamState), lr=3e-3)
    ema = stateopt.EMA(params, decay=0.9, warmup=True)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 4)), BF16)

    @stateopt.donating_jit
    def train_step(scale):
        grads = brainstate.transform.grad(
            lambda: jnp.mean(model(x * scale).astype(jnp.float32) ** 2), grad_states=params)()
        opt.update(grads)
        return opt.step_count.value             # counts applied steps only

    def call(scale):
        if int(train_step(scale)) > int(sched.last_epoch.value):   # applied: schedule and average move
            sched.step()
            ema.update()

    return params, opt, ema, call


# calls 5-8 are the second cycle, and call 6 has a NaN batch: that cycle is skipped
SCALES = [1.0, 0.5, 0.8, 1.2, 1.5, float('nan'), 0.7, 1.1, 0.9, 1.3, 0.6, 1.2, 0.8, 1.4, 1.0, 0.9,
          1.1, 0.7, 1.3, 0.5]


def test_every_feature_at_once_trains_resumes_and_counts(tmp_path):
    params, opt, ema, call = make_run(seed=0)
    for scale in SCALES[:12]:
        call(scale)
    # three cycles: the second skipped
    assert (int(opt.step_count.value), int(opt.skipped_steps.value), int(opt.micro_step.value)) == (2, 1, 0)
    call(SCALES[12])
    call(SCALES[13])                          # two calls into the fourth cycle
    stateopt.save_checkpoint(tmp_path / 'mid.msgpack', {'model': params, 'opt': opt, 'ema': ema})
    for scale in SCALES[14:]:
        call(scale)
    want = values(params)
    assert (int(opt.step_count.value), int(opt.skipped_steps.value), int(ema.count.value)) == (4, 1, 4)

    fresh_params, fresh_opt, fresh_ema, fresh_call = make_run(seed=1)   # other initial values
    stateopt.load_checkpoint(tmp_path / 'mid.msgpack', {'model': fresh_params, 'opt': fresh_opt,
                                                        'ema': fresh_ema})
    assert int(fresh_opt.micro_step.value) == 2
    for scale in SCALES[14:]:
        fresh_call(scale)
    assert_same(values(fresh_params), want)
    assert_same((fresh_opt.state_dict(), fresh_ema.state_dict()), (opt.state_dict(), ema.state_dict()))
    sd = opt.state_dict()
    assert all(leaf.dtype in (BF16, jnp.int32) for leaf in jax.tree.leaves(sd['state']))
    assert {leaf.dtype for leaf in jax.tree.leaves(sd['master_params'])} == {jnp.dtype(jnp.float32)}
    assert all(leaf.dtype == BF16 for leaf in jax.tree.leaves(values(params)))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(ema.state_dict()['averages']))
