"""Optimizers whose algorithm couples the parameters of a param group (L-BFGS's memory, Prodigy's
step-size estimate), against references that run on the group as one flat vector."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_catalogue as generic_catalogue
import test_optimizer as generic
from catalogue import GROUP_CASES, grad_sequence
from conftest import SHAPES, assert_close_f32, assert_same, make_params, values

import stateopt
from stateopt import functional as F

group_ids = [case.id for case in GROUP_CASES]


def flat(arrays: dict, keys=('w', 'b')) -> np.ndarray:
    return np.concatenate([np.asarray(arrays[k], np.float64).ravel() for k in keys])


# Their state spans the group (L-BFGS's curvature pairs, Prodigy's step-size estimate), so the
# references run on the group as one flat vector. Gradients come from a fixed random sequence
# (Prodigy) or from a convex objective at the current params: a 1e-5 gradient makes a 1e-5
# L-BFGS step whose curvature pair float32 cannot resolve, and Prodigy's estimate only grows
# along consistent descent.

CURVATURES = {key: np.linspace(1.0, 4.0, int(np.prod(shape))).reshape(shape) for key, shape in SHAPES.items()}


def objective_gradient(arrays: dict) -> dict:
    """The gradient of sum(c/2 (p - 0.5)² + 0.1 sin(3p)), convex for c >= 1."""
    return {k: CURVATURES[k] * (np.asarray(a, np.float64) - 0.5) + 0.3 * np.cos(3 * np.asarray(a, np.float64))
            for k, a in arrays.items()}


def run_group(case, source, steps, seed=0, group=None, reference=True):
    """Run ``case`` on w and b (one group; with ``group``, b in a second group with those
    overrides) and its reference on each group's flat vector: (params, [(keys, reference)])."""
    states = make_params()
    start = values(states)
    groups = [('w', 'b')] if group is None else [('w',), ('b',)]
    opt = case.make().register_trainable_weights({k: states[k] for k in groups[0]})
    if group is not None:
        opt.add_param_group({'b': states['b']}, **group)
    sequence = grad_sequence(SHAPES, steps, seed=seed)
    for step in range(steps):
        grads = sequence[step] if source == 'random' else objective_gradient(values(states))
        opt.update({k: jnp.asarray(v, jnp.float32) for k, v in grads.items()})
    references = []
    for keys, overrides in zip(groups if reference else (), ({}, group or {})):
        p, state = flat(start, keys), {}
        for step in range(steps):
            current = dict(zip(keys, np.split(p, np.cumsum([start[k].size for k in keys])[:-1])))
            grads = sequence[step] if source == 'random' else objective_gradient(
                {k: current[k].reshape(SHAPES[k]) for k in keys})
            p, state = case.rule(p, flat(grads, keys), state, **case.ref_with(**overrides))
            p = p.astype(np.float32).astype(np.float64)   # stored as the float32 params are
        references.append((keys, p))
    return values(states), references


runs = [(case, source) for case in GROUP_CASES
        for source in (('objective',) if case.cls is stateopt.LBFGS else ('random', 'objective'))]
run_ids = [f'{case.id}-{source}' for case, source in runs]


@pytest.mark.parametrize('case, source', runs, ids=run_ids)
def test_group_trajectory_matches_reference(case, source):
    got, [(keys, want)] = run_group(case, source, 12)
    assert_close_f32(flat(got, keys), want, steps=12)


@pytest.mark.parametrize('case, source', runs, ids=run_ids)
def test_group_overrides_follow_reference(case, source):
    got, references = run_group(case, source, 12, seed=1, group=case.group)
    for keys, want in references:
        assert_close_f32(flat(got, keys), want, steps=12)


@pytest.mark.parametrize('case', GROUP_CASES[::2], ids=group_ids[::2])
def test_group_rows_pass_the_generic_properties(case):
    generic.test_tiny_lr_group_stays_bit_identical(case)
    generic.test_eager_jit_and_for_loop_agree(case)
    generic.test_state_dict_round_trip_continues_bit_identically(case)
    generic_catalogue.test_no_recompilation_after_the_first_step(case)


effect_rows = [(case, name, value) for case in GROUP_CASES for name, value in case.effects.items()]


@pytest.mark.parametrize('case, name, value', effect_rows,
                         ids=[f'{case.id}-{name}' for case, name, _ in effect_rows])
def test_each_group_hyperparameter_changes_its_group(case, name, value):
    """As the generic test, along the objective's descent (where Prodigy's estimate grows)."""
    finals = [run_group(case, 'objective', 6, group=override, reference=False)[0]
              for override in ({}, {name: value})]
    assert_close_f32(finals[1]['w'], finals[0]['w'], steps=6)   # a static override compiles another step
    assert not np.array_equal(finals[0]['b'], finals[1]['b']), f'{name}={value!r} changed nothing'


@pytest.mark.parametrize('case', GROUP_CASES, ids=group_ids)
def test_group_functional_update_matches_class_and_reference(case):
    states = make_params()
    start = values(states)
    params = {k: jnp.asarray(v) for k, v in start.items()}
    state = F.init(case.cls, params, **case.kwargs)
    dynamic = {k: v for k, v in case.kwargs.items() if case.cls._hyperparams[k].dynamic}
    static = {k: v for k, v in case.kwargs.items() if k not in dynamic}
    update = jax.jit(lambda g, s, p, hp: F.update(case.cls, g, s, p, **hp, **static))
    for _ in range(8):
        grads = objective_gradient(params)
        params, state = update({k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}, state, params,
                               dynamic)
    got, [(keys, want)] = run_group(case, 'objective', 8)
    assert_close_f32(flat(params, keys), want, steps=8)
    assert_close_f32(got, params, steps=8)            # the class compiles its own step


@pytest.mark.parametrize('case', GROUP_CASES, ids=group_ids)
def test_group_rows_accumulate_and_skip_along_the_reference(case):
    """3 calls whose gradients average to the objective's make one reference step; a cycle with a NaN
    is skipped whole (the mean holds it) and counted."""
    steps, rng = 8, np.random.default_rng(5)
    states = make_params()
    opt = case.make(gradient_accumulation_steps=3, skip_nonfinite=True).register_trainable_weights(
        {k: states[k] for k in ('w', 'b')})
    for step in range(steps + 1):
        grads = objective_gradient(values(states))
        noise = [{k: 0.1 * rng.standard_normal(SHAPES[k]) for k in SHAPES} for _ in range(2)]
        noise.append({k: -(noise[0][k] + noise[1][k]) for k in SHAPES})    # the three sum to zero
        before = values(states)
        for call, n in enumerate(noise):
            g = {k: np.asarray(grads[k] + n[k], np.float32) for k in SHAPES}
            if step == 4 and call == 1:
                g['b'][0] = np.nan
            opt.update({k: jnp.asarray(v) for k, v in g.items()})
        if step == 4:
            assert_same(values(states), before)
    assert (int(opt.step_count.value), int(opt.skipped_steps.value)) == (steps, 1)
    _, [(keys, want)] = run_group(case, 'objective', steps)
    # the mean of three float32 gradients carries a few ulps of them
    assert_close_f32(flat(values(states), keys), want, steps=steps + 2)
