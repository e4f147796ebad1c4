"""SOFO and SOFOScan against a float64 numpy implementation of the published rule (reference.py)."""

import copy

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from conftest import assert_close_f32, assert_same, snapshot

import stateopt

N_IN, N_HIDDEN, N_OUT, N_SAMPLES = 3, 4, 3, 6
SHAPES = {'b1': (N_HIDDEN,), 'w1': (N_IN, N_HIDDEN), 'w2': (N_HIDDEN, N_OUT)}   # registration order: sorted
SIZES = {name: int(np.prod(shape)) for name, shape in SHAPES.items()}
KEY = jax.random.key(7)


def make_states(seed=0):
    rng = np.random.default_rng(seed)
    return {name: brainstate.ParamState(jnp.asarray(rng.standard_normal(shape) * 0.7, jnp.float32))
            for name, shape in SHAPES.items()}


def make_data(seed=1, kind='mse'):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_SAMPLES, N_IN)).astype(np.float32)
    y = (rng.integers(0, N_OUT, N_SAMPLES) if kind == 'ce'
         else rng.standard_normal((N_SAMPLES, N_OUT))).astype(np.int32 if kind == 'ce' else np.float32)
    return x, y


# -- the models and losses, in jax (for stateopt) and numpy float64 (for the reference) ----------

def jax_model(kind, states):
    if kind == 'linear':
        return lambda x: x @ states['w1'].value @ states['w2'].value + 0 * states['b1'].value.sum()
    return lambda x: jnp.tanh(x @ states['w1'].value + states['b1'].value) @ states['w2'].value


def np_outputs(kind, x):
    x = np.asarray(x, np.float64)

    def outputs(p):
        b1, w1, w2 = unflat(p)
        return x @ w1 @ w2 if kind == 'linear' else np.tanh(x @ w1 + b1) @ w2

    return outputs


def unflat(p):
    parts, start = [], 0
    for name, shape in SHAPES.items():
        parts.append(p[start:start + SIZES[name]].reshape(shape))
        start += SIZES[name]
    return parts


def flat(tree):
    return np.concatenate([np.asarray(tree[name], np.float64).ravel() for name in SHAPES])


def jax_loss(kind):
    if kind == 'mse':
        return lambda pred, y: jnp.mean((pred - y) ** 2)
    return lambda pred, y: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(pred), y[:, None], axis=1))


def np_loss(kind, outputs, y):
    y = np.asarray(y)

    def loss(p):
        f = outputs(p)
        if kind == 'mse':
            return float(np.mean((f - y) ** 2))
        shifted = f - f.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-np.mean(log_probs[np.arange(len(y)), y]))

    return loss


def tangents_of(states, step, tangent_size, key=KEY):
    """The tangents the optimizer samples at ``step`` (documented: fold_in(key, step), in the order of
    ``param_states``: the registered dict's sorted keys)."""
    values = [states[name].value for name in SHAPES]
    sampled = stateopt.sample_tangents(jax.random.fold_in(key, step), values, tangent_size)
    return np.concatenate([np.asarray(t, np.float64).reshape(tangent_size, -1) for t in sampled], axis=1)


def tolerance_steps(damping):
    """One step's float32 rounding (of the slopes and the Gauss-Newton matrix), amplified by the
    condition number of the damped solve, at most ``(1 + damping) / damping``."""
    return int(1 + 1 / damping)


# -- the rule ---------------------------------------------------------------------------------------

DIRECTION_ROWS = [   # (model, loss, damping, tangent_size)
    ('linear', 'mse', 1e-2, 5),
    ('tanh', 'mse', 1e-2, 5),
    ('tanh', 'mse', 1e-3, 12),
    ('tanh', 'ce', 1e-2, 5),
    ('tanh', 'ce', 1e-3, 12),
    ('tanh', 'mse', 1e-2, 40),     # more tangents than the 28 params: the subspace is the whole space
]


