"""stateopt.EMA: exponential moving averages (constant, warmed up) and SWA of model weights, checked
against the numpy rules in reference.py, eagerly and compiled; swapping, state dicts, checkpoints,
copies, and what it refuses (everything unchanged)."""

import copy
import os
import re
from dataclasses import dataclass, field

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from conftest import MLP, SHAPES, assert_close_f32, assert_same, make_params, values

import stateopt
from stateopt._state_dict import StateDictKeyError

STEPS = 8


def weight_sequence(steps=STEPS, seed=1, shapes=SHAPES):
    """``steps`` successive values of each weight, drifting like a training run's (float32)."""
    rng = np.random.default_rng(seed)
    walk = {k: np.cumsum(rng.standard_normal((steps, *s)), axis=0) for k, s in shapes.items()}
    return [{k: v[i].astype(np.float32) for k, v in walk.items()} for i in range(steps)]


@dataclass(frozen=True)
class Case:
    """One averaging rule: how to build it, and the numpy reference's arguments."""

    id: str
    swa: bool = False
    options: dict = field(default_factory=dict)    # EMA(...) keywords, or EMA.swa's start

    def build(self, states):
        if self.swa:
            return stateopt.EMA.swa(states, **self.options)
        return stateopt.EMA(states, **self.options)

    def expected(self, first, sequence):
        """``{key: [average after each update]}`` from the reference rules."""
        out = {}
        for key in first:
            xs = [step[key] for step in sequence]
            if self.swa:
                out[key] = reference.swa_trajectory(xs, self.options.get('start', 0))
                continue
            rule = {name: self.options[name] for name in ('decay', 'warmup', 'start') if name in self.options}
            rule.update({short: self.options[name] for name, short in
                         (('warmup_gamma', 'gamma'), ('warmup_power', 'power')) if name in self.options})
            out[key] = reference.ema_trajectory(first[key], xs, **rule)
        return out


CASES = [
    Case('constant', options=dict(decay=0.9)),
    Case('default-decay'),
    Case('copy', options=dict(decay=0.0)),
    Case('constant-after-start', options=dict(decay=0.5, start=3)),
    Case('warmup-num-updates', options=dict(decay=0.999, warmup=True)),
    Case('warmup-num-updates-capped', options=dict(decay=0.6, warmup=True, start=1)),
    Case('warmup-power-timm', options=dict(decay=0.999, warmup='power')),
    Case('warmup-power', options=dict(decay=0.95, warmup='power', warmup_gamma=2.0, warmup_power=0.75,
                                      start=2)),
    Case('swa', swa=True),
    Case('swa-from-3', swa=True, options=dict(start=3)),
]
IDS = [case.id for case in CASES]


def run_eager(ema, params, sequence):
    for step in sequence:
        for key, value in step.items():
            params[key].value = jnp.asarray(value)
        ema.update()


def run_jit(ema, params, sequence):
    @brainstate.transform.jit
    def train_step(step):
        for key, value in step.items():
            params[key].value = value
        ema.update()

    for step in sequence:
        train_step({k: jnp.asarray(v) for k, v in step.items()})


def run_for_loop(ema, params, sequence):
    stacked = {k: jnp.asarray(np.stack([step[k] for step in sequence])) for k in sequence[0]}

    def body(step):
        for key, value in step.items():
            params[key].value = value
        ema.update()

    brainstate.transform.for_loop(body, stacked)


def run_scan(ema, params, sequence):
    stacked = {k: jnp.asarray(np.stack([step[k] for step in sequence])) for k in sequence[0]}

    def body(carry, step):
        for key, value in step.items():
            params[key].value = value
        ema.update()
        return carry + 1, None

    count, _ = brainstate.transform.scan(body, jnp.int32(0), stacked)
    assert int(count) == len(sequence)


RUNS = {'eager': run_eager, 'jit': run_jit, 'for_loop': run_for_loop, 'scan': run_scan}


# -- the rules, on every path ---------------------------------------------------------------------

