"""Checkpoints: the documented format, bit-exact resume, atomic writes, corruption detection."""

import hashlib
import os
import pathlib
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections import namedtuple

import brainstate
import jax
import jax.numpy as jnp
import ml_dtypes
import msgpack
import numpy as np
import pytest
from catalogue import CASES
from conftest import MLP, assert_same, make_params, snapshot, values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stateopt

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
sys.path.insert(0, str(FIXTURES))
import make_checkpoint_v1  # noqa: E402

HEADER = {'format': 'stateopt-checkpoint', 'format_version': 1, 'stateopt_version': stateopt.__version__}


def frame(payload: bytes, header: dict = HEADER, version: int = 1) -> bytes:
    """A checkpoint file around ``payload``, written from the documented layout."""
    opening = b'\x89STOPT\r\n' + struct.pack('>I', version)
    packed = msgpack.packb(header)
    rest = struct.pack('>I', len(packed)) + packed + payload
    return opening + hashlib.sha256(opening + rest).digest() + rest


def leaves_of(target: dict) -> list:
    """Every array or value object a load would replace, to check nothing was replaced."""
    found = []
    for node in jax.tree.leaves(target, is_leaf=lambda x: isinstance(x, (brainstate.State, Counter))):
        if isinstance(node, stateopt.OptaxOptimizer):
            found += [node.step_count.value, *jax.tree.leaves(node.opt_state.value)]
            found += jax.tree.leaves([group[key] for group in node.param_groups for key in group
                                      if key != 'params'])
        elif isinstance(node, brainstate.State):
            found += jax.tree.leaves(node.value)
        elif isinstance(node, Counter):
            found.append(node.count)
        else:
            found.append(node)
    return found


def numpy_leaves(target: dict) -> list:
    return [np.asarray(leaf) for leaf in leaves_of(target)]


def unchanged(before: list, target: dict) -> bool:
    after = leaves_of(target)
    return len(before) == len(after) and all(a is b for a, b in zip(before, after))