@pytest.mark.parametrize('model,loss,damping,tangent_size', DIRECTION_ROWS)
def test_direction_is_the_published_rule(model, loss, damping, tangent_size):
    states = make_states()
    x, y = make_data(kind=loss)
    opt = stateopt.SOFO(jax_model(model, states), jax_loss(loss), loss=loss, damping=damping,
                        tangent_size=tangent_size, key=KEY).register_trainable_weights(states)
    direction, outputs = opt.direction(x, y)
    p = flat({name: state.value for name, state in states.items()})
    outputs_fn = np_outputs(model, x)
    expected = ref.sofo_direction(outputs_fn, np_loss(loss, outputs_fn, y), p,
                                  tangents_of(states, 0, tangent_size), kind=loss, damping=damping)
    assert_close_f32(flat(direction), expected, steps=tolerance_steps(damping))
    assert_close_f32(np.asarray(outputs), outputs_fn(p), steps=4)


def test_with_the_whole_space_it_is_the_gauss_newton_step():
    # linear least squares, 0.5 * mean sum of squares: the Gauss-Newton step is Newton's, which lands on
    # the solution; iterated, the float32 solve refines itself to rounding
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 4)).astype(np.float32)
    y = rng.standard_normal((20, 2)).astype(np.float32)
    w = brainstate.ParamState(jnp.zeros((4, 2)))
    loss_fn = lambda pred, target: 0.5 * jnp.mean(jnp.sum((pred - target) ** 2, axis=-1))
    opt = stateopt.SOFO(lambda inputs: inputs @ w.value, loss_fn, lr=1.0, tangent_size=16, damping=1e-7,
                        key=KEY).register_trainable_weights({'w': w})
    solution = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0]
    opt.step(x, y)
    np.testing.assert_allclose(np.asarray(w.value), solution, rtol=1e-2, atol=1e-2)
    for _ in range(3):
        opt.step(x, y)
    assert_close_f32(np.asarray(w.value), solution, steps=64)


def test_tangents_have_unit_norm_and_follow_the_key():
    params = [jnp.zeros((3, 2)), jnp.zeros(5, jnp.bfloat16)]
    tangents = stateopt.sample_tangents(jax.random.key(1), params, 6)
    assert [t.shape for t in tangents] == [(6, 3, 2), (6, 5)] and tangents[1].dtype == jnp.bfloat16
    norms = np.sqrt(sum(np.sum(np.asarray(t, np.float64).reshape(6, -1) ** 2, axis=1) for t in tangents))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-2, atol=1e-2)      # bfloat16 entries: 8 bits of mantissa
    again = stateopt.sample_tangents(jax.random.key(1), params, 6)
    other = stateopt.sample_tangents(jax.random.key(2), params, 6)
    assert_same(tangents, again)
    assert not np.array_equal(np.asarray(tangents[0]), np.asarray(other[0]))


# -- the optimizer ----------------------------------------------------------------------------------

def reference_run(states, x, y, steps, *, groups, tangent_size, damping, momentum, nesterov, clip_norm):
    """Params after ``steps`` SOFO steps: the reference direction, then SGD momentum and decoupled decay."""
    outputs_fn = np_outputs('tanh', x)
    loss = np_loss('mse', outputs_fn, y)
    p = flat({name: state.value for name, state in states.items()})
    buffer = np.zeros_like(p)
    lr = np.concatenate([np.full(SIZES[name], groups[name][0]) for name in SHAPES])
    decay = np.concatenate([np.full(SIZES[name], groups[name][1]) for name in SHAPES])
    for step in range(steps):
        sampled = stateopt.sample_tangents(jax.random.fold_in(KEY, step),
                                           [jnp.asarray(part, jnp.float32) for part in unflat(p)],
                                           tangent_size)
        tangents = np.concatenate([np.asarray(t, np.float64).reshape(tangent_size, -1) for t in sampled], 1)
        d = ref.sofo_direction(outputs_fn, loss, p, tangents, damping=damping)
        norm = np.sqrt(np.sum(d * d))
        if clip_norm is not None and norm > clip_norm:
            d = d * (clip_norm / norm)
        buffer = d if step == 0 else momentum * buffer + d
        update = d + momentum * buffer if nesterov else buffer
        p = p * (1 - lr * decay) - lr * update
    return p