@pytest.mark.parametrize('run', RUNS)
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_the_averages_follow_the_published_rule(case, run):
    params = make_params()
    first = values(params)
    ema = case.build(params)
    sequence = weight_sequence()
    if run == 'eager':      # every step, against the reference
        expected = case.expected(first, sequence)
        for t, step in enumerate(sequence):
            run_eager(ema, params, [step])
            assert_close_f32(values(ema.averages), {k: v[t] for k, v in expected.items()}, steps=t + 1,
                             err_msg=f'{case.id} after update {t}')
    else:
        RUNS[run](ema, params, sequence)
        expected = case.expected(first, sequence)
        assert_close_f32(values(ema.averages), {k: v[-1] for k, v in expected.items()}, steps=STEPS,
                         err_msg=case.id)
    assert int(ema.count) == STEPS
    assert all(avg.value.dtype == jnp.float32 for avg in ema.averages.values())


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_eager_and_compiled_updates_agree(case):
    sequence = weight_sequence(seed=3)
    results = {}
    for run in RUNS:
        params = make_params()
        ema = case.build(params)
        RUNS[run](ema, params, sequence)
        results[run] = values(ema.averages)
    for run in ('jit', 'for_loop', 'scan'):
        assert_close_f32(results[run], results['eager'], steps=STEPS, err_msg=f'{case.id} {run}')


def test_the_first_warmed_up_decays_are_the_documented_numbers():
    """A State that jumps from 0 to 1 and stays: the average is 1 - prod(d_t)."""
    w = brainstate.ParamState(jnp.zeros(()))
    ema = stateopt.EMA({'w': w}, decay=0.999, warmup=True)
    w.value = jnp.ones(())
    seen = []
    for _ in range(3):
        ema.update()
        seen.append(float(ema.averages['w'].value))
    # d = 1/10, 2/11, 3/12
    assert_close_f32(np.array(seen), 1 - np.cumprod([1 / 10, 2 / 11, 3 / 12]), steps=3)


def test_a_tree_valued_state_and_nested_keys_are_averaged_leaf_by_leaf(mlp):
    params = mlp.states(brainstate.ParamState)
    nested = {'model': dict(params), 'extra': {'scale': brainstate.ParamState(jnp.ones(3))}}
    ema = stateopt.EMA(nested, decay=0.5)
    assert set(ema.averages) == {'model', 'extra'} and set(ema.averages['model']) == set(params)
    first = jax.tree.map(np.asarray, {k: s.value for k, s in params.items()})
    for state in params.values():
        state.value = jax.tree.map(lambda x: x + 2.0, state.value)
    ema.update()
    got = jax.tree.map(np.asarray, {k: s.value for k, s in ema.averages['model'].items()})
    assert_close_f32(got, jax.tree.map(lambda x: x + 1.0, first))
    assert sorted(ema.state_dict()['averages']) == ['extra.scale', 'model.head.weight', 'model.l1.weight']


def test_a_state_reachable_twice_is_averaged_once():
    w = brainstate.ParamState(jnp.zeros(2))
    ema = stateopt.EMA({'a': w, 'b': w}, decay=0.5)
    w.value = jnp.ones(2)
    ema.update()
    assert list(ema.averages) == ['a'] and ema.averages['a'].value.tolist() == [0.5, 0.5]


# -- low precision -----------------------------------------------------------------------------------

def test_bfloat16_weights_get_float32_averages():
    """Increments of 1e-3 of the weight: a bfloat16 average (8 bits) would round them all away."""
    w = brainstate.ParamState(jnp.ones(4, jnp.bfloat16))
    ema = stateopt.EMA({'w': w}, decay=0.999)
    assert ema.averages['w'].value.dtype == jnp.float32
    sequence = [{'w': np.full(4, 1.0 + 0.25 * (t % 2), np.float32)} for t in range(STEPS)]
    bf16 = [{'w': step['w'].astype(jnp.bfloat16)} for step in sequence]
    run_eager(ema, {'w': w}, bf16)
    expected = reference.ema_trajectory(np.ones(4), [step['w'].astype(np.float32) for step in bf16],
                                        decay=0.999)[-1]
    assert_close_f32(np.asarray(ema.averages['w'].value), expected, steps=STEPS)
    assert float(ema.averages['w'].value[0]) > 1.0          # a bfloat16 average would still be 1.0
    assert w.value.dtype == jnp.bfloat16


