"""donating_jit is a drop-in for brainstate.transform.jit on train steps.

Each row is a train step written for ``brainstate.transform.jit`` in one of its call
forms (arguments, static arguments, keyword arguments, return values, the model's other
States: batch-norm statistics and the PRNG key). The same step under
``stateopt.donating_jit`` must return the same values and leave every State with the
same value, call after call.
"""

from collections.abc import Callable
from dataclasses import dataclass

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MLP, assert_close_f32

import stateopt

X = jnp.asarray(np.random.default_rng(0).standard_normal((16, 4)), jnp.float32)
Y = jnp.asarray(np.random.default_rng(1).standard_normal((16, 3)), jnp.float32)


class NormNet(brainstate.nn.Module):
    """Linear, batch norm (running statistics are States the step writes), dropout (the PRNG key)."""

    def __init__(self, dropout: float):
        super().__init__()
        self.l1 = brainstate.nn.Linear(4, 8)
        self.norm = brainstate.nn.BatchNorm0d(8)
        self.drop = brainstate.nn.Dropout(dropout)
        self.head = brainstate.nn.Linear(8, 3)

    def __call__(self, x):
        return self.head(self.drop(jax.nn.relu(self.norm(self.l1(x)))))


@dataclass
class Form:
    """A train step in one call form: ``make(jit)`` gives (step, model); ``calls`` its arguments."""

    make: Callable[[Callable], tuple]
    calls: list          # (args, kwargs) of each call
    options: dict = None  # keywords of the jit

    def run(self, jit: Callable) -> tuple:
        brainstate.random.seed(0)
        step, model = self.make(lambda fn: jit(fn, **(self.options or {})))
        outs = []
        for args, kwargs in self.calls:
            with brainstate.environ.context(fit=True):
                outs.append(jax.tree.map(np.asarray, step(*args, **kwargs)))
        states = {str(path): jax.tree.map(np.asarray, state.value) for path, state in model.states().items()}
        states['PRNG key'] = np.asarray(jax.random.key_data(brainstate.random.DEFAULT.value))
        return outs, states


def _trained(model, loss_of, **opt_kwargs):
    params = model.states(brainstate.ParamState)
    opt = stateopt.AdamW(lr=1e-2, **opt_kwargs).register_trainable_weights(params)

    def train(*args, **kwargs):
        grads, loss = brainstate.transform.grad(lambda: loss_of(*args, **kwargs), grad_states=params,
                                                return_value=True)()
        opt.update(grads)
        return loss
    return train, opt


def positional():
    def make(jit):
        model = MLP()
        train, _ = _trained(model, lambda x, y: jnp.mean((model(x) - y) ** 2))
        return jit(train), model
    return Form(make, [((X, Y), {})] * 3)


def pytrees_in_and_out():
    def make(jit):
        model = MLP()
        train, opt = _trained(model, lambda batch: jnp.mean((model(batch['x']) - batch['y'][0]) ** 2))

        def step(batch):
            loss = train(batch)
            return {'loss': loss, 'more': (loss * 2, None), 'count': opt.step_count.value}
        return jit(step), model
    return Form(make, [(({'x': X, 'y': (Y,)},), {})] * 3)


def python_scalars():
    def make(jit):
        model = MLP()
        train, _ = _trained(model, lambda x, y, scale, shift: jnp.mean((model(x) * scale - y + shift) ** 2))
        return jit(train), model
    return Form(make, [((X, Y, 0.5, 1), {}), ((X, Y, 2.0, 0), {}), ((X, Y, 1.0, 3), {})])


def static_positional():
    def make(jit):
        model = MLP()

        def loss(x, y, squared):
            error = model(x) - y
            return jnp.mean(error ** 2 if squared else jnp.abs(error))
        train, _ = _trained(model, loss)
        return jit(train), model
    return Form(make, [((X, Y, True), {}), ((X, Y, False), {}), ((X, Y, True), {})],
                {'static_argnums': 2})


def keywords_static_and_dynamic():
    def make(jit):
        model = MLP()

        def loss(x, *, y, kind='mse'):
            error = model(x) - y
            return jnp.mean(error ** 2) if kind == 'mse' else jnp.mean(jnp.abs(error))
        train, _ = _trained(model, loss)
        return jit(train), model
    return Form(make, [((X,), {'y': Y}), ((X,), {'y': Y, 'kind': 'mae'}), ((X,), {'kind': 'mse', 'y': Y})],
                {'static_argnames': 'kind'})


def batch_norm_and_dropout():
    def make(jit):
        model = NormNet(dropout=0.8)
        train, _ = _trained(model, lambda x, y: jnp.mean((model(x) - y) ** 2), grad_clip_norm=1.0)
        return jit(train), model
    return Form(make, [((X, Y), {})] * 3)