def test_steps_apply_the_direction_as_sgd_with_momentum_decoupled_decay_and_clipping_per_group():
    states = make_states()
    x, y = make_data()
    groups = {'w1': (0.3, 0.1), 'b1': (0.3, 0.1), 'w2': (0.1, 0.0)}       # (lr, weight_decay)
    opt = stateopt.SOFO(jax_model('tanh', states), jax_loss('mse'), lr=0.3, tangent_size=8, damping=1e-2,
                        momentum=0.5, nesterov=True, weight_decay=0.1, grad_clip_norm=0.5, key=KEY)
    opt.register_trainable_weights({'w1': states['w1'], 'b1': states['b1']})
    opt.add_param_group({'w2': states['w2']}, lr=0.1, weight_decay=0.0)
    expected = reference_run(states, x, y, 3, groups=groups, tangent_size=8, damping=1e-2, momentum=0.5,
                             nesterov=True, clip_norm=0.5)
    losses = [float(opt.step(x, y)) for _ in range(3)]
    assert_close_f32(flat({name: state.value for name, state in states.items()}), expected,
                     steps=3 * tolerance_steps(1e-2))
    assert losses[0] > losses[-1] and int(opt.step_count) == 3


def test_step_returns_the_loss_before_the_step_eagerly_and_in_jit():
    states = make_states()
    x, y = make_data()
    model, loss_fn = jax_model('tanh', states), jax_loss('mse')
    opt = stateopt.SOFO(model, loss_fn, lr=0.3, tangent_size=8, key=KEY).register_trainable_weights(states)
    jitted = brainstate.transform.jit(lambda a, b: opt.step(a, b))
    donating = stateopt.donating_jit(lambda a, b: opt.step(a, b))
    for step in (opt.step, jitted, donating, opt.update):
        before = float(loss_fn(model(x), y))
        assert_close_f32(float(step(x, y)), before, steps=4)
    assert int(opt.step_count) == 4 and float(loss_fn(model(x), y)) < before


def test_steps_run_inside_for_loop_as_they_do_one_by_one():
    x, y = make_data()
    finals = []
    for loop in (True, False):
        states = make_states()
        opt = stateopt.SOFO(jax_model('tanh', states), jax_loss('mse'), lr=0.3, tangent_size=8, damping=1e-2,
                            key=KEY)
        opt.register_trainable_weights(states)
        if loop:
            losses = brainstate.transform.for_loop(lambda i, opt=opt: opt.step(x, y), jnp.arange(3))
        else:
            losses = jnp.stack([opt.step(x, y) for _ in range(3)])
        finals.append((np.asarray(losses), flat({k: s.value for k, s in states.items()})))
        assert int(opt.step_count) == 3
    (loop_losses, loop_params), (eager_losses, eager_params) = finals
    assert_close_f32(loop_losses, eager_losses, steps=3 * tolerance_steps(1e-2))
    assert_close_f32(loop_params, eager_params, steps=3 * tolerance_steps(1e-2))


def test_a_fixed_key_gives_the_same_tangents_to_twin_optimizers_and_new_ones_each_step():
    x, y = make_data()
    runs = []
    for _ in range(2):      # separate States and optimizers: tangents follow registration order, not ids
        states = make_states()
        opt = stateopt.SOFO(jax_model('tanh', states), jax_loss('mse'), tangent_size=8, key=KEY)
        opt.register_trainable_weights(states)
        runs.append((opt, opt.direction(x, y)[0]))
    assert_same(runs[0][1], runs[1][1])
    opt = runs[0][0]
    opt.param_groups[0]['lr'] = 0.0     # the params stay; the step count moves to the next key
    opt.step(x, y)
    assert not np.array_equal(flat(opt.direction(x, y)[0]), flat(runs[0][1]))