def test_dtype_chooses_the_averages_dtype():
    params = make_params()
    ema = stateopt.EMA(params, decay=0.5, dtype=jnp.bfloat16)
    assert all(avg.value.dtype == jnp.bfloat16 for avg in ema.averages.values())
    before = values(ema.averages)
    run_eager(ema, params, weight_sequence(steps=1))
    after = values(ema.averages)
    step = weight_sequence(steps=1)[0]
    for key in params:   # computed in float32, rounded once to bfloat16
        wanted = (0.5 * before[key].astype(np.float32) + 0.5 * step[key]).astype(jnp.bfloat16)
        np.testing.assert_allclose(after[key].astype(np.float32), wanted.astype(np.float32),
                                   rtol=2 ** -7, atol=2 ** -7 * float(np.max(np.abs(wanted))))


# -- swapping the averages in ---------------------------------------------------------------------

def trained_ema(dtype=jnp.float32):
    params = {k: brainstate.ParamState(s.value.astype(dtype)) for k, s in make_params().items()}
    ema = stateopt.EMA(params, decay=0.7)
    run_eager(ema, params, [{k: v.astype(dtype) for k, v in step.items()} for step in weight_sequence(3)])
    for state in params.values():       # the trained weights move on after the last update
        state.value = state.value + jnp.asarray(1.0, dtype)
    return ema, params


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16], ids=['float32', 'bfloat16'])
def test_swapped_puts_the_averages_in_and_the_trained_values_back(dtype):
    ema, params = trained_ema(dtype)
    trained = {k: s.value for k, s in params.items()}
    trained_numbers = values(params)
    averages = values(ema.averages)
    with ema.swapped() as swapped:
        assert swapped is ema
        for key, state in params.items():
            assert state.value.dtype == dtype
            np.testing.assert_array_equal(np.asarray(state.value), averages[key].astype(dtype))
    for key, state in params.items():
        assert state.value is trained[key]
    assert_same(values(params), trained_numbers)
    assert_same(values(ema.averages), averages)


def test_swapped_restores_the_trained_values_when_the_body_raises():
    ema, params = trained_ema()
    trained = values(params)
    with pytest.raises(ZeroDivisionError):
        with ema.swapped():
            for state in params.values():
                state.value = state.value * 0.0       # the evaluation even writes the weights
            raise ZeroDivisionError('the evaluation failed')
    assert_same(values(params), trained)
    with ema.swapped():                                 # and it can be swapped again
        pass
    assert_same(values(params), trained)


def test_what_swapped_refuses_inside_the_block():
    ema, params = trained_ema()
    trained, averages, count = values(params), values(ema.averages), int(ema.count)
    with ema.swapped():
        with pytest.raises(RuntimeError, match=r'swapped\(\) inside `with ema.swapped\(\):`'):
            with ema.swapped():
                pass
        with pytest.raises(RuntimeError, match=r'update\(\) inside .*after the with block'):
            ema.update()
        with pytest.raises(RuntimeError, match=r'copy_to\(\) inside'):
            ema.copy_to()
    assert_same(values(params), trained)
    assert_same(values(ema.averages), averages)
    assert int(ema.count) == count


def test_swapped_values_do_not_alias_the_averages():
    """An eager optimizer step inside the block donates the States' buffers: the averages survive."""
    ema, params = trained_ema()
    averages = values(ema.averages)
    opt = stateopt.SGD(lr=0.1).register_trainable_weights(params)
    with ema.swapped():
        opt.update({k: jnp.ones_like(s.value) for k, s in params.items()})
    ema.update()       # reads every average
    assert_same(jax.tree.map(np.isfinite, values(ema.averages)), jax.tree.map(np.isfinite, averages))


def test_copy_to_writes_the_averages_into_other_states():
    ema, params = trained_ema()
    other = {k: brainstate.ParamState(jnp.zeros(s, jnp.bfloat16)) for k, s in SHAPES.items()}
    ema.copy_to(other)
    for key, state in other.items():
        assert state.value.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(state.value),
                                      np.asarray(ema.averages[key].value).astype(jnp.bfloat16))
    trained = values(params)
    ema.copy_to()
    assert_same(values(params), values(ema.averages))
    assert not any(np.array_equal(trained[k], values(params)[k]) for k in params)


