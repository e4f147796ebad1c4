"""The loop layer (stateopt/_loop.py): gradient accumulation and non-finite skipping in every mode,
in state dicts and checkpoints, and what they refuse. The catalogue-wide numbers are in
test_optimizer.py and test_group_coupled.py."""

import os
import re

import brainstate
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from catalogue import grad_sequence
from conftest import MLP, MODES, SHAPES, assert_close_f32, assert_same, make_params, run_in_mode, values

import stateopt

K = 3


def micro_grads(steps, seed=0, bad=()):
    """``steps`` micro-batch gradients; the calls in ``bad`` get a NaN in w."""
    grads = grad_sequence(SHAPES, steps, seed=seed)
    for call in bad:
        grads[call]['w'].flat[0] = np.nan
    return grads


def adam_reference(grads, steps):
    """Adam (lr 0.1) on the mean of each K calls, leaving out a cycle holding a NaN."""
    start = values(make_params())
    means = [{k: np.mean([g[k] for g in grads[i:i + K]], axis=0, dtype=np.float64) for k in SHAPES}
             for i in range(0, steps, K)]
    kept = [m for m in means if all(np.isfinite(v).all() for v in m.values())]
    return {k: reference.trajectory(reference.adam, start[k], [m[k] for m in kept], lr=0.1)[-1]
            for k in SHAPES}, len(means) - len(kept)


def run(mode, grads, **settings):
    states = make_params()
    opt = stateopt.Adam(lr=0.1, gradient_accumulation_steps=K, skip_nonfinite=True,
                        **settings).register_trainable_weights(states)
    run_in_mode(opt, [{k: jnp.asarray(v) for k, v in g.items()} for g in grads], mode)
    return opt, states


@pytest.mark.parametrize('mode', MODES)
def test_accumulation_and_skipping_run_alike_in_every_mode(mode):
    steps = 4 * K
    grads = micro_grads(steps, bad=[K + 1])              # the second cycle holds a NaN
    want, skipped = adam_reference(grads, steps)
    opt, states = run(mode, grads)
    assert (int(opt.step_count.value), int(opt.skipped_steps.value)) == (4 - skipped, skipped) == (3, 1)
    assert int(opt.micro_step.value) == 0
    for k in SHAPES:
        assert_close_f32(values(states)[k], want[k], steps=4)


def test_the_eager_step_compiles_once_for_waiting_and_applying_calls():
    grads = micro_grads(2 * K)
    opt, _ = run('eager', grads[:1])
    for g in grads[1:]:
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
    assert opt._plan.compiled._cache_size() == 1


def test_the_accumulator_is_one_array_per_parameter_in_the_chosen_dtype():
    states = {'w': brainstate.ParamState(jnp.ones((3, 4), jnp.bfloat16)),
              'b': brainstate.ParamState(jnp.ones(5, jnp.float32))}
    opt = stateopt.SGD(lr=0.1, gradient_accumulation_steps=2).register_trainable_weights(states)
    assert [a.dtype for a in opt.accumulated_grads.value] == [jnp.float32, jnp.float32]
    assert sorted(a.shape for a in opt.accumulated_grads.value) == [(3, 4), (5,)]
    # bf16 gradients summed in float32 keep 1 + 2**-8, which bf16 rounds to 1
    for dtype, want in ((None, 1 + 2.0 ** -8), (jnp.bfloat16, 1.0)):
        opt = stateopt.SGD(lr=0.1, gradient_accumulation_steps=3, accumulation_dtype=dtype)
        opt.register_trainable_weights({'w': states['w']})
        for g in (1.0, 2.0 ** -8):
            opt.update({'w': jnp.full((3, 4), g, jnp.bfloat16)})
        assert opt.accumulated_grads.value[0].dtype == (dtype or jnp.float32)
        assert float(opt.accumulated_grads.value[0][0, 0]) == want


def test_a_state_dict_mid_cycle_resumes_exactly():
    grads = micro_grads(4 * K, seed=1, bad=[2])
    first, states = run('eager', grads[:K + 1])        # one call into the second cycle
    saved, saved_params = first.state_dict(), values(states)
    assert int(saved['accumulation']['micro_step']) == 1 and set(saved['accumulation']['grads']) == {'w', 'b'}
    for g in grads[K + 1:]:
        first.update({k: jnp.asarray(v) for k, v in g.items()})

    resumed_states = make_params()
    for k, state in resumed_states.items():
        state.value = jnp.asarray(saved_params[k])
    resumed = stateopt.Adam(lr=0.1, gradient_accumulation_steps=K, skip_nonfinite=True)
    resumed.register_trainable_weights(resumed_states).load_state_dict(saved)
    for g in grads[K + 1:]:
        resumed.update({k: jnp.asarray(v) for k, v in g.items()})
    assert_same(values(resumed_states), values(states))
    assert int(resumed.skipped_steps.value) == int(first.skipped_steps.value) == 1