def test_without_a_key_each_step_draws_from_brainstate_random():
    states = make_states()
    x, y = make_data()
    opt = stateopt.SOFO(jax_model('tanh', states), jax_loss('mse'), tangent_size=8)
    opt.register_trainable_weights(states)
    brainstate.random.seed(3)
    first = opt.direction(x, y)[0]
    brainstate.random.seed(3)
    assert_same(opt.direction(x, y)[0], first)
    assert not np.array_equal(flat(opt.direction(x, y)[0]), flat(first))


def test_cross_entropy_steps_reduce_the_loss_in_a_module():
    brainstate.random.seed(0)

    class MLP(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = brainstate.nn.Linear(N_IN, 8), brainstate.nn.Linear(8, N_OUT)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.l1(x)))

    model = MLP()
    x, y = make_data(kind='ce')
    opt = stateopt.SOFO(model, jax_loss('ce'), lr=0.2, loss='ce', tangent_size=32, damping=1e-2, key=KEY)
    opt.register_trainable_weights(model.states(brainstate.ParamState))
    losses = [float(opt.step(x, y)) for _ in range(15)]
    assert losses[-1] < 0.2 * losses[0]
    found = brainstate.graph.states(opt)     # the optimizer's own States; the model's stay the model's
    assert not any(isinstance(state, brainstate.ParamState) for state in found.values())


@pytest.mark.parametrize('via', ['state_dict', 'checkpoint'])
def test_a_resumed_run_takes_the_same_next_step(via, tmp_path):
    # two groups, momentum and a scheduler: everything the next step depends on is saved
    x, y = make_data()
    runs = []
    for _ in range(2):
        states = make_states()
        sched = stateopt.StepLR(base_lr=0.2, step_size=1, gamma=0.5)
        opt = stateopt.SOFO(jax_model('tanh', states), jax_loss('mse'), lr=sched, momentum=0.9,
                            tangent_size=8, key=KEY)
        opt.register_trainable_weights({'b1': states['b1'], 'w1': states['w1']})
        opt.add_param_group({'w2': states['w2']}, lr=0.1)
        runs.append((opt, sched, states))
    (first, first_sched, first_states), (second, _, second_states) = runs
    for _ in range(2):
        first.step(x, y)
        first_sched.step()
    if via == 'state_dict':
        second.load_state_dict(first.state_dict())
        for name in SHAPES:
            second_states[name].value = first_states[name].value
    else:
        stateopt.save_checkpoint(tmp_path / 'run', {'params': first_states, 'optimizer': first})
        stateopt.load_checkpoint(tmp_path / 'run', {'params': second_states, 'optimizer': second})
    assert second.get_last_lr() == first.get_last_lr() == [0.05, 0.025]
    first.step(x, y)
    second.step(x, y)
    assert_same({k: s.value for k, s in first_states.items()}, {k: s.value for k, s in second_states.items()})


def test_a_deep_copy_runs_its_own_model_copy():
    brainstate.random.seed(0)
    model = brainstate.nn.Linear(N_IN, N_OUT)
    x, y = make_data()
    opt = stateopt.SOFO(model, jax_loss('mse'), lr=0.3, tangent_size=8, key=KEY)
    opt.register_trainable_weights(model.states(brainstate.ParamState))
    opt.step(x, y)
    twin = copy.deepcopy(opt)
    params = model.states(brainstate.ParamState)
    before = jax.tree.map(np.asarray, {key: state.value for key, state in params.items()})
    twin.step(x, y)
    assert_same({key: state.value for key, state in params.items()}, before)   # the original did not move
    twin_params = twin.model.states(brainstate.ParamState)
    assert all(twin_params[key] is not params[key] for key in params)
    assert int(opt.step_count) == 1 and int(twin.step_count) == 2
    states = make_states()                  # a plain function keeps reading the original's States
    opt = stateopt.SOFO(jax_model('tanh', states), jax_loss('mse'), tangent_size=8, key=KEY)
    twin = copy.deepcopy(opt.register_trainable_weights(states))
    with pytest.raises(ValueError, match=r"does not read the registered States \['b1', 'w1', 'w2'\]"):
        twin.step(x, y)
    assert int(twin.step_count) == 0


