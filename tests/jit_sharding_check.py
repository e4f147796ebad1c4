"""Run by test_jit_sharding.py in a process of its own, with 8 fake CPU devices: ``donating_jit`` train
steps on a (2, 4) mesh. Prints one JSON line: for each check, what went wrong (an empty list when
nothing did), and the numbers the test compares with a plain jax/optax run on one device."""

import json
import os
import sys

if __name__ == '__main__':      # before jax starts; imported (by pytest's doctest collection) it is inert
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
    sys.path.insert(0, os.path.dirname(__file__))

import brainstate  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import stateopt  # noqa: E402
from stateopt import _jit  # noqa: E402

MESH = Mesh(np.array(jax.devices()).reshape(2, 4), ('data', 'model')) if len(jax.devices()) >= 8 else None
LR, WEIGHT_DECAY, KEEP, MOMENTUM, STEPS = 1e-2, 1e-2, 0.75, 0.9, 5
#: Where each State of the model lives in the sharded run (the batch goes over 'data'). The running
#: mean is replicated: XLA, left to itself, gives it the sharding of the batch mean, P('model').
SPECS = {('w1',): P(None, 'model'), ('b1',): P('model'), ('w2',): P(None, 'model'), ('b2',): P(),
         ('running_mean',): P(), ('key',): P()}


def on(spec):
    return NamedSharding(MESH, spec)


def initial_values():
    rng = np.random.default_rng(0)
    return {('w1',): rng.standard_normal((4, 8)) * 0.5, ('b1',): rng.standard_normal(8) * 0.1,
            ('w2',): rng.standard_normal((8, 4)) * 0.5, ('b2',): rng.standard_normal(4) * 0.1,
            ('running_mean',): np.zeros(8), ('key',): np.asarray(jax.random.PRNGKey(42))}


def batches():
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal((16, 4)).astype(np.float32))
            for _ in range(STEPS)]


def forward(w1, b1, w2, b2, running_mean, key, x):
    """The model's arithmetic, shared by the brainstate model and the plain jax reference: a hidden
    layer with dropout (its key split each step), centred by the batch mean, whose running average
    is a statistic the step writes."""
    key, sub = jax.random.split(key)
    h = jnp.tanh(x @ w1 + b1) * jax.random.bernoulli(sub, KEEP, (x.shape[0], w1.shape[1])) / KEEP
    mean = jnp.mean(h, axis=0)
    return (h - mean) @ w2 + b2, MOMENTUM * running_mean + (1 - MOMENTUM) * mean, key


class Model(brainstate.nn.Module):
    def __init__(self, values: dict):
        super().__init__()
        self.w1, self.b1, self.w2, self.b2 = (brainstate.ParamState(jnp.asarray(values[(k,)], jnp.float32))
                                              for k in ('w1', 'b1', 'w2', 'b2'))
        self.running_mean = brainstate.BatchState(jnp.asarray(values[('running_mean',)], jnp.float32))
        self.key = brainstate.State(jnp.asarray(values[('key',)]))

    def __call__(self, x):
        out, self.running_mean.value, self.key.value = forward(
            self.w1.value, self.b1.value, self.w2.value, self.b2.value, self.running_mean.value,
            self.key.value, x)
        return out


def build(sharded: bool):
    """The model (its States on their specs if ``sharded``) and an AdamW over its parameters."""
    model = Model(initial_values())
    if sharded:
        for path, state in model.states().items():
            state.value = jax.device_put(state.value, on(SPECS[path]))
    opt = stateopt.AdamW(lr=LR, weight_decay=WEIGHT_DECAY).register_trainable_weights(
        model.states(brainstate.ParamState))
    return model, model.states(), opt


def step_of(model, opt, **jit_options):
    """The train step, under ``donating_jit(**jit_options)``."""
    params = model.states(brainstate.ParamState)

    @stateopt.donating_jit(**jit_options)
    def train_step(x, y):
        grads, loss = brainstate.transform.grad(
            lambda: jnp.mean((model(x) - y) ** 2), grad_states=params, return_value=True)()
        opt.update(grads)
        return loss

    return train_step