@pytest.mark.parametrize('states, error, match', [
    ({'w': brainstate.ParamState(jnp.zeros(SHAPES['w']))}, KeyError, r"states lacks 'b'"),
    ({**{k: brainstate.ParamState(jnp.zeros(s)) for k, s in SHAPES.items()},
      'c': brainstate.ParamState(jnp.zeros(1))}, KeyError, r"unknown 'c'"),
    ({'w': brainstate.ParamState(jnp.zeros((4, 3))), 'b': brainstate.ParamState(jnp.zeros(5))},
     ValueError, r"'w' holds float32\[4, 3\], but its average holds float32\[3, 4\]"),
    ({'w': jnp.zeros(SHAPES['w']), 'b': brainstate.ParamState(jnp.zeros(5))}, TypeError,
     'not a brainstate.State'),
], ids=['missing', 'unknown', 'shape', 'not-a-state'])
def test_copy_to_refuses_states_that_do_not_fit_and_changes_nothing(states, error, match):
    ema, _ = trained_ema()
    before = {k: np.asarray(s.value) for k, s in states.items() if isinstance(s, brainstate.State)}
    with pytest.raises(error, match=match):
        ema.copy_to(states)
    for key, value in before.items():
        np.testing.assert_array_equal(np.asarray(states[key].value), value)


# -- state dicts and checkpoints ------------------------------------------------------------------

@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_state_dict_round_trip_resumes_exactly(case):
    sequence = weight_sequence(steps=6)
    params = make_params()
    ema = case.build(params)
    run_eager(ema, params, sequence[:3])
    sd = ema.state_dict()
    assert sd['version'] == 1 and sd['mode'] == ('swa' if case.swa else 'ema')
    assert int(sd['count']) == 3 and sorted(sd['averages']) == sorted(SHAPES)
    saved = jax.tree.map(np.asarray, sd)

    resumed_params = make_params()
    resumed = case.build(resumed_params)
    resumed.load_state_dict(saved)
    assert_same(values(resumed.averages), values(ema.averages))
    assert int(resumed.count) == 3
    run_eager(ema, params, sequence[3:])
    run_eager(resumed, resumed_params, sequence[3:])
    assert_same(values(resumed.averages), values(ema.averages))
    assert int(resumed.count) == int(ema.count) == 6


def test_state_dict_arrays_stay_valid_after_later_updates():
    """The eager update reuses the averages' buffers, never ones the caller holds."""
    params = make_params()
    ema = stateopt.EMA(params, decay=0.5)
    sd = ema.state_dict()
    held = ema.averages['w'].value
    ema.load_state_dict(jax.tree.map(lambda x: x, sd))     # loaded arrays the caller still holds
    model_values = {k: s.value for k, s in params.items()}
    run_eager(ema, params, weight_sequence(steps=3))
    for array in (*jax.tree.leaves(sd), held, *model_values.values()):
        np.asarray(array)                                     # raises if the buffer was donated
    assert ema._compiled._cache_size() == 1


def snapshot(ema, params):
    return values(params), values(ema.averages), int(ema.count)


def _sd_with(change):
    """A change to a state dict, applied to a copy."""
    def apply(sd):
        sd = {**sd, 'averages': dict(sd['averages'])}
        change(sd)
        return sd
    return apply


def _set(*keys, value):
    def change(sd):
        target = sd
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value(target.get(keys[-1])) if callable(value) else value
    return change