# -- the recurrent form -------------------------------------------------------------------------------

T, BATCH, LATENT = 4, 3, 4
CELL_SHAPES = {'wh': (LATENT, LATENT), 'wo': (LATENT, N_OUT), 'wx': (N_IN, LATENT)}


def test_scan_direction_is_the_rule_on_the_unrolled_sequence():
    rng = np.random.default_rng(5)
    cell_states = {name: brainstate.ParamState(jnp.asarray(rng.standard_normal(shape) * 0.5, jnp.float32))
                   for name, shape in CELL_SHAPES.items()}

    def cell(latent, inputs):
        latent = jnp.tanh(latent @ cell_states['wh'].value + inputs @ cell_states['wx'].value)
        return latent, latent @ cell_states['wo'].value

    xs = rng.standard_normal((T, BATCH, N_IN)).astype(np.float32)
    ys = rng.standard_normal((T, BATCH, N_OUT)).astype(np.float32)
    z0 = rng.standard_normal((BATCH, LATENT)).astype(np.float32)
    opt = stateopt.SOFOScan(cell, jax_loss('mse'), tangent_size=10, damping=1e-2, key=KEY)
    opt.register_trainable_weights(cell_states)
    direction, outputs = opt.direction(z0, (xs, ys))

    sizes = [int(np.prod(shape)) for shape in CELL_SHAPES.values()]

    def unrolled(p):          # every (time, batch) output, time major, in float64
        wh, wo, wx = (part.reshape(shape) for part, shape in
                      zip(np.split(p, np.cumsum(sizes)[:-1]), CELL_SHAPES.values()))
        latent, outs = z0.astype(np.float64), []
        for t in range(T):
            latent = np.tanh(latent @ wh + xs[t] @ wx)
            outs.append(latent @ wo)
        return np.concatenate(outs)

    labels = ys.reshape(T * BATCH, N_OUT).astype(np.float64)
    p = np.concatenate([np.asarray(state.value, np.float64).ravel() for state in cell_states.values()])
    sampled = stateopt.sample_tangents(jax.random.fold_in(KEY, 0), [s.value for s in cell_states.values()],
                                       10)
    tangents = np.concatenate([np.asarray(t, np.float64).reshape(10, -1) for t in sampled], axis=1)
    expected = ref.sofo_direction(unrolled, lambda q: float(np.mean((unrolled(q) - labels) ** 2)), p,
                                  tangents, damping=1e-2)
    got = np.concatenate([np.asarray(direction[name], np.float64).ravel() for name in CELL_SHAPES])
    assert_close_f32(got, expected, steps=tolerance_steps(1e-2))
    assert outputs.shape == (T * BATCH, N_OUT)