def nested(depth: int, leaf):
    """``leaf`` inside ``depth`` lists."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def mlp_and_sgd(seed: int = 0):
    brainstate.random.seed(seed)
    model = MLP()
    params = model.states(brainstate.ParamState)
    opt = stateopt.SGD(lr=0.1, momentum=0.9).register_trainable_weights(params)
    opt.add_param_group(model.head.states(brainstate.ParamState), lr=0.05)
    return model, params, opt


def train_eagerly(model, params, opt, steps: int = 2) -> None:
    x = jnp.asarray(np.random.default_rng(1).standard_normal((6, 4)), jnp.float32)
    for _ in range(steps):
        opt.update(brainstate.transform.grad(lambda: jnp.sum(model(x) ** 2), grad_states=params)())


# -- the format ----------------------------------------------------------------------------

def test_file_layout_is_the_documented_one(tmp_path):
    path = tmp_path / 'a.msgpack'
    w = np.array([1.0, -2.0], np.float32)
    big = np.arange(20_000, dtype=np.float32)         # over 64 KiB: written from its own buffer
    stateopt.save_checkpoint(path, {'w': w, ('l1', 0): brainstate.ParamState(jnp.arange(2)),
                                    3: [None, (1.5, 'x')], 'big': big})
    data = path.read_bytes()
    assert data[:8] == b'\x89STOPT\r\n' and struct.unpack('>I', data[8:12]) == (1,)
    assert hashlib.sha256(data[:12] + data[44:]).digest() == data[12:44]
    (size,) = struct.unpack('>I', data[44:48])
    assert msgpack.unpackb(data[48:48 + size]) == HEADER
    assert msgpack.unpackb(data[48 + size:]) == [
        'dict',
        'w', ['array', 'float32', [2], w.tobytes()],
        ['tuple', 'l1', 0], ['array', 'int32', [2], np.arange(2, dtype='<i4').tobytes()],
        3, ['list', None, ['tuple', 1.5, 'x']],
        'big', ['array', 'float32', [20_000], big.tobytes()],
    ]
    assert data == frame(data[48 + size:])


DTYPE_VALUES = {name: np.asarray(numbers, dtype)
                for name, (dtype, numbers) in make_checkpoint_v1.ARRAYS.items()}
DTYPE_VALUES.update({
    'float16-specials': np.asarray([np.nan, -np.inf, 6e-8], np.float16),
    'float32-nan': np.asarray([np.nan, -0.0, 1e-45], np.float32),
    'bfloat16-nan': np.asarray([np.nan, -np.inf, 1e-40], ml_dtypes.bfloat16),
    'int4': np.asarray([-8, 0, 7], ml_dtypes.int4),
    'float8_e4m3fn': np.asarray([-448, 0.5, 1.75], ml_dtypes.float8_e4m3fn),
    'zero-d': np.asarray(3, np.int16),
    'zero-size': np.zeros((2, 0, 3), np.complex64),
    'big-endian': np.asarray([1.5, -2.25], '>f8'),
})


@pytest.mark.parametrize('name', list(DTYPE_VALUES))
def test_every_dtype_round_trips_bit_exactly(tmp_path, name):
    original = DTYPE_VALUES[name]
    as_jax = jax.dtypes.canonicalize_dtype(original.dtype) == original.dtype.newbyteorder('=')
    target = {'numpy': original, 'state': brainstate.State(jnp.asarray(original) if as_jax else original)}
    stateopt.save_checkpoint(tmp_path / 'a.msgpack', target)
    zeros = np.zeros_like(original)
    state = brainstate.State(jnp.asarray(zeros) if as_jax else zeros)
    tree = stateopt.load_checkpoint(tmp_path / 'a.msgpack', {'numpy': zeros, 'state': state}).tree
    assert type(tree['numpy']) is np.ndarray and tree['numpy'].dtype == original.dtype
    assert tree['numpy'].tobytes() == original.tobytes()
    assert isinstance(state.value, jax.Array) == as_jax
    assert np.asarray(state.value).dtype == original.dtype
    assert np.asarray(state.value).tobytes() == original.tobytes()


def test_numbers_strings_containers_and_tuple_keys_round_trip(tmp_path):
    pair = namedtuple('pair', 'first second')
    saved = {'epoch': 7, 'big': 2 ** 64 - 1, 'small': -2 ** 63, 'ratio': 0.1, 'z': 1.5 - 2j, 'name': 'ünï',
             'raw': b'\x00\xff', 'flag': True, 'nothing': None, 'list': [1, [2.5]], 'tuple': (1, ('a',)),
             'pair': pair(np.float32(1.5), 'b'), 3: 'int key', ('a', (1, None)): 'nested tuple key',
             'scalar': np.int64(-5)}
    stateopt.save_checkpoint(tmp_path / 'a.msgpack', saved)
    template = {'epoch': 0, 'big': 0, 'small': 0, 'ratio': 0.0, 'z': 0j, 'name': '', 'raw': b'',
                'flag': False, 'nothing': None, 'list': [0, [0.0]], 'tuple': (0, ('',)),
                'pair': pair(np.float32(0), ''), 3: '', ('a', (1, None)): '', 'scalar': np.int64(0)}
    tree = stateopt.load_checkpoint(tmp_path / 'a.msgpack', template).tree
    assert tree == saved and list(tree) == list(saved)
    assert type(tree['pair']) is pair and type(tree['scalar']) is np.int64 and type(tree['tuple']) is tuple


@pytest.mark.parametrize('impl', ['threefry2x32', 'rbg'])
def test_prng_key_arrays_round_trip(tmp_path, impl):
    keys = {'one': jax.random.key(3, impl=impl), 'many': jax.random.split(jax.random.key(4, impl=impl), 3)}
    state = brainstate.State(keys['many'])
    stateopt.save_checkpoint(tmp_path / 'a.msgpack', {'keys': keys, 'state': state})
    fresh = {'one': jax.random.key(0, impl=impl), 'many': jax.random.split(jax.random.key(0, impl=impl), 3)}
    state.value = fresh['many']
    tree = stateopt.load_checkpoint(tmp_path / 'a.msgpack', {'keys': fresh, 'state': state}).tree
    for got, want in ((tree['keys']['one'], keys['one']), (tree['keys']['many'], keys['many']),
                      (state.value, keys['many'])):
        assert jax.random.key_impl(got) == jax.random.key_impl(want)
        np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(want))
    np.testing.assert_array_equal(jax.random.normal(tree['keys']['one'], (4,)),
                                  jax.random.normal(keys['one'], (4,)))
    other = 'rbg' if impl == 'threefry2x32' else 'threefry2x32'
    with pytest.raises(stateopt.CheckpointMismatchError, match='keys/one'):
        stateopt.load_checkpoint(tmp_path / 'a.msgpack',
                                 {'keys': {**fresh, 'one': jax.random.key(0, impl=other)}, 'state': state})


SHARDED = textwrap.dedent('''
    import sys
    import brainstate, jax, jax.numpy as jnp, numpy as np
    import stateopt
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ('x',))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('x'))
    second = jax.sharding.SingleDeviceSharding(jax.devices()[1])
    values = {'split': np.arange(8, dtype=np.float32), 'second': np.arange(3, dtype=np.int32)}
    stateopt.save_checkpoint(sys.argv[1], {'state': brainstate.State(values['split']),
                                          'array': values['second']})
    state = brainstate.State(jax.device_put(jnp.zeros(8), split))
    array = jax.device_put(jnp.zeros(3, jnp.int32), second)
    tree = stateopt.load_checkpoint(sys.argv[1], {'state': state, 'array': array}).tree
    assert state.value.sharding == split and tree['array'].sharding == second
    assert state.value.tolist() == values['split'].tolist() and tree['array'].tolist() == [0, 1, 2]
    print('ok')
''')


def test_restored_arrays_keep_the_target_sharding(tmp_path):
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
    result = subprocess.run([sys.executable, '-c', SHARDED, str(tmp_path / 'a.msgpack')], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == 'ok', result.stderr[-2000:]


def test_values_a_checkpoint_cannot_store_are_refused_before_writing(tmp_path):
    path = tmp_path / 'a.msgpack'
    cases = [({'a': {'b': object()}}, TypeError, 'a/b'),
             ({'a': [np.array(['text'])]}, TypeError, 'a/0'),
             ({'a': 2 ** 64}, ValueError, 'a'),
             ({'huge': np.broadcast_to(np.zeros(1, np.uint8), (2 ** 32,))}, ValueError,   # no memory used
              'huge is an array of 4294967296 bytes'),
             ({('x', 1.5j): 1}, TypeError, 'key'),
             ({'deep': nested(70, 1)}, ValueError, 'deeper')]
    for target, error, match in cases:
        with pytest.raises(error, match=match):
            stateopt.save_checkpoint(path, target)
    with pytest.raises(TypeError, match='outside jit'):
        brainstate.transform.jit(lambda x: stateopt.save_checkpoint(path, {'x': x}))(jnp.ones(2))
    assert list(tmp_path.iterdir()) == []


# -- resuming ------------------------------------------------------------------------------

def schedulers():
    """name -> (optimizer class, its kwargs, scheduler factory, second group's overrides)."""
    return {
        'sgd-momentum-steplr': (
            stateopt.SGD, dict(momentum=0.9, weight_decay=1e-3),
            lambda: stateopt.StepLR(base_lr=0.1, step_size=3, gamma=0.5), dict(lr=0.03, momentum=0.5)),
        'adam-sequentiallr': (
            stateopt.Adam, dict(betas=(0.8, 0.99)),
            lambda: stateopt.SequentialLR(
                schedulers=[stateopt.StepLR(base_lr=0.01, step_size=2, gamma=0.5),
                            stateopt.StepLR(base_lr=0.01, step_size=1, gamma=0.9)],
                milestones=[7]),
            dict(lr=0.003, eps=1e-6)),
        'adamw-steplr': (
            stateopt.AdamW, dict(weight_decay=1e-2, grad_clip_norm=1.0),
            lambda: stateopt.StepLR(base_lr=0.01, step_size=2, gamma=0.7), dict(lr=0.002, weight_decay=0.0)),
    }


RESUME_CASES = ['sgd-momentum-steplr', 'adam-sequentiallr', 'adamw-steplr']


def training_run(name: str, seed: int):
    cls, kwargs, make_scheduler, group = schedulers()[name]
    brainstate.random.seed(seed)
    model = MLP()
    params = model.states(brainstate.ParamState)
    scheduler = make_scheduler()
    opt = cls(lr=scheduler, **kwargs).register_trainable_weights(params)
    opt.add_param_group(model.head.states(brainstate.ParamState), **group)

    @brainstate.transform.jit
    def train_step(x, y):
        grads = brainstate.transform.grad(lambda: jnp.mean((model(x) - y) ** 2), grad_states=params)()
        opt.update(grads)
        scheduler.step()

    return model, params, opt, scheduler, train_step


def run_state(params, opt, scheduler) -> tuple:
    return (values(params), jax.tree.map(np.asarray, opt.opt_state.value), int(opt.step_count.value),
            opt.get_last_lr(), [group.hyperparams() for group in opt.param_groups], scheduler.state_dict())


@pytest.mark.parametrize('name', RESUME_CASES)
def test_resume_under_jit_is_bit_identical(tmp_path, name):
    rng = np.random.default_rng(2)
    batches = [(jnp.asarray(rng.standard_normal((8, 4)), jnp.float32),
                jnp.asarray(rng.standard_normal((8, 3)), jnp.float32)) for _ in range(9)]
    _, params, opt, scheduler, train_step = training_run(name, seed=0)
    for x, y in batches[:5]:
        train_step(x, y)
    stateopt.save_checkpoint(tmp_path / 'run.msgpack', {'model': params, 'optimizer': opt, 'epoch': 5})
    for x, y in batches[5:]:
        train_step(x, y)
    uninterrupted = run_state(params, opt, scheduler)

    _, params, opt, scheduler, train_step = training_run(name, seed=1)
    result = stateopt.load_checkpoint(tmp_path / 'run.msgpack',
                                      {'model': params, 'optimizer': opt, 'epoch': 0})
    assert result.tree['epoch'] == 5
    for x, y in batches[5:]:
        train_step(x, y)
    resumed = run_state(params, opt, scheduler)
    assert_same(resumed[:3], uninterrupted[:3])
    assert resumed[3:5] == uninterrupted[3:5]
    assert_same(resumed[5], uninterrupted[5])


def test_resume_of_eager_steps_with_separately_saved_scheduler(tmp_path):
    _, params, opt, scheduler, _ = training_run('sgd-momentum-steplr', seed=0)
    grads = {key: jax.tree.map(jnp.ones_like, state.value) for key, state in params.items()}
    for _ in range(4):
        opt.update(grads)
        scheduler.step()
    target = {'model': params, 'optimizer': opt, 'scheduler': scheduler}
    stateopt.save_checkpoint(tmp_path / 'run.msgpack', target)
    for _ in range(3):
        opt.update(grads)
        scheduler.step()
    uninterrupted = run_state(params, opt, scheduler)
    _, params, opt, scheduler, _ = training_run('sgd-momentum-steplr', seed=3)
    target = {'model': params, 'optimizer': opt, 'scheduler': scheduler}
    stateopt.load_checkpoint(tmp_path / 'run.msgpack', target)
    for _ in range(3):
        opt.update(grads)
        scheduler.step()
    resumed = run_state(params, opt, scheduler)
    assert_same(resumed[:3], uninterrupted[:3])
    assert resumed[3:5] == uninterrupted[3:5]


@pytest.mark.parametrize('case', CASES, ids=[case.id for case in CASES])
def test_every_catalogue_optimizer_round_trips_every_slot(tmp_path, case):
    rng = np.random.default_rng(3)
    built = []
    for seed in (0, 1):
        states = make_params(seed)
        opt = case.make().register_trainable_weights({'w': states['w']})
        opt.add_param_group({'b': states['b']}, **case.group)
        built.append((opt, states))
    (opt, states), (fresh, fresh_states) = built

    def scrambled(leaf):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(rng.standard_normal(leaf.shape), leaf.dtype)
        return jnp.full(leaf.shape, 7, leaf.dtype) if jnp.issubdtype(leaf.dtype, jnp.integer) else leaf

    sd = opt.state_dict()
    opt.load_state_dict({**sd, 'step_count': scrambled(sd['step_count']),
                         'state': jax.tree.map(scrambled, sd['state']),
                         'group_state': jax.tree.map(scrambled, sd['group_state'])})
    if not callable(opt.param_groups[1]['lr']):
        opt.param_groups[1]['lr'] = 0.0123
    stateopt.save_checkpoint(tmp_path / 'a.msgpack', {'model': states, 'optimizer': opt})
    stateopt.load_checkpoint(tmp_path / 'a.msgpack', {'model': fresh_states, 'optimizer': fresh})
    assert_same(fresh.state_dict(), opt.state_dict())
    assert_same(values(fresh_states), values(states))


def test_fixture_of_format_version_1_keeps_loading_with_exact_values():
    brainstate.random.seed(5)
    net = make_checkpoint_v1.model()
    params = net.states(brainstate.ParamState)
    opt = stateopt.SGD(lr=0.1, momentum=0.9).register_trainable_weights(params)
    opt.add_param_group(net.layers[1].states(brainstate.ParamState), lr=0.2, momentum=0.9)
    arrays = {name: np.zeros(3, dtype) for name, (dtype, _) in make_checkpoint_v1.ARRAYS.items()}
    arrays.update(scalar=np.zeros((), np.float32), empty=np.ones((0, 3), np.int32),
                  jax=jnp.zeros((2, 2), jnp.int32), key=jax.random.key(0),
                  keys=jax.random.split(jax.random.key(0, impl='rbg'), 2))
    meta = {'epoch': 0, 'name': '', 'ratio': 0.0, 'flag': False, 'nothing': None, 'pair': (0, ''),
            'items': [0.0, b''], 'z': 0j, 3: '', ('a', 1): ''}
    tree = stateopt.load_checkpoint(FIXTURES / 'checkpoint_v1.msgpack',
                                    {'model': params, 'optimizer': opt, 'arrays': arrays, 'meta': meta}).tree

    # SGD, torch's rule, grads 1/4 then 2/4: group 0 (lr 1/2, momentum 1/2) moves by 7/16,
    # group 1 (lr 1/4, momentum 1/4) by 13/64; the buffers hold 5/8 and 9/16.
    first = {(0, 'weight'): np.arange(6).reshape(2, 3) / 8, (0, 'bias'): np.arange(8, 11) / 8,
             (1, 'weight'): np.arange(16, 19).reshape(3, 1) / 8, (1, 'bias'): np.array([24 / 8])}
    moved = {0: 7 / 16, 1: 13 / 64}
    for (_, layer, _), state in params.items():
        for leaf in ('weight', 'bias'):
            want = (first[layer, leaf] - moved[layer]).astype(np.float32)
            assert_same(state.value[leaf], want)
    sd = opt.state_dict()
    assert int(opt.step_count.value) == 2 and opt.get_last_lr() == [0.5, 0.25]
    assert [g['momentum'] for g in opt.param_groups] == [0.5, 0.25]
    assert_same(sd['state']['layers.0.weight']['momentum_buffer.weight'], np.full((2, 3), 0.625, np.float32))
    assert_same(sd['state']['layers.1.weight']['momentum_buffer.bias'], np.full(1, 0.5625, np.float32))
    assert [int(g['count']) for g in sd['group_state']] == [2, 2]
    for name, (dtype, want) in make_checkpoint_v1.ARRAYS.items():
        assert tree['arrays'][name].tobytes() == np.asarray(want, dtype).tobytes()
    assert tree['arrays']['scalar'] == 2.5 and tree['arrays']['empty'].shape == (0, 3)
    assert tree['arrays']['jax'].tolist() == [[0, 1], [2, 3]]
    assert_same(jax.random.key_data(tree['arrays']['key']), jax.random.key_data(jax.random.key(42)))
    assert_same(jax.random.key_data(tree['arrays']['keys']),
                jax.random.key_data(jax.random.split(jax.random.key(7, impl='rbg'), 2)))
    assert tree['meta'] == {'epoch': 2, 'name': 'v1', 'ratio': 0.25, 'flag': True, 'nothing': None,
                            'pair': (1, 'a'), 'items': [1.5, b'raw'], 'z': 1 - 2j, 3: 'int key',
                            ('a', 1): 'tuple key'}


# -- refusing what does not fit ------------------------------------------------------------

def test_wrong_shapes_and_dtypes_are_refused_naming_the_key(tmp_path):
    model, params, opt = mlp_and_sgd()
    train_eagerly(model, params, opt)
    stateopt.save_checkpoint(tmp_path / 'a.msgpack', {'model': params, 'optimizer': opt})
    wide_params = {(layer, 'weight'): brainstate.ParamState({'bias': jnp.zeros(n_out),
                                                             'weight': jnp.zeros((n_in, n_out))})
                   for layer, n_in, n_out in [('head', 9, 3), ('l1', 4, 9)]}       # 9 hidden units, not 8
    before = leaves_of({'m': wide_params})
    with pytest.raises(stateopt.CheckpointMismatchError,
                       match=r"model/\('head', 'weight'\)/bias|model/\('head', 'weight'\)/weight"):
        stateopt.load_checkpoint(tmp_path / 'a.msgpack', {'model': wide_params}, strict=False)
    assert unchanged(before, {'m': wide_params})

    _, params, opt = mlp_and_sgd(seed=2)
    half = params[('l1', 'weight')]
    half.value = {**half.value, 'bias': half.value['bias'].astype(jnp.bfloat16)}
    target = {'model': params, 'optimizer': opt}
    before = leaves_of(target)
    with pytest.raises(stateopt.CheckpointMismatchError,
                       match=r"model/\('l1', 'weight'\)/bias: .*float32.*bfloat16"):
        stateopt.load_checkpoint(tmp_path / 'a.msgpack', target)
    assert unchanged(before, target)

    _, params, adam = mlp_and_sgd(seed=2)
    adam = stateopt.Adam(lr=0.1).register_trainable_weights(params)
    target = {'model': params, 'optimizer': adam}
    before = leaves_of(target)
    with pytest.raises(stateopt.CheckpointMismatchError, match='optimizer'):
        stateopt.load_checkpoint(tmp_path / 'a.msgpack', target)
    assert unchanged(before, target)


def test_structure_mismatches_are_refused(tmp_path):
    path = tmp_path / 'a.msgpack'
    stateopt.save_checkpoint(path, {'a': np.zeros(2, np.float32), 'b': [1, 2], 'c': {'x': 1}, 'd': (1,)})
    for bad, where in [({'a': 0.0}, 'a'), ({'b': [1, 2, 3]}, 'b'), ({'b': (1, 2)}, 'b'), ({'c': 1}, 'c'),
                       ({'d': (1.0,)}, 'd/0'), ({'a': brainstate.State({'w': jnp.zeros(2)})}, 'a')]:
        template = {'a': np.zeros(2, np.float32), 'b': [0, 0], 'c': {'x': 0}, 'd': (0,), **bad}
        with pytest.raises(stateopt.CheckpointMismatchError, match=f'at {where}'):
            stateopt.load_checkpoint(path, template)
    stateopt.save_checkpoint(path, {'s': brainstate.State({'w': jnp.ones(2), 'v': jnp.ones(1)}), 'x': 1})
    with pytest.raises(stateopt.CheckpointMismatchError, match="at s: the checkpoint has the keys"):
        stateopt.load_checkpoint(path, {'s': brainstate.State({'w': jnp.zeros(2)}), 'x': 0})
    with pytest.raises(TypeError, match='x'):
        stateopt.load_checkpoint(path, {'x': object()}, strict=False)


class Counter:
    """A minimal stateful object, restored through state_dict / load_state_dict."""

    def __init__(self, count=0, refuse=False):
        self.count, self.refuse, self.loads = count, refuse, 0

    def state_dict(self):
        return {'count': self.count}

    def load_state_dict(self, state_dict):
        if self.refuse:
            raise ValueError('this counter refuses')
        self.count = state_dict['count']
        self.loads += 1


class CheckedCounter(Counter):
    def check_state_dict(self, state_dict):
        if self.refuse:
            raise ValueError('this counter refuses at the check')


def test_no_target_changes_unless_every_entry_fits(tmp_path):
    model, params, opt = mlp_and_sgd()
    train_eagerly(model, params, opt)
    second = stateopt.SGD(lr=0.1, momentum=0.9).register_trainable_weights(
        {'w': brainstate.ParamState(jnp.ones(2))})
    second.update({'w': jnp.ones(2)})
    path = tmp_path / 'a.msgpack'
    stateopt.save_checkpoint(path, {'model': params, 'optimizer': opt, 'second': second,
                                    'counter': Counter(5), 'last': Counter(6)})

    _, fresh_params, fresh_opt = mlp_and_sgd(seed=1)
    fresh_second = stateopt.SGD(lr=0.1, momentum=0.9, nesterov=True).register_trainable_weights(
        {'w': brainstate.ParamState(jnp.zeros(2))})
    counter = Counter()
    target = {'model': fresh_params, 'optimizer': fresh_opt, 'second': fresh_second, 'counter': counter,
              'last': Counter()}
    before = numpy_leaves(target)
    with pytest.raises(stateopt.CheckpointMismatchError, match='at second: .*nesterov'):
        stateopt.load_checkpoint(path, target)
    assert_same(numpy_leaves(target), before)
    assert counter.count == 0

    second_ok = stateopt.SGD(lr=0.1, momentum=0.9).register_trainable_weights(
        {'w': brainstate.ParamState(jnp.zeros(2))})
    for last in (Counter(refuse=True), CheckedCounter(refuse=True)):
        target = {**target, 'second': second_ok, 'last': last}
        before = numpy_leaves(target)
        with pytest.raises(stateopt.CheckpointMismatchError, match='at last: this counter refuses'):
            stateopt.load_checkpoint(path, target)
        assert_same(numpy_leaves(target), before)
        assert counter.count == 0
    assert counter.loads == 2        # loaded, then put back, by the first of the two
    stateopt.load_checkpoint(path, {**target, 'last': CheckedCounter()})
    assert counter.count == 5
    assert_same(snapshot(fresh_opt, fresh_params), snapshot(opt, params))


def test_strict_false_loads_the_common_entries_and_reports_the_rest(tmp_path):
    model, params, opt = mlp_and_sgd()
    path = tmp_path / 'a.msgpack'
    stateopt.save_checkpoint(path, {'model': params, 'epoch': 4, 'old': 1.0})
    _, fresh, _ = mlp_and_sgd(seed=1)
    head = fresh[('head', 'weight')].value
    partial_model = {('l1', 'weight'): fresh[('l1', 'weight')], ('new', 'weight'): fresh[('head', 'weight')]}
    target = {'model': partial_model, 'epoch': 0, 'step': 9}
    before = leaves_of(target)
    with pytest.raises(stateopt.CheckpointMismatchError,
                       match=r"lacks model/\('new', 'weight'\), step; the target lacks .*old"):
        stateopt.load_checkpoint(path, target)
    assert unchanged(before, target)
    tree, missing, unexpected = stateopt.load_checkpoint(path, target, strict=False)
    assert missing == ["model/('new', 'weight')", 'step']
    assert unexpected == ["model/('head', 'weight')", 'old']
    assert tree['epoch'] == 4 and tree['step'] == 9
    assert_same(fresh[('l1', 'weight')].value, params[('l1', 'weight')].value)
    assert fresh[('head', 'weight')].value is head


# -- damaged files -------------------------------------------------------------------------

def test_every_truncation_and_byte_flip_is_detected(tmp_path):
    model, params, opt = mlp_and_sgd()
    train_eagerly(model, params, opt)
    original = tmp_path / 'a.msgpack'
    stateopt.save_checkpoint(original, {'model': params, 'optimizer': opt, 'epoch': 2})
    data = original.read_bytes()
    _, fresh, fresh_opt = mlp_and_sgd(seed=1)
    target = {'model': fresh, 'optimizer': fresh_opt, 'epoch': 0}
    before, values_before = leaves_of(target), snapshot(fresh_opt, fresh)
    damaged = tmp_path / 'damaged.msgpack'
    variants = [data[:length] for length in range(len(data))]
    variants += [data[:at] + bytes([data[at] ^ mask]) + data[at + 1:]
                 for at in range(len(data)) for mask in (0x01, 0xFF)]
    silent = 0
    for variant in variants:
        damaged.unlink(missing_ok=True)      # a fresh file: rewriting one in place is slow on ext4
        damaged.write_bytes(variant)
        try:
            stateopt.load_checkpoint(damaged, target)
            silent += 1
        except stateopt.CheckpointError:
            pass
        assert unchanged(before, target)
    print(f'{len(data)}-byte checkpoint: {len(data)} truncations and {2 * len(data)} byte flips '
          f'(lowest bit, all bits), {silent} loaded silently')
    assert silent == 0 and len(variants) == 3 * len(data)
    assert_same(snapshot(fresh_opt, fresh), values_before)
    stateopt.load_checkpoint(original, target)
    assert_same(snapshot(fresh_opt, fresh), snapshot(opt, params))


def packed(obj) -> bytes:
    return msgpack.packb(obj)


MALFORMED = {
    'garbage': b'\xc1\xc1',
    'extra data': packed(['dict']) + b'\x00',
    'plain map': packed({'w': 1}),
    'bad utf-8': b'\xa2\xff\xfe',
    'ext type': msgpack.packb(msgpack.ExtType(5, b'x')),
    'unknown kind': packed(['set', 1]),
    'empty node': packed([]),
    'odd dict': packed(['dict', 'w']),
    'duplicate key': packed(['dict', 'w', 1, 'w', 2]),
    'list key': packed(['dict', ['list', 1], 1]),
    'dtype': packed(['dict', 'w', ['array', 'object', [1], b'\x00' * 8]]),
    'shape': packed(['dict', 'w', ['array', 'float32', [-1], b'']]),
    'byte count': packed(['dict', 'w', ['array', 'float32', [2], b'\x00' * 7]]),
    'huge shape': packed(['dict', 'w', ['array', 'float32', [2 ** 62, 2 ** 62], b'']]),
    'shape type': packed(['dict', 'w', ['array', 'float32', [1.0], b'\x00' * 4]]),
    'key data': packed(['dict', 'w', ['key', 'threefry2x32', ['array', 'float32', [2], b'\x00' * 8]]]),
    'complex': packed(['dict', 'w', ['complex', 1]]),
    'deep': packed(['dict', 'w', nested(70, 'list')]),
    'msgpack depth': b'\x91' * 5000,
}


@pytest.mark.parametrize('name', list(MALFORMED))
def test_malformed_payloads_with_a_valid_checksum_raise_checkpoint_error(tmp_path, name):
    path = tmp_path / 'a.msgpack'
    path.write_bytes(frame(MALFORMED[name]))
    state = brainstate.State(jnp.zeros(2))
    with pytest.raises(stateopt.CheckpointError) as info:
        stateopt.load_checkpoint(path, {'w': state})
    assert type(info.value) is stateopt.CheckpointError and state.value.tolist() == [0.0, 0.0]


@pytest.mark.parametrize('data, match', [
    (b'', 'truncated'),
    (b'PK\x03\x04' + bytes(60), 'not a stateopt checkpoint'),
    (frame(packed(['dict']), version=2), 'format version 2'),
    (frame(packed(['dict']), header={**HEADER, 'format': 'other'}), 'invalid header'),
    (frame(packed(['dict']), header={**HEADER, 'format_version': 2}), 'invalid header'),
])
def test_damaged_or_foreign_headers_raise_checkpoint_error(tmp_path, data, match):
    (tmp_path / 'a.msgpack').write_bytes(data)
    with pytest.raises(stateopt.CheckpointError, match=match):
        stateopt.load_checkpoint(tmp_path / 'a.msgpack', {})


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        stateopt.load_checkpoint(tmp_path / 'missing.msgpack', {})


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ENCODABLE = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=16)
    | st.sampled_from(['dict', 'list', 'tuple', 'array', 'key', 'complex', 'float32']),
    lambda inner: st.lists(inner, max_size=5), max_leaves=20)


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(tmp_path, data):
    check_only_checkpoint_errors(tmp_path, data)


