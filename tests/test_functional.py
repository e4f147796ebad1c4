"""The functional API: pure functions that match the classes and the references."""

import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from catalogue import CASES, grad_sequence
from conftest import SHAPES, assert_close_f32, make_params, values

import stateopt
from stateopt import functional as F

ids = [case.id for case in CASES]


def functional_kwargs(case):
    kwargs = dict(case.kwargs)
    if 'betas' in case.cls._hyperparams and ('beta1' in kwargs or 'beta2' in kwargs):
        kwargs['betas'] = (kwargs.pop('beta1', 0.9), kwargs.pop('beta2', 0.999))
    return kwargs


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_functional_update_matches_reference_and_class(case):
    grads = grad_sequence(SHAPES, 8, seed=2)
    states = make_params()
    params = {k: jnp.asarray(v) for k, v in values(states).items()}
    kwargs = functional_kwargs(case)
    state = F.init(case.cls, params, **kwargs)
    dynamic = {k: v for k, v in kwargs.items() if case.cls._hyperparams[k].dynamic}
    static = {k: v for k, v in kwargs.items() if k not in dynamic}
    # hyper-parameters as jit arguments, as the classes pass them
    update = jax.jit(lambda g, s, p, hp: F.update(case.cls, g, s, p, **hp, **static))
    for g in grads:
        params, state = update({k: jnp.asarray(v) for k, v in g.items()}, state, params, dynamic)
    for key in SHAPES:
        want = reference.trajectory(case.rule, values(states)[key], [g[key] for g in grads], **case.ref)[-1]
        assert_close_f32(params[key], want, steps=8)
    opt = case.make().register_trainable_weights(states)
    for g in grads:
        opt.update({k: jnp.asarray(v) for k, v in g.items()})
    # the class compiles its own step (other constants, other fusions): equal to float32 rounding
    assert_close_f32(values(states), params, steps=8)
    assert_close_f32(opt.opt_state.value[0], state, steps=8)


def test_named_functions_per_array():
    p = jnp.array([1.0, -2.0])
    s = F.sgd_init(p, momentum=0.9)
    for _ in range(2):
        p, s = F.sgd_step(p, jnp.array([1.0, 1.0]), s, lr=0.1, momentum=0.9)
    assert_close_f32(p, np.array([1.0 - 0.29, -2.0 - 0.29]), steps=2)
    assert {'adamw_init', 'adamw_update', 'adamw_step', 'adam_step', 'sgd_update'} <= set(F.__all__)
    assert F.OPTIMIZERS['adamw'] is stateopt.AdamW


def test_functional_validates_hyperparameters():
    with pytest.raises(ValueError, match='lr'):
        F.sgd_update({'w': jnp.ones(1)}, F.sgd_init({'w': jnp.ones(1)}), {'w': jnp.ones(1)}, lr=-1.0)
    with pytest.raises(TypeError, match='momentm'):
        F.sgd_init({'w': jnp.ones(1)}, momentm=0.9)
    with pytest.raises(ValueError, match='schedule'):
        F.adam_update({'w': jnp.ones(1)}, F.adam_init({'w': jnp.ones(1)}), {'w': jnp.ones(1)},
                      lr=lambda count: 0.1)
    with pytest.raises(TypeError, match='keeps no state, so it takes no state_sharding'):
        F.adam_init({'w': jnp.ones(1)}, state_sharding='data')


def test_the_checked_in_stub_lists_every_generated_function_with_its_declared_defaults():
    sys.path.insert(0, str(pathlib.Path(__file__).parent / 'fixtures'))
    import make_functional_stub

    stub = make_functional_stub.STUB.read_text()
    assert stub == make_functional_stub.render(), \
        'stateopt/functional.pyi is stale: run python tests/fixtures/make_functional_stub.py'
    defined = re.findall(r'^def (\w+)\(', stub, re.M)
    assert sorted(defined) == sorted(name for name in F.__all__ if name != 'OPTIMIZERS')
    flat = ' '.join(stub.split())
    assert 'def adam_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001, betas: Any = ' \
           '(0.9, 0.999), eps: Any = 1e-08, weight_decay: Any = 0.0, amsgrad: Any = False,' in flat