def put_batch(x, y):
    return jax.device_put(x, on(P('data'))), jax.device_put(y, on(P('data')))


def reference():
    """The same training, written in plain jax and optax, unsharded on one device."""
    values = {k: jnp.asarray(v, jnp.uint32 if k == ('key',) else jnp.float32)
              for k, v in initial_values().items()}
    params = {k: values[(k,)] for k in ('w1', 'b1', 'w2', 'b2')}
    running_mean, key = values[('running_mean',)], values[('key',)]
    tx = optax.adamw(LR, weight_decay=WEIGHT_DECAY)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, running_mean, key, x, y):
        def loss_fn(params):
            out, new_mean, new_key = forward(params['w1'], params['b1'], params['w2'], params['b2'],
                                             running_mean, key, x)
            return jnp.mean((out - y) ** 2), (new_mean, new_key)

        (loss, (running_mean, key)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, running_mean, key, loss

    losses = []
    for x, y in batches():
        params, opt_state, running_mean, key, loss = step(params, opt_state, running_mean, key, x, y)
        losses.append(float(loss))
    final = {(k,): v for k, v in params.items()} | {('running_mean',): running_mean, ('key',): key}
    return losses, final


def as_lists(states: dict) -> dict:
    return {'/'.join(path): np.asarray(value).tolist() for path, value in states.items()}


def layout_problems(states: dict, opt, when: str) -> list:
    """Where a model State is off its spec, or a moment off its parameter's sharding."""
    found = [f'{when}: {path} on {state.value.sharding}' for path, state in states.items()
             if not state.value.sharding.is_equivalent_to(on(SPECS[path]), state.value.ndim)]
    moments = opt.state_dict()['state']
    for path, slots in moments.items():
        for slot, value in slots.items():
            spec = SPECS[(path,)]
            if value.ndim and not value.sharding.is_equivalent_to(on(spec), value.ndim):
                found.append(f'{when}: {slot} of {path} on {value.sharding}')
    return found


class Received:
    """Records the arrays each donating_jit call hands to its compiled function (after the guard has
    copied what the caller holds), so a check can see that the call deleted them."""

    def __init__(self):
        self.arrays = []
        self.protected, self.owned = vars(_jit.DonationGuard)['protected'], _jit.owned_leaves

    def __enter__(self):
        def protected(guard, states, values):
            guard = self.protected.__get__(None, _jit.DonationGuard)(guard, states, values)
            self.arrays.extend(jax.tree.leaves(values))
            return guard

        def owned(state):
            leaves = self.owned(state)
            self.arrays.extend(leaves)
            return leaves

        _jit.DonationGuard.protected, _jit.owned_leaves = protected, owned
        return self

    def __exit__(self, *exc):
        _jit.DonationGuard.protected, _jit.owned_leaves = self.protected, self.owned

    def kept(self) -> int:
        """How many of the recorded arrays are still alive, and forget them."""
        alive = sum(not array.is_deleted() for array in self.arrays if isinstance(array, jax.Array))
        self.arrays = []
        return alive


def train(sharded: bool) -> dict:
    """Train 5 steps; after each, every State on its layout and every donated array deleted."""
    model, states, opt = build(sharded)
    train_step = step_of(model, opt)
    problems, losses, kept = [], [], []
    held = states[('w1',)].value                 # a value the caller holds: copied, never deleted
    held_copy = np.asarray(held)
    with Received() as received:
        for step, (x, y) in enumerate(batches()):
            losses.append(float(train_step(*(put_batch(x, y) if sharded else (x, y)))))
            kept.append(received.kept())
            if sharded:
                problems += layout_problems(states, opt, f'step {step}')
    if not np.array_equal(np.asarray(held), held_copy):
        problems.append('a held value changed')
    return {'problems': problems, 'kept': kept, 'losses': losses,
            'final': as_lists({path: state.value for path, state in states.items()})}


def propagation() -> dict:
    """An update whose result XLA would put on the other operand's sharding: brainstate's jit lets it
    move, donating_jit keeps the State where it was."""
    result = {}
    for name, jit in (('brainstate.jit', brainstate.transform.jit), ('donating_jit', stateopt.donating_jit)):
        p = brainstate.ParamState(jax.device_put(jnp.ones((8, 8)), on(P(None, 'model'))))
        update = jit(lambda u, p=p: setattr(p, 'value', p.value - 0.1 * u))
        u = jax.device_put(jnp.arange(64.0).reshape(8, 8), on(P('data', 'model')))
        for _ in range(2):
            update(u)
        result[name] = str(p.value.sharding.spec)
        result[name + ' values'] = np.asarray(p.value).tolist()
    return result


def pins() -> dict:
    """state_shardings, as a dict and as a callable (see `pinned`); a pinned State the step only reads
    is moved to its pin too."""
    problems = pinned('dict') + pinned('callable')
    scale = brainstate.State(jnp.float32(2.0))            # read, never written; uncommitted
    scaled = stateopt.donating_jit(lambda x: x * scale.value, state_shardings={scale: on(P())})
    for _ in range(2):
        if float(scaled(jnp.float32(3.0))) != 6.0:
            problems.append('read-only pinned State: a wrong result')
        if scale.value.sharding != on(P()):
            problems.append(f'read-only pinned State on {scale.value.sharding}')
    return {'problems': problems}


def pinned(form: str) -> list:
    """An uncommitted value is moved to its pin and stays there; a value committed elsewhere is refused
    with nothing changed, and the call goes on once it is moved there."""
    problems = []
    replicated, on_model = on(P()), on(P('model'))
    model, states, opt = build(True)
    model.running_mean.value = jnp.zeros(8)          # uncommitted, on one device
    pin = ({model.running_mean: replicated} if form == 'dict'
           else (lambda state: replicated if state is model.running_mean else None))
    train_step = step_of(model, opt, state_shardings=pin)
    for step, (x, y) in enumerate(batches()[:2]):
        train_step(*put_batch(x, y))
        if model.running_mean.value.sharding != replicated:
            problems.append(f'{form} step {step}: running_mean on {model.running_mean.value.sharding}')
    model.running_mean.value = jax.device_put(model.running_mean.value, on_model)
    before = snapshot(states, opt)
    try:
        train_step(*put_batch(*batches()[0]))
        problems.append(f'{form}: a value committed off its pin was accepted')
    except ValueError as error:
        message = str(error)
        if not all(part in message for part in ('BatchState(float32[8])', "P('model'", 'device_put')):
            problems.append(f'{form}: unclear error: {message}')
    if not same(snapshot(states, opt), before):
        problems.append(f'{form}: the refused call changed something')
    model.running_mean.value = jax.device_put(model.running_mean.value, replicated)   # the fix works
    train_step(*put_batch(*batches()[0]))
    if int(opt.step_count.value) != 3:
        problems.append(f'{form}: {int(opt.step_count.value)} steps after the fix, not 3')
    return problems


def snapshot(states, opt):
    return (jax.tree.map(np.asarray, {path: state.value for path, state in states.items()}),
            jax.tree.map(np.asarray, opt.state_dict()))


def same(a, b) -> bool:
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    return tree_a == tree_b and all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


def moved_states() -> dict:
    """A State the caller moves between calls follows its new sharding; one given an uncommitted value
    (made by jnp, on one device) takes the layout it had, as jax.jit moves uncommitted arguments."""
    problems = []
    model, states, opt = build(True)
    train_step = step_of(model, opt)
    train_step(*put_batch(*batches()[0]))
    model.running_mean.value = jax.device_put(model.running_mean.value, on(P('model')))
    train_step(*put_batch(*batches()[1]))
    if model.running_mean.value.sharding != on(P('model')):
        problems.append(f'moved: running_mean on {model.running_mean.value.sharding}, not P(\'model\')')
    model.running_mean.value = jnp.zeros(8)
    train_step(*put_batch(*batches()[2]))
    if model.running_mean.value.sharding != on(P('model')):
        problems.append(f'uncommitted: running_mean on {model.running_mean.value.sharding}, not P(\'model\')')
    problems += layout_problems({k: v for k, v in states.items() if k != ('running_mean',)}, opt, 'moved')
    return {'problems': problems}


def argument_shardings() -> dict:
    """in_shardings and out_shardings do what jax.jit's do, for the same function on the same input."""
    problems = []
    w = brainstate.ParamState(jax.device_put(jnp.ones((4, 8)), on(P(None, 'model'))))
    by_data, by_model, replicated = on(P('data')), on(P(None, 'model')), on(P())
    options = dict(in_shardings=(by_data, None), out_shardings=(replicated, by_model))

    def pure(w, x, y):
        return jnp.sum(x @ w) * y, (x @ w) * 2.0

    def step(x, y):
        loss, out = pure(w.value, x, y)
        w.value = w.value * 0.5
        return loss, out

    x, y = jnp.ones((16, 4)), jnp.float32(3.0)
    expected = jax.jit(lambda x, y: pure(w.value, x, y), **options)(x, y)
    got = stateopt.donating_jit(step, **options)(x, y)
    for i, (a, b) in enumerate(zip(got, expected)):
        if a.sharding != b.sharding:
            problems.append(f'output {i} on {a.sharding}, jax.jit gives {b.sharding}')
        if not np.array_equal(np.asarray(a), np.asarray(b)):
            problems.append(f'output {i} differs from jax.jit')
    if w.value.sharding != by_model:
        problems.append(f'w on {w.value.sharding}')
    # a committed argument off in_shardings: jax.jit refuses it, and so does donating_jit, changing nothing
    off = jax.device_put(x, by_model)
    errors = []
    for run in (jax.jit(lambda x, y: pure(w.value, x, y), **options), stateopt.donating_jit(step, **options)):
        try:
            run(off, y)
            errors.append(None)
        except ValueError as error:
            errors.append(str(error).split('.')[0])
    if errors[0] is None or errors[0] != errors[1]:
        problems.append(f'committed argument off in_shardings: jax.jit says {errors[0]!r}, donating_jit '
                        f'{errors[1]!r}')
    if not np.array_equal(np.asarray(w.value), np.full((4, 8), 0.5)):
        problems.append('the refused call changed w')
    # keyword arguments are taken too (jax.jit refuses them beside in_shardings); they stay where they are
    keyword = stateopt.donating_jit(lambda x, *, y: step(x, y), in_shardings=by_data)
    if float(keyword(x, y=y)[0]) != float(expected[0]) * 0.5:
        problems.append('a keyword argument changed the result')
    return {'problems': problems}


def devices_differ() -> dict:
    """Shardings over other devices than the rest: refused when donating_jit is made, naming them."""
    problems = []
    w = brainstate.ParamState(jnp.ones(8))
    half = NamedSharding(Mesh(np.array(jax.devices()[:4]), ('model',)), P('model'))
    cases = {
        'dict': dict(state_shardings={w: half}, in_shardings=on(P('data'))),
        'out_shardings': dict(in_shardings=on(P('data')), out_shardings=half),
    }
    for name, options in cases.items():
        try:
            stateopt.donating_jit(lambda x: x, **options)
            problems.append(f'{name}: accepted')
        except ValueError as error:
            if 'devices [0, 1, 2, 3]' not in str(error) or 'same mesh' not in str(error):
                problems.append(f'{name}: unclear error: {error}')
    step = stateopt.donating_jit(lambda x: w.value.sum() * x, in_shardings=on(P()),
                                 state_shardings=lambda state: half)
    try:
        step(jnp.ones(()))
        problems.append('callable: accepted')
    except ValueError as error:
        if 'state_shardings(ParamState(float32[8]))' not in str(error):
            problems.append(f'callable: unclear error: {error}')
    if not np.array_equal(np.asarray(w.value), np.ones(8)):
        problems.append('w changed')
    return {'problems': problems}


def main():
    report = {'sharded': train(True), 'unsharded': train(False), 'propagation': propagation(), 'pins': pins(),
              'moved': moved_states(), 'arguments': argument_shardings(), 'devices': devices_differ()}
    losses, final = reference()
    report['reference'] = {'losses': losses, 'final': as_lists(final)}
    print(json.dumps(report))


if __name__ == '__main__':
    main()