@FUZZ
@given(payload=st.binary(max_size=200))
def test_fuzz_arbitrary_payload_bytes_behind_a_valid_header(tmp_path, payload):
    check_only_checkpoint_errors(tmp_path, frame(payload))


@FUZZ
@given(node=ENCODABLE)
def test_fuzz_arbitrary_msgpack_values_behind_a_valid_header(tmp_path, node):
    check_only_checkpoint_errors(tmp_path, frame(packed(['dict', 'w', node])))


def check_only_checkpoint_errors(tmp_path, data: bytes) -> None:
    path = tmp_path / 'fuzz.msgpack'
    path.write_bytes(data)
    state = brainstate.State(jnp.zeros(2))
    with pytest.raises(stateopt.CheckpointError):
        stateopt.load_checkpoint(path, {'w': state})
    assert state.value.tolist() == [0.0, 0.0]


# -- writing -------------------------------------------------------------------------------

def test_overwrite_false_refuses_an_existing_file(tmp_path):
    path = tmp_path / 'a.msgpack'
    stateopt.save_checkpoint(path, {'x': 1})
    data = path.read_bytes()
    with pytest.raises(FileExistsError):
        stateopt.save_checkpoint(path, {'x': 2}, overwrite=False)
    with pytest.raises(FileExistsError):
        stateopt.save_checkpoint_async(path, {'x': 3}, overwrite=False)
    assert path.read_bytes() == data and os.listdir(tmp_path) == ['a.msgpack']
    stateopt.save_checkpoint(tmp_path / 'b.msgpack', {'x': 4}, overwrite=False)
    assert stateopt.load_checkpoint(tmp_path / 'b.msgpack', {'x': 0}).tree == {'x': 4}