def test_scan_steps_reduce_the_loss_in_jit():
    brainstate.random.seed(0)

    class Cell(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.wh, self.wx = brainstate.nn.Linear(LATENT, LATENT), brainstate.nn.Linear(N_IN, LATENT)
            self.wo = brainstate.nn.Linear(LATENT, N_OUT)

        def __call__(self, latent, inputs):
            latent = jnp.tanh(self.wh(latent) + self.wx(inputs))
            return latent, self.wo(latent)

    cell = Cell()
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((T, BATCH, N_IN)).astype(np.float32)
    ys = 0.5 * rng.standard_normal((T, BATCH, N_OUT)).astype(np.float32)
    opt = stateopt.SOFOScan(cell, jax_loss('mse'), lr=0.5, tangent_size=32, damping=1e-3, key=KEY)
    opt.register_trainable_weights(cell.states(brainstate.ParamState))
    step = brainstate.transform.jit(lambda z, batch: opt.step(z, batch))
    z0 = jnp.zeros((BATCH, LATENT))
    losses = [float(step(z0, (xs, ys))) for _ in range(10)]
    assert losses[-1] < 0.7 * losses[0]


# -- bad input ------------------------------------------------------------------------------------------

MODEL = staticmethod(lambda x: x)

INVALID = [   # (constructor keywords, error, message)
    (dict(loss='bad'), ValueError, "loss must be one of 'mse', 'ce'"),
    (dict(tangent_size=0), ValueError, 'tangent_size must be an integer >= 1'),
    (dict(damping=-1.0), ValueError, 'damping must be >= 0'),
    (dict(momentum=0.0, nesterov=True), ValueError, 'nesterov=True needs momentum > 0'),
    (dict(key=3), ValueError, 'key must be None or one jax PRNG key'),
    (dict(model=3), ValueError, 'model must be callable'),
]


@pytest.mark.parametrize('kwargs,error,message', INVALID)
def test_invalid_settings_are_refused_by_the_constructor(kwargs, error, message):
    kwargs = {'model': lambda x: x, 'loss_fn': jax_loss('mse'), **kwargs}
    with pytest.raises(error, match=message):
        stateopt.SOFO(**kwargs)


def test_optimizer_wide_settings_are_refused_per_group_and_fixed_after_construction():
    states = make_states()
    x, y = make_data()
    opt = stateopt.SOFO(jax_model('tanh', states), jax_loss('mse'), tangent_size=8, key=KEY)
    opt.register_trainable_weights({'w1': states['w1'], 'b1': states['b1']})
    with pytest.raises(ValueError, match="'tangent_size' of SOFO is a setting of the whole optimizer"):
        opt.add_param_group({'w2': states['w2']}, tangent_size=4)
    assert len(opt.param_groups) == 1
    # a jitted train step would keep the value it was traced with: refused, as static hyper-parameters are
    with pytest.raises(ValueError, match="'tangent_size' is fixed when the SOFO is built"):
        opt.tangent_size = 40
    assert opt.tangent_size == 8 and opt.direction(x, y)[0]['w1'].shape == SHAPES['w1']


def test_bad_calls_change_nothing():
    states = make_states()
    x, y = make_data()
    opt = stateopt.SOFO(jax_model('tanh', states), jax_loss('mse'), tangent_size=8, key=KEY)
    with pytest.raises(ValueError, match='no States are registered'):      # braintools raises ValueError
        opt.step(x, y)
    opt.register_trainable_weights(states)
    opt.step(x, y)
    before = snapshot(opt, states)
    with pytest.raises(TypeError, match=r'call step\(inputs, targets\)'):
        opt.update({'w1': jnp.zeros(SHAPES['w1'])})
    with pytest.raises(brainstate.TraceContextError):
        jax.jit(lambda a, b: opt.step(a, b))(x, y)
    with pytest.raises(ValueError, match='loss_fn must return one number'):
        stateopt.SOFO(jax_model('tanh', states), lambda pred, target: (pred - target) ** 2, tangent_size=8,
                      key=KEY).register_trainable_weights(states).step(x, y)
    with pytest.raises(ValueError, match="loss='ce' needs class logits on the last axis"):
        stateopt.SOFO(lambda inputs: inputs @ states['w1'].value[:, 0], jax_loss('mse'), loss='ce',
                      key=KEY).register_trainable_weights({'w1': states['w1']}).step(x, x[:, 0])
    with pytest.raises(TypeError, match='batch=\\(inputs_seq, labels_seq\\)'):
        stateopt.SOFOScan(lambda z, inputs: (z, z), jax_loss('mse'), key=KEY).register_trainable_weights(
            states).step(jnp.zeros(3), jnp.zeros((2, 3)))
    after = snapshot(opt, states)
    assert_same(after, before)
