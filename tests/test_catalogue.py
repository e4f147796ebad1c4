"""Catalogue-wide properties: convergence, no recompilation, every hyper-parameter matters."""

import functools

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from catalogue import CASES, CONVERGE, SHOWN_ELSEWHERE, grad_sequence
from conftest import SHAPES, assert_close_f32, make_params, values

import stateopt

CURVATURE = jnp.array([1.0, 2.0, 4.0, 7.0, 10.0])


def quadratic(x):
    return 0.5 * jnp.sum(CURVATURE * x ** 2)


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def minimise(cls, kwargs, loss, start, steps):
    """Run ``steps`` steps of the optimizer on ``loss`` inside one jitted for_loop."""
    x = brainstate.ParamState(jnp.asarray(start, jnp.float32))
    opt = cls(**kwargs).register_trainable_weights({'x': x})

    def step(_):
        grads = brainstate.transform.grad(lambda: loss(x.value), grad_states={'x': x})()
        opt.update(grads)

    brainstate.transform.jit(lambda: brainstate.transform.for_loop(step, jnp.arange(steps)))()
    return np.asarray(x.value)


converge_ids = [f'{cls.__name__}-{i}' for i, (cls, _, _) in enumerate(CONVERGE)]


@pytest.mark.parametrize('cls, kwargs, steps', CONVERGE, ids=converge_ids)
def test_converges_on_a_quadratic(cls, kwargs, steps):
    x = minimise(cls, kwargs, quadratic, np.full(5, 3.0), steps)
    assert float(quadratic(x)) < 1e-3, x


@pytest.mark.parametrize('cls, kwargs, steps', CONVERGE, ids=converge_ids)
def test_converges_on_rosenbrock(cls, kwargs, steps):
    x = minimise(cls, kwargs, rosenbrock, [-1.2, 1.0], steps)
    assert np.abs(x - 1.0).max() < 0.05 and float(rosenbrock(x)) < 1e-3, x


def test_every_optimizer_has_rows():
    covered = {case.cls for case in CASES} | {cls for cls, _, _ in CONVERGE}
    missing = [name for name in stateopt.OPTIMIZERS if getattr(stateopt, name) not in covered]
    assert not missing, f'no catalogue rows for {missing}'


@pytest.mark.parametrize('name', stateopt.OPTIMIZERS)
def test_every_hyperparameter_is_shown_to_matter(name):
    cls = getattr(stateopt, name)
    shown = set().union(*[case.effects for case in CASES if case.cls is cls],
                        SHOWN_ELSEWHERE.get(cls, ()))
    missing = set(cls._hyperparams) - shown - PLACEMENT_ONLY
    assert not missing, f'{name}: no catalogue row shows that {sorted(missing)} change the trajectory'


#: where the state lives, never what it holds: test_zero.py and test_sharding.py show it leaves the
#: trajectory as the unsharded run's
PLACEMENT_ONLY = {'state_sharding'}

effect_rows = [(case, name, value) for case in CASES for name, value in case.effects.items()]
#: the overridden group also holds a matrix: some choices show on matrices only (Adafactor's factored)
MATRIX = {'m': (2, 3)}


def two_group_run(case, override: dict) -> dict:
    """Final values after 6 steps, the second group (``b`` and a matrix ``m``) overriding ``override``."""
    grads = [{**g, **m} for g, m in zip(grad_sequence(SHAPES, 6, seed=7), grad_sequence(MATRIX, 6, seed=8))]
    states = {**make_params(), **make_params(seed=1, shapes=MATRIX)}
    opt = case.make().register_trainable_weights({'w': states['w']})
    opt.add_param_group({'b': states['b'], 'm': states['m']}, **override)
    for g in grads:
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
    return values(states)


@functools.cache
def baseline(case_id: str) -> dict:
    return two_group_run(next(case for case in CASES if case.id == case_id), {})


@pytest.mark.parametrize('case, name, value', effect_rows,
                         ids=[f'{case.id}-{name}' for case, name, _ in effect_rows])
def test_each_hyperparameter_changes_its_group(case, name, value):
    """A second group overriding one hyper-parameter moves differently; the first is untouched."""
    finals = [baseline(case.id), two_group_run(case, {name: value})]
    assert_close_f32(finals[1]['w'], finals[0]['w'], steps=6)   # a static override compiles another step
    changed = [key for key in ('b', 'm') if not np.array_equal(finals[0][key], finals[1][key])]
    assert changed, f'{name}={value!r} changed nothing'


@pytest.mark.parametrize('case', CASES, ids=[case.id for case in CASES])
def test_no_recompilation_after_the_first_step(case):
    states = make_params()
    opt = case.make().register_trainable_weights(states)
    dtypes = jax.tree.map(lambda leaf: leaf.dtype, opt.opt_state.value)
    sizes = []    # the compiled step is shared by equal optimizers: an earlier test may have compiled it
    for g in grad_sequence(SHAPES, 3):
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
        sizes.append(opt._get_plan().compiled._cache_size())
    assert sizes == sizes[:1] * 3, f'the eager step compiled again after the first step: {sizes}'
    traces = []
    step = brainstate.transform.jit(lambda g: (traces.append(1), opt.update(g)))
    for g in grad_sequence(SHAPES, 3):
        step({k: jnp.asarray(v) for k, v in g.items()})
    assert len(traces) == 1
    assert jax.tree.map(lambda leaf: leaf.dtype, opt.opt_state.value) == dtypes   # state keeps its dtypes