@pytest.mark.parametrize('failing', ['fsync', 'replace'])
def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch, failing):
    path = tmp_path / 'a.msgpack'
    stateopt.save_checkpoint(path, {'x': np.arange(1000)})
    data = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(f'{failing} failed')

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match=failing):
        stateopt.save_checkpoint(path, {'x': np.arange(1000) + 1})
    monkeypatch.undo()
    assert path.read_bytes() == data and os.listdir(tmp_path) == ['a.msgpack']


def test_async_save_snapshots_the_values_at_call_time(tmp_path):
    model, params, opt = mlp_and_sgd()
    train_eagerly(model, params, opt)
    at_call = snapshot(opt, params)
    save = stateopt.save_checkpoint_async(tmp_path / 'a.msgpack', {'model': params, 'optimizer': opt})
    train_eagerly(model, params, opt, steps=3)      # eager steps reuse (donate) their buffers
    save.wait()
    assert save.done()
    _, fresh, fresh_opt = mlp_and_sgd(seed=1)
    stateopt.load_checkpoint(tmp_path / 'a.msgpack', {'model': fresh, 'optimizer': fresh_opt})
    assert_same(snapshot(fresh_opt, fresh), at_call)


def test_saves_are_written_in_call_order_and_errors_surface_on_wait(tmp_path):
    path = tmp_path / 'a.msgpack'
    big = np.zeros(4_000_000, np.float32)
    pending = [stateopt.save_checkpoint_async(path, {'version': v, 'data': big}) for v in range(3)]
    stateopt.save_checkpoint(path, {'version': 3, 'data': big[:1]})
    assert all(save.done() for save in pending)
    assert stateopt.load_checkpoint(path, {'version': 0, 'data': big[:1]}).tree['version'] == 3
    failing = stateopt.save_checkpoint_async(tmp_path / 'no-such-directory' / 'a.msgpack', {'x': 1})
    with pytest.raises(FileNotFoundError):
        failing.wait()
    assert failing.done()


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
@pytest.mark.filterwarnings('ignore:os.fork', 'ignore:This process .* is multi-threaded')
def test_a_forked_process_can_save(tmp_path):
    stateopt.save_checkpoint_async(tmp_path / 'parent.msgpack', {'x': 1}).wait()   # the writer runs
    pid = os.fork()
    if pid == 0:                                  # the child: its writer thread did not survive
        try:
            stateopt.save_checkpoint(tmp_path / 'child.msgpack', {'x': 2})
        finally:
            os._exit(0)
    deadline = time.monotonic() + 15
    while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    if time.monotonic() >= deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert stateopt.load_checkpoint(tmp_path / 'child.msgpack', {'x': 0}).tree == {'x': 2}


CHILD = textwrap.dedent('''
    import sys
    import numpy as np
    import stateopt
    data = np.empty(4_000_000, np.float32)
    for version in range(1_000_000):
        data.fill(version)
        stateopt.save_checkpoint(sys.argv[1], {'version': version, 'data': data})
        print(version, flush=True)
''')


def test_a_save_killed_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    children = [(subprocess.Popen([sys.executable, '-c', CHILD, str(tmp_path / f'{i}.msgpack')],
                                  stdout=subprocess.PIPE, text=True, env=env), delay)
                for i, delay in enumerate(random.Random(0).uniform(0.05, 0.5) for _ in range(2))]
    reported = []
    for child, delay in children:
        assert child.stdout.readline().strip() == '0'      # the first save completed
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        reported.append(int((['0'] + child.stdout.read().split())[-1]))
        child.stdout.close()
    template = {'version': 0, 'data': np.zeros(4_000_000, np.float32)}
    for i, last in enumerate(reported):
        tree = stateopt.load_checkpoint(tmp_path / f'{i}.msgpack', template).tree
        assert tree['version'] in (last, last + 1)          # the last completed save, or the one after
        assert (tree['data'] == tree['version']).all()