def test_a_checkpoint_mid_cycle_resumes_exactly(tmp_path):
    brainstate.random.seed(0)
    model = MLP()
    params = model.states(brainstate.ParamState)
    opt = stateopt.AdamW(lr=1e-2, gradient_accumulation_steps=2, skip_nonfinite=True)
    opt.register_trainable_weights(params)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 4)), jnp.float32)

    @brainstate.transform.jit
    def train_step(scale):
        grads = brainstate.transform.grad(lambda: jnp.mean(model(x * scale) ** 2), grad_states=params)()
        opt.update(grads)

    for scale in (1.0, 0.5, 2.0):
        train_step(scale)
    stateopt.save_checkpoint(tmp_path / 'run.msgpack', {'model': params, 'opt': opt})
    for scale in (1.5, 0.7, 1.1):
        train_step(scale)
    want = values(params)
    stateopt.load_checkpoint(tmp_path / 'run.msgpack', {'model': params, 'opt': opt})
    assert int(opt.micro_step.value) == 1 and int(opt.step_count.value) == 1
    for scale in (1.5, 0.7, 1.1):
        train_step(scale)
    assert_same(values(params), want)


def test_state_dicts_across_settings():
    grads = micro_grads(K + 1)
    plain = stateopt.Adam(lr=0.1).register_trainable_weights(make_params())
    plain.update({k: jnp.asarray(v) for k, v in grads[0].items()})
    # saved without the loop layer: nothing summed and nothing skipped
    opt, _ = run('eager', grads)
    opt.load_state_dict(plain.state_dict())
    assert int(opt.micro_step.value) == 0 and int(opt.skipped_steps.value) == 0
    assert all(float(jnp.abs(a).max()) == 0 for a in opt.accumulated_grads.value)
    # at an applied step it loads into an optimizer without the layer's accumulation
    opt, _ = run('eager', grads[:K])
    no_skip = stateopt.Adam(lr=0.1, gradient_accumulation_steps=K).register_trainable_weights(make_params())
    sd = opt.state_dict()
    with pytest.raises(ValueError, match='does not skip non-finite steps; build it with skip_nonfinite=True'):
        no_skip.load_state_dict(sd)
    plain.load_state_dict({k: v for k, v in sd.items() if k != 'skipped_steps'})
    # gradients pending: refused where they would be lost
    opt, _ = run('eager', grads[:K + 1])
    sd = {k: v for k, v in opt.state_dict().items() if k != 'skipped_steps'}
    before = plain.state_dict()
    with pytest.raises(ValueError, match=r'gradients of 1 update calls not yet stepped on'):
        plain.load_state_dict(sd)
    assert_same(plain.state_dict(), before)


BAD_ACCUMULATION = {
    'micro_step too large': (lambda a: {**a, 'micro_step': K}, ValueError, r"micro_step'\] is 3, but"),
    'negative micro_step': (lambda a: {**a, 'micro_step': -1}, ValueError, r'must be >= 0'),
    'a missing parameter': (lambda a: {**a, 'grads': {'w': a['grads']['w']}}, KeyError,
                            r'one summed gradient'),
    'a wrong shape': (lambda a: {**a, 'grads': {**a['grads'], 'b': np.zeros(4, np.float32)}}, ValueError,
                      r"accumulation\['grads'\]\['b'\] has shape \(4,\)"),
    'a NaN': (lambda a: {**a, 'grads': {**a['grads'], 'b': np.full(5, np.nan, np.float32)}}, ValueError,
              r"accumulation\['grads'\]\['b'\] must be finite"),
    'not a dict': (lambda a: [1, 2], ValueError, r'accumulation must be a dict'),
}


@pytest.mark.parametrize('change, error, match', BAD_ACCUMULATION.values(), ids=BAD_ACCUMULATION)
def test_a_bad_accumulation_entry_is_refused_and_changes_nothing(change, error, match):
    opt, states = run('eager', micro_grads(K + 1))
    sd = opt.state_dict()
    before = (opt.state_dict(), values(states))
    with pytest.raises(error, match=match):
        opt.load_state_dict({**sd, 'accumulation': change(dict(sd['accumulation']))})
    assert_same((opt.state_dict(), values(states)), before)


MISUSE = {
    'zero steps': (dict(gradient_accumulation_steps=0), ValueError, 'gradient_accumulation_steps must be an '
                                                                    'integer >= 1, got 0'),
    'a float count': (dict(gradient_accumulation_steps=2.0), ValueError, 'an integer >= 1'),
    'an integer dtype': (dict(accumulation_dtype=jnp.int32), ValueError, 'accumulation_dtype must be a '
                                                                          'floating dtype'),
    'not a dtype': (dict(accumulation_dtype='fast'), ValueError, 'accumulation_dtype must be a floating'),
    'a string flag': (dict(skip_nonfinite='yes'), ValueError, 'skip_nonfinite'),
}