def no_arguments_no_return():
    def make(jit):
        model = MLP()
        train, _ = _trained(model, lambda: jnp.mean((model(X) - Y) ** 2))

        def step():
            train()
        return jit(step), model
    return Form(make, [((), {})] * 3)


def bound_method():
    class Trainer:
        def __init__(self, jit):
            self.model = MLP()
            self.train, _ = _trained(self.model, lambda x, y: jnp.mean((self.model(x) - y) ** 2))
            self.step = jit(self._step)

        def _step(self, x, y):
            return self.train(x, y)

    def make(jit):
        trainer = Trainer(jit)
        return trainer.step, trainer.model
    return Form(make, [((X, Y), {})] * 3)


def jit_keywords():
    form = positional()
    form.options = {'keep_unused': True, 'inline': False, 'name': 'train_step'}
    return form


FORMS = {f.__name__: f for f in (positional, pytrees_in_and_out, python_scalars, static_positional,
                                 keywords_static_and_dynamic, batch_norm_and_dropout,
                                 no_arguments_no_return, bound_method, jit_keywords)}


@pytest.mark.parametrize('name', FORMS)
def test_a_train_step_runs_as_under_brainstate_jit(name):
    form = FORMS[name]()
    expected_outs, expected_states = form.run(brainstate.transform.jit)
    outs, states = FORMS[name]().run(stateopt.donating_jit)
    # the same jaxpr compiled in another program: equal within float32 rounding of 3 steps
    assert jax.tree.structure(outs) == jax.tree.structure(expected_outs)
    assert_close_f32(outs, expected_outs, steps=3)
    assert states.keys() == expected_states.keys()
    assert_close_f32(states, expected_states, steps=3)


BOTH = [brainstate.transform.jit, stateopt.donating_jit]


@pytest.mark.parametrize('jits, options, call', [
    (BOTH, {'donate_argnums': 0}, lambda step, x, y: step(x, y)),
    (BOTH, {'donate_argnames': 'y'}, lambda step, x, y: step(x, y=y)),        # a keyword argument
    # as in jax.jit, the name of a parameter passed by position donates it (brainstate's jit does not)
    ([stateopt.donating_jit], {'donate_argnames': 'x'}, lambda step, x, y: step(x, y)),
], ids=['donate_argnums', 'donate_argnames keyword', 'donate_argnames positional'])
def test_donated_arguments_are_deleted_as_under_brainstate_jit(jits, options, call):
    for jit in jits:
        _check_donated_argument(jit, options, call)


def _check_donated_argument(jit, options, call):
    model = MLP()
    train, opt = _trained(model, lambda x, y: jnp.mean((model(x) - y) ** 2))
    # outputs of the inputs' shapes: XLA reuses a donated buffer only for an output that fits it
    step = jit(lambda x, y: (train(x, y), x * 2, y * 2), **options)
    donated = options.get('donate_argnames', 'x')
    x, y = jnp.copy(X), jnp.copy(Y)
    loss, _, _ = call(step, x, y)
    kept = {'x': x, 'y': y}
    assert kept[donated].is_deleted()
    assert not kept[{'x': 'y', 'y': 'x'}[donated]].is_deleted()
    assert np.isfinite(float(loss)) and int(opt.step_count.value) == 1


def test_ahead_of_time_stages_run_nothing_and_change_no_state():
    model = MLP()
    train, opt = _trained(model, lambda x, y: jnp.mean((model(x) - y) ** 2))
    step = stateopt.donating_jit(train, name='my_train_step')
    before = {path: np.asarray(state.value) for path, state in model.states(brainstate.ParamState).items()
              if isinstance(state.value, jax.Array)}
    assert 'my_train_step' in step.lower(X, Y).as_text()
    *_, loss_shape = step.eval_shape(X, Y)
    assert loss_shape.shape == () and loss_shape.dtype == jnp.float32
    assert step.compile(X, Y) is not None and step.trace(X, Y) is not None
    assert step.origin_fun is train
    assert int(opt.step_count.value) == 0
    for path, value in before.items():
        np.testing.assert_array_equal(np.asarray(model.states(brainstate.ParamState)[path].value), value)
    step.clear_cache()
    step(X, Y)
    assert int(opt.step_count.value) == 1


@pytest.mark.parametrize('options, message', [
    ({'static_argnums': -1}, 'static_argnums'),
    ({'donate_argnums': (0, -2)}, 'donate_argnums'),
    ({'static_argnums': 0, 'donate_argnums': 0}, 'both static and donated'),
    ({'static_argnames': 'y', 'donate_argnames': 'y'}, 'both static and donated'),
])
def test_argument_indices_that_cannot_work_are_refused_when_wrapping(options, message):
    with pytest.raises(ValueError, match=message):
        stateopt.donating_jit(lambda x, y: x + y, **options)