BAD_STATE_DICTS = [
    ('missing-entry', _sd_with(lambda sd: sd.pop('count')), KeyError, r'the state dict lacks .count.'),
    ('unknown-entry', _sd_with(_set('lr', value=0.1)), KeyError, r"the state dict has the unknown 'lr'"),
    ('missing-average', _sd_with(lambda sd: sd['averages'].pop('w')), KeyError, r"averages lacks 'w'"),
    ('unknown-average', _sd_with(_set('averages', 'c', value=np.zeros(3, np.float32))), KeyError,
     r"averages has the unknown 'c'"),
    ('shape', _sd_with(_set('averages', 'w', value=np.zeros((4, 3), np.float32))), ValueError,
     r"averages\['w'\] has shape \(4, 3\)"),
    ('dtype', _sd_with(_set('averages', 'b', value=np.zeros(5, np.float16))), ValueError,
     r"averages\['b'\] has dtype float16"),
    ('structure', _sd_with(_set('averages', 'b', value={'b': np.zeros(5, np.float32)})), ValueError,
     r"averages\['b'\] is a dict of 1 entries"),
    ('nan', _sd_with(_set('averages', 'b', value=np.array([0, 0, np.nan, 0, 0], np.float32))), ValueError,
     r"averages\['b'\] must be finite, but holds nan at index \(2,\)"),
    ('inf', _sd_with(_set('averages', 'w', value=np.full((3, 4), np.inf, np.float32))), ValueError,
     r"averages\['w'\] must be finite"),
    ('negative-count', _sd_with(_set('count', value=np.int32(-2))), ValueError,
     r'count must be >= 0 \(it is a count\), but holds -2'),
    ('float-count', _sd_with(_set('count', value=np.float32(2))), ValueError, r'count has dtype float32'),
    ('mode', _sd_with(_set('mode', value='swa')), ValueError, r"mode is the str 'swa'.*EMA.swa"),
    ('version', _sd_with(_set('version', value=2)), ValueError, r'version is the int 2'),
    ('averages-not-a-dict', _sd_with(_set('averages', value=[1.0])), ValueError, r'averages must be a dict'),
]


@pytest.mark.parametrize('name, change, error, match', BAD_STATE_DICTS, ids=[b[0] for b in BAD_STATE_DICTS])
def test_a_bad_state_dict_is_refused_naming_the_entry_and_nothing_changes(name, change, error, match):
    ema, params = trained_ema()
    before = snapshot(ema, params)
    sd = change(jax.tree.map(np.asarray, ema.state_dict()))
    with pytest.raises(error, match=match):
        ema.check_state_dict(sd)
    with pytest.raises(error, match=match):
        ema.load_state_dict(sd)
    assert_same(snapshot(ema, params), before)
    if error is KeyError:
        with pytest.raises(StateDictKeyError):
            ema.load_state_dict(sd)


def test_a_state_dict_that_is_not_a_dict_is_refused():
    ema, params = trained_ema()
    with pytest.raises(TypeError, match='expects a dict'):
        ema.load_state_dict([1, 2])


def test_checkpoint_round_trip_with_model_and_optimizer(tmp_path):
    sequence = weight_sequence(steps=6)
    params = make_params()
    opt = stateopt.Adam(lr=0.01).register_trainable_weights(params)
    ema = stateopt.EMA(params, decay=0.9, warmup=True)
    swa = stateopt.EMA.swa(params, start=1)

    def train(steps):
        for step in steps:
            opt.update({k: jnp.asarray(v) for k, v in step.items()})
            ema.update()
            swa.update()

    train(sequence[:3])
    target = {'model': params, 'optimizer': opt, 'ema': ema, 'swa': swa}
    stateopt.save_checkpoint(tmp_path / 'run.msgpack', target)
    saved = (snapshot(ema, params), snapshot(swa, params), jax.tree.map(np.asarray, opt.state_dict()))
    train(sequence[3:])
    stateopt.load_checkpoint(tmp_path / 'run.msgpack', target)
    assert_same((snapshot(ema, params), snapshot(swa, params), jax.tree.map(np.asarray, opt.state_dict())),
                saved)
    # and on its own
    stateopt.save_checkpoint(tmp_path / 'ema.msgpack', ema)
    fresh = stateopt.EMA(make_params(seed=5), decay=0.9, warmup=True)
    stateopt.load_checkpoint(tmp_path / 'ema.msgpack', fresh)
    assert_same(values(fresh.averages), values(ema.averages))
    assert int(fresh.count) == int(ema.count) == 3