@pytest.mark.parametrize('kwargs, error, match', MISUSE.values(), ids=MISUSE)
def test_invalid_settings_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        stateopt.AdamW(**kwargs)


def test_the_settings_belong_to_the_whole_optimizer():
    states = make_params()
    opt = stateopt.Adam(gradient_accumulation_steps=2).register_trainable_weights({'w': states['w']})
    with pytest.raises(ValueError, match="'gradient_accumulation_steps' of Adam is a setting of the whole"):
        opt.add_param_group({'b': states['b']}, gradient_accumulation_steps=4)
    with pytest.raises(ValueError, match='is fixed when the Adam is built'):
        opt.skip_nonfinite = True
    assert opt.gradient_accumulation_steps == 2 and opt.skip_nonfinite is False


def test_registering_mid_cycle_is_refused_and_changes_nothing():
    states = make_params()
    opt = stateopt.Adam(gradient_accumulation_steps=2).register_trainable_weights({'w': states['w']})
    opt.update({'w': jnp.ones(SHAPES['w'])})
    before = opt.state_dict()
    with pytest.raises(ValueError, match=r'summed the gradients of 1 of its 2 update calls'):
        opt.add_param_group({'b': states['b']}, lr=0.1)
    assert_same(opt.state_dict(), before)
    assert len(opt.param_groups) == 1
    opt.update({'w': jnp.ones(SHAPES['w'])})
    opt.add_param_group({'b': states['b']}, lr=0.1)     # at an applied step
    assert [a.shape for a in opt.accumulated_grads.value] == [SHAPES['w'], SHAPES['b']]


def test_sofo_refuses_accumulation_with_the_reason_and_takes_skipping():
    with pytest.raises(TypeError, match='SOFO takes no gradient_accumulation_steps: SOFO solves'):
        stateopt.SOFO(lambda x: x, lambda o, t: 0.0, gradient_accumulation_steps=2)
    assert stateopt.SOFO(lambda x: x, lambda o, t: 0.0, skip_nonfinite=True).skip_nonfinite is True


def test_lookahead_takes_the_loop_settings_itself():
    with pytest.raises(ValueError, match=r'gradient_accumulation_steps=2 would not be used'):
        stateopt.Lookahead(stateopt.Adam(gradient_accumulation_steps=2))
    opt = stateopt.Lookahead(stateopt.Adam(), gradient_accumulation_steps=2).register_trainable_weights(
        make_params())
    assert opt.gradient_accumulation_steps == 2


def test_an_lr_schedule_sees_applied_steps():
    """A schedule of the step count moves once per applied step, not per call."""
    states = make_params()
    opt = stateopt.SGD(lr=lambda count: 0.1 * (count + 1), gradient_accumulation_steps=2)
    opt.register_trainable_weights({'w': states['w']})
    start = values(states)['w']
    for _ in range(4):
        opt.update({'w': jnp.ones(SHAPES['w'])})
    # steps at counts 0 and 1: lr 0.1 then 0.2, each on the mean gradient 1
    assert_close_f32(values(states)['w'], start - 0.3, steps=2)


@pytest.mark.parametrize('page', ['accumulation.md', 'skipping.md', 'precision.md'])
def test_the_guide_pages_code_runs_as_written(page):
    """The pages' python blocks, run in order in one namespace (their asserts check the numbers)."""
    with open(os.path.join(os.path.dirname(__file__), '..', 'docs', page)) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
    assert blocks
    namespace = {}
    for block in blocks:
        exec(compile(block, page, 'exec'), namespace)


# -- against optax's own compositions: the same numbers ---------------------------------------------

def _optax_run(tx, grads):
    params = {k: jnp.asarray(v) for k, v in values(make_params()).items()}
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_accumulation_matches_optax_multisteps():
    steps = 4 * K
    grads = micro_grads(steps, seed=8)
    states = make_params()
    opt = stateopt.Adam(lr=0.1, gradient_accumulation_steps=K).register_trainable_weights(states)
    for g in grads:
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
    want = _optax_run(optax.MultiSteps(optax.adam(0.1), every_k_schedule=K), grads)
    for k in SHAPES:
        assert_close_f32(values(states)[k], want[k], steps=4)


def test_skipping_matches_optax_apply_if_finite():
    grads = micro_grads(8, seed=9, bad=[2, 5])
    states = make_params()
    opt = stateopt.Adam(lr=0.1, skip_nonfinite=True).register_trainable_weights(states)
    for g in grads:
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
    want = _optax_run(optax.apply_if_finite(optax.adam(0.1), max_consecutive_errors=100), grads)
    for k in SHAPES:
        assert_close_f32(values(states)[k], want[k], steps=6)
    assert int(opt.skipped_steps.value) == 2