def test_a_checkpoint_that_does_not_fit_the_ema_changes_nothing(tmp_path):
    params = make_params()
    ema = stateopt.EMA(params, decay=0.9)
    run_eager(ema, params, weight_sequence(steps=2))
    stateopt.save_checkpoint(tmp_path / 'run.msgpack', {'model': params, 'ema': ema})
    other = make_params(seed=4, shapes={'w': (3, 4), 'b': (6,)})
    other_ema = stateopt.EMA(other, decay=0.9)
    before = snapshot(other_ema, other)
    with pytest.raises(stateopt.CheckpointMismatchError):
        stateopt.load_checkpoint(tmp_path / 'run.msgpack', {'model': other, 'ema': other_ema})
    assert_same(snapshot(other_ema, other), before)
    swa = stateopt.EMA.swa(make_params())
    swa_before = snapshot(swa, params)
    with pytest.raises(stateopt.CheckpointMismatchError, match="mode is the str 'ema'"):
        stateopt.load_checkpoint(tmp_path / 'run.msgpack', {'model': params, 'ema': swa})
    assert_same(snapshot(swa, params), swa_before)


# -- refusals ----------------------------------------------------------------------------------------

BAD_OPTIONS = [
    ('decay-one', dict(decay=1.0), ValueError, r'decay must be < 1.0, got 1.0; give a decay in \[0, 1\)'),
    ('decay-negative', dict(decay=-0.1), ValueError, r'decay must be >= 0.0, got -0.1'),
    ('decay-nan', dict(decay=float('nan')), ValueError, r'decay must be a number, got nan'),
    ('decay-string', dict(decay='0.9'), ValueError, r"decay must be a real number, got '0.9'"),
    ('warmup', dict(warmup='cosine'), ValueError, r"warmup must be False, True or 'power', got 'cosine'"),
    ('warmup-int', dict(warmup=1), ValueError, r"warmup must be False, True or 'power', got 1"),
    ('gamma-without-power-warmup', dict(warmup=True, warmup_gamma=2.0), ValueError,
     r"warmup_gamma applies to warmup='power' only"),
    ('power-without-warmup', dict(warmup_power=0.75), ValueError, r"warmup_power applies to warmup='power'"),
    ('gamma', dict(warmup='power', warmup_gamma=0.0), ValueError, r'warmup_gamma must be > 0.0, got 0.0'),
    ('power', dict(warmup='power', warmup_power=-1), ValueError, r'warmup_power must be > 0.0, got -1'),
    ('start', dict(start=-1), ValueError, r'start must be an integer from 0 to 2147483647, got -1'),
    ('start-float', dict(start=1.5), ValueError, r'start must be an integer .* got 1.5'),
    ('dtype', dict(dtype=jnp.int32), ValueError, r'dtype must be a floating dtype .* got int32'),
    ('unknown-option', dict(momentum=0.9), TypeError,
     r"unexpected keyword argument 'momentum'; its signature is EMA\(states, decay=0.999, \*, warmup=False"),
]


@pytest.mark.parametrize('name, options, error, match', BAD_OPTIONS, ids=[b[0] for b in BAD_OPTIONS])
def test_a_bad_option_is_refused_naming_it(name, options, error, match):
    params = make_params()
    before = values(params)
    with pytest.raises(error, match=match):
        stateopt.EMA(params, **options)
    assert_same(values(params), before)


@pytest.mark.parametrize('states, error, match', [
    ({'w': brainstate.ParamState(jnp.ones(2)), 'n': brainstate.State(jnp.arange(3))}, ValueError,
     r"the State 'n' holds int32 values, which cannot be averaged"),
    ({'flag': brainstate.State({'on': jnp.array([True])})}, ValueError,
     r"the State 'flag'\['on'\] holds bool"),
    ({'w': np.ones(2)}, TypeError, r"EMA\(states=...\): the entry at key 'w' is a ndarray, not a brainstate"),
    (brainstate.ParamState(jnp.ones(2)), TypeError, r'got a single State'),
    ({}, ValueError, r'needs at least one State'),
], ids=['int', 'bool', 'array', 'single-state', 'empty'])
def test_states_that_cannot_be_averaged_are_refused_naming_the_key(states, error, match):
    with pytest.raises(error, match=match):
        stateopt.EMA(states)


def test_swa_takes_no_decay_options():
    with pytest.raises(TypeError, match="unexpected keyword argument 'decay'"):
        stateopt.EMA.swa(make_params(), decay=0.9)


def test_raw_jax_jit_is_refused_and_changes_nothing():
    ema, params = trained_ema()
    before = snapshot(ema, params)
    with pytest.raises(brainstate.TraceContextError, match=r'raw JAX transform .* nothing was changed'):
        jax.jit(lambda: ema.update())()
    assert_same(snapshot(ema, params), before)


def test_a_state_whose_shape_changed_is_refused_and_nothing_changes():
    ema, params = trained_ema()
    params['b'].value = jnp.zeros(6)
    before = snapshot(ema, params)
    with pytest.raises(ValueError, match=r"the State 'b' now holds float32\[6\], but its average was made "
                                         r'for float32\[5\]; nothing was changed'):
        ema.update()
    assert_same(snapshot(ema, params), before)
    params['b'].value = jnp.zeros(5, jnp.bfloat16)
    before = snapshot(ema, params)
    with pytest.raises(ValueError, match=r'now holds bfloat16\[5\]'):
        brainstate.transform.jit(ema.update)()
    assert_same(snapshot(ema, params), before)


# -- copies, graphs, compilation ---------------------------------------------------------------------

def test_brainstate_graph_sees_the_averages_and_the_count_only(mlp):
    ema = stateopt.EMA(mlp.states(brainstate.ParamState))
    found = brainstate.graph.states(ema)
    assert sorted(found.keys(), key=str) == sorted([('averages', ('head', 'weight')),
                                                    ('averages', ('l1', 'weight')), ('count',)], key=str)
    assert all(isinstance(state, stateopt.OptimState) for state in found.values())


def test_deepcopy_owns_its_averages_and_states():
    ema, params = trained_ema()
    twin = copy.deepcopy(ema)
    assert_same(snapshot(twin, twin.states), snapshot(ema, params))
    assert twin.averages['w'] is not ema.averages['w'] and twin.states['w'] is not params['w']
    before = snapshot(ema, params)
    run_eager(twin, twin.states, weight_sequence(steps=2))
    assert int(twin.count) == 5 and int(ema.count) == 3
    assert_same(snapshot(ema, params), before)
    # copied together, the copy follows the copy (the EMA first: a bare State cannot be deep-copied)
    both = copy.deepcopy({'ema': ema, 'params': params})
    assert both['ema'].states['w'] is both['params']['w']


def test_eager_updates_compile_once():
    params = make_params()
    ema = stateopt.EMA(params, decay=0.9, warmup='power')
    run_eager(ema, params, weight_sequence(steps=4))
    assert ema._compiled._cache_size() == 1


def test_repr_shows_the_rule_and_the_count():
    ema, _ = trained_ema()
    assert repr(ema) == 'EMA(decay=0.7, warmup=False, start=0, states=2, count=3)'
    assert repr(stateopt.EMA.swa(make_params(), start=4)) == 'EMA.swa(start=4, states=2, count=0)'


# -- the guide page -------------------------------------------------------------------------------

def test_the_guide_pages_code_runs_as_written():
    """docs/ema.md's python blocks, run in order in one namespace (their asserts check the numbers)."""
    page = os.path.join(os.path.dirname(__file__), '..', 'docs', 'ema.md')
    with open(page) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
    assert len(blocks) >= 4
    namespace = {}
    for block in blocks:
        exec(compile(block, 'ema.md', 'exec'), namespace)


def test_an_mlp_trained_with_an_ema_in_jit_matches_the_rule():
    brainstate.random.seed(1)
    model = MLP()
    params = model.states(brainstate.ParamState)
    opt = stateopt.AdamW(lr=0.01).register_trainable_weights(params)
    ema = stateopt.EMA(params, decay=0.8)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 4)), jnp.float32)

    @brainstate.transform.jit
    def train_step():
        grads = brainstate.transform.grad(lambda: jnp.mean(model(x) ** 2), grad_states=params)()
        opt.update(grads)
        ema.update()

    history = [jax.tree.map(np.asarray, {k: s.value for k, s in params.items()})]
    for _ in range(5):
        train_step()
        history.append(jax.tree.map(np.asarray, {k: s.value for k, s in params.items()}))
    for key in params:
        for leaf in history[0][key]:
            expected = reference.ema_trajectory(history[0][key][leaf], [h[key][leaf] for h in history[1:]],
                                                decay=0.8)[-1]
            assert_close_f32(np.asarray(ema.averages[key].value[leaf]), expected, steps=5)
