"""Checkpoints: the documented format, bit-exact resume, atomic writes, corruption detection."""

import errno
import hashlib
import json
import os
import pathlib
import random
import re
import signal
import stat
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
import test_state_dict as state_dict_tests  # noqa: E402

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

    never_negative = state_dict_tests.NEVER_NEGATIVE.get(type(opt).__name__, set())

    def scrambled(path, leaf):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            numbers = rng.standard_normal(leaf.shape)
            return jnp.asarray(np.abs(numbers) if path and path[-1].key in never_negative else numbers,
                               leaf.dtype)
        return jnp.full(leaf.shape, 7, leaf.dtype) if jnp.issubdtype(leaf.dtype, jnp.integer) else leaf

    sd = opt.state_dict()
    opt.load_state_dict({**sd, 'step_count': scrambled((), sd['step_count']),
                         'state': jax.tree_util.tree_map_with_path(scrambled, sd['state']),
                         'group_state': jax.tree_util.tree_map_with_path(scrambled, sd['group_state'])})
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
        stateopt.save_checkpoint(tmp_path / f'{i}.msgpack', tree)     # removes what the killed save left
    assert sorted(os.listdir(tmp_path)) == ['0.msgpack', '1.msgpack']


# -- where and how a save writes -----------------------------------------------------------

def saved_version(path) -> int:
    return stateopt.load_checkpoint(path, {'version': 0}, strict=False).tree['version']


def test_saving_through_symbolic_links_writes_their_target_and_keeps_the_links(tmp_path):
    runs = tmp_path / 'runs'
    runs.mkdir()
    stateopt.save_checkpoint(runs / 'run-7.msgpack', {'version': 7})
    os.chmod(runs / 'run-7.msgpack', 0o600)
    (tmp_path / 'middle').symlink_to('runs/run-7.msgpack')
    latest = tmp_path / 'latest.msgpack'
    latest.symlink_to('middle')                              # a chain of two relative links
    stateopt.save_checkpoint(latest, {'version': 8})
    stateopt.save_checkpoint_async(latest, {'version': 9}).wait()
    assert os.readlink(latest) == 'middle' and os.readlink(tmp_path / 'middle') == 'runs/run-7.msgpack'
    assert saved_version(runs / 'run-7.msgpack') == 9
    assert stat.S_IMODE((runs / 'run-7.msgpack').stat().st_mode) == 0o600
    dangling = tmp_path / 'next.msgpack'
    dangling.symlink_to('runs/run-8.msgpack')
    stateopt.save_checkpoint(dangling, {'version': 10})
    assert os.readlink(dangling) == 'runs/run-8.msgpack' and saved_version(runs / 'run-8.msgpack') == 10
    assert sorted(os.listdir(tmp_path)) == ['latest.msgpack', 'middle', 'next.msgpack', 'runs']
    assert sorted(os.listdir(runs)) == ['run-7.msgpack', 'run-8.msgpack']


@pytest.mark.parametrize('mode', [0o600, 0o640, 0o444], ids=oct)
def test_overwriting_keeps_the_mode_and_owner_of_the_file(tmp_path, mode):
    path = tmp_path / 'a.msgpack'
    stateopt.save_checkpoint(path, {'version': 1})
    os.chmod(path, mode)
    owner = (1234, 5678) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(path, *owner)
    stateopt.save_checkpoint(path, {'version': 2})
    status = path.stat()
    assert stat.S_IMODE(status.st_mode) == mode and (status.st_uid, status.st_gid) == owner
    assert saved_version(path) == 2


def test_new_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        stateopt.save_checkpoint(tmp_path / 'a.msgpack', {'version': 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / 'a.msgpack').stat().st_mode) == 0o640


def longest_names(directory) -> list[str]:
    """File names of 234 bytes up to the file system's limit, one of two-byte characters."""
    limit = os.pathconf(directory, 'PC_NAME_MAX')
    return ['n' * (234 - 8) + '.msgpack', 'n' * (limit - 8) + '.msgpack',
            'é' * ((limit - 9) // 2) + 'x.msgpack']


@pytest.mark.parametrize('index', range(3), ids=['234-bytes', 'name-max', 'two-byte-characters'])
def test_names_up_to_the_file_system_limit_can_be_saved(tmp_path, index):
    name = longest_names(tmp_path)[index]
    for version in range(3):
        stateopt.save_checkpoint(tmp_path / name, {'version': version})
    stateopt.save_checkpoint_async(tmp_path / name, {'version': 3}).wait()
    assert saved_version(tmp_path / name) == 3 and os.listdir(tmp_path) == [name]


STUCK = textwrap.dedent('''
    import os, sys, time
    import numpy as np
    import stateopt

    def stuck(descriptor):
        print('writing', flush=True)
        time.sleep(600)

    os.fsync = stuck           # the temporary file is written and the save waits to be killed
    stateopt.save_checkpoint(sys.argv[1], {'version': 99, 'data': np.ones(100_000, np.float32)})
''')


@pytest.mark.parametrize('long_name', [False, True], ids=['short-name', 'name-max'])
def test_the_next_save_removes_temporaries_of_killed_saves_but_not_of_live_ones(tmp_path, long_name):
    name = longest_names(tmp_path)[1] if long_name else 'a.msgpack'
    path, other = tmp_path / name, tmp_path / 'b.msgpack'
    data = np.zeros(100_000, np.float32)
    stateopt.save_checkpoint(path, {'version': 1, 'data': data})
    stateopt.save_checkpoint(other, {'version': 1})
    child = subprocess.Popen([sys.executable, '-c', STUCK, str(path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    try:
        assert child.stdout.readline().strip() == 'writing'
        temporaries = set(os.listdir(tmp_path)) - {name, 'b.msgpack'}
        assert len(temporaries) == 1
        stateopt.save_checkpoint(path, {'version': 2, 'data': data})         # the child is writing
        assert set(os.listdir(tmp_path)) == {name, 'b.msgpack'} | temporaries and child.poll() is None
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    stateopt.save_checkpoint(other, {'version': 2})                         # another checkpoint's save
    assert set(os.listdir(tmp_path)) == {name, 'b.msgpack'} | temporaries
    stateopt.save_checkpoint(path, {'version': 3, 'data': data})
    assert set(os.listdir(tmp_path)) == {name, 'b.msgpack'}
    assert saved_version(path) == 3 and saved_version(other) == 2


# -- errors a save reports -----------------------------------------------------------------

def fail_creating(error: int):
    """Make creating files fail as a read-only file system or directory does."""
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(error, os.strerror(error), path)
        return real_open(path, flags, *args, **kwargs)

    return ('open', refuse)


def fail_with_no_filename(error: int):
    def fail(*args, **kwargs):
        raise OSError(error, os.strerror(error))
    return fail


def existing(tmp_path) -> pathlib.Path:
    stateopt.save_checkpoint(tmp_path / 'a.msgpack', {'version': 1})
    return tmp_path / 'a.msgpack'


def dangling_link(tmp_path) -> pathlib.Path:
    (tmp_path / 'a.msgpack').symlink_to('run-8.msgpack')
    return tmp_path / 'a.msgpack'


def existing_link(tmp_path) -> pathlib.Path:
    stateopt.save_checkpoint(tmp_path / 'run-7.msgpack', {'version': 1})
    (tmp_path / 'a.msgpack').symlink_to('run-7.msgpack')
    return tmp_path / 'a.msgpack'


def a_directory(tmp_path) -> pathlib.Path:
    (tmp_path / 'a.msgpack').mkdir()
    return tmp_path / 'a.msgpack'


#: name -> (make the user's path, overwrite, (os function, replacement) or None, error, advice)
SAVE_ERRORS = {
    'missing directory': (lambda tmp: tmp / 'no-such-directory' / 'a.msgpack', True, None,
                          FileNotFoundError, 'does not exist.*create it'),
    'read-only file system': (existing, True, fail_creating(errno.EROFS), OSError,
                              'read-only file system.*writable'),
    'read-only directory': (existing, True, fail_creating(errno.EACCES), PermissionError,
                            'permission.*directory'),
    'path is a directory': (a_directory, True, None, IsADirectoryError, 'is a directory.*file name'),
    'disk full on write': (existing, True, ('write', fail_with_no_filename(errno.ENOSPC)), OSError,
                           'no space left.*free'),
    'disk full on fsync': (existing, True, ('fsync', fail_with_no_filename(errno.ENOSPC)), OSError,
                           'no space left.*free'),
    'dangling link, overwrite=False': (dangling_link, False, None, FileExistsError,
                                       'symbolic link.*run-8.msgpack.*overwrite=True'),
    'link, overwrite=False': (existing_link, False, None, FileExistsError, 'exists.*overwrite=True'),
    'existing file, overwrite=False': (existing, False, None, FileExistsError, 'exists.*overwrite=True'),
}


@pytest.mark.parametrize('entry', ['save_checkpoint', 'save_checkpoint_async'])
@pytest.mark.parametrize('case', list(SAVE_ERRORS))
def test_save_errors_name_the_path_given_say_what_to_do_and_leave_nothing(tmp_path, monkeypatch, case,
                                                                           entry):
    make_path, overwrite, failure, error, advice = SAVE_ERRORS[case]
    path = make_path(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)
              if (tmp_path / name).is_file()}
    listing = sorted(os.listdir(tmp_path))
    if failure is not None:
        monkeypatch.setattr(os, *failure)

    def save():
        if entry == 'save_checkpoint':
            stateopt.save_checkpoint(path, {'version': 2}, overwrite=overwrite)
        else:
            stateopt.save_checkpoint_async(path, {'version': 2}, overwrite=overwrite).wait()

    with pytest.raises(error) as info:
        save()
    monkeypatch.undo()
    message = str(info.value)
    assert str(path) in message and re.search(advice, message, re.IGNORECASE), message
    assert '.tmp' not in message, message
    assert sorted(os.listdir(tmp_path)) == listing
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


# -- files that are not checkpoints --------------------------------------------------------

LOAD_IN_CHILD = textwrap.dedent('''
    import json, resource, sys, time
    import stateopt
    for path in sys.argv[1:]:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        began = time.monotonic()
        try:
            stateopt.load_checkpoint(path, {})
            message = 'loaded'
        except Exception as exc:
            message = f'{type(exc).__name__} {exc}'
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024   # ru_maxrss is in KiB
        print(json.dumps([path, message, grown, time.monotonic() - began]), flush=True)
''')

GIB = 1 << 30
PREFIX = b'\x89STOPT\r\n' + struct.pack('>I', 1) + bytes(32)


def sparse(path: pathlib.Path, opening: bytes) -> pathlib.Path:
    """A 3 GiB sparse file that starts with ``opening``."""
    with open(path, 'wb') as file:
        file.write(opening)
        file.truncate(3 * GIB)
    return path


def fifo(path: pathlib.Path) -> pathlib.Path:
    os.mkfifo(path)
    return path


def link(path: pathlib.Path, to: pathlib.Path) -> pathlib.Path:
    path.symlink_to(to)
    return path


def directory(path: pathlib.Path) -> pathlib.Path:
    path.mkdir()
    return path


def written(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.write_bytes(data)
    return path


#: A payload that declares a 2 GiB array and holds 10 bytes of it (msgpack's bin 32 header).
DECLARES_2_GIB = (b'\x93' + packed('dict') + packed('w')
                  + b'\x94' + packed(['array', 'float32', [2 ** 29]])[1:] + struct.pack('>BI', 0xC6, 2 ** 31)
                  + bytes(10))


NOT_A_FILE = 'not a checkpoint file; pass the path of a file written by save_checkpoint'
#: name -> (make it in a directory, what the error says after the path)
NOT_CHECKPOINTS = {
    '3 GiB of zeros': (lambda d: sparse(d / 'zeros.msgpack', b''), 'is not a stateopt checkpoint'),
    '3 GiB, huge header length': (
        lambda d: sparse(d / 'header.msgpack', PREFIX + struct.pack('>I', 2 ** 32 - 1)),
        'is corrupt or truncated: it declares a header of 4294967295 bytes'),
    '3 GiB, foreign header': (lambda d: sparse(d / 'foreign.msgpack', PREFIX + struct.pack('>I', 6)
                                               + msgpack.packb('other')), "has an invalid header: 'other'"),
    'FIFO': (lambda d: fifo(d / 'pipe'), f'is a FIFO, {NOT_A_FILE}'),
    'link to a FIFO': (lambda d: link(d / 'link', fifo(d / 'pipe-2')),
                       f'is a symbolic link to a FIFO, {NOT_A_FILE}'),
    'directory': (lambda d: directory(d / 'directory'), f'is a directory, {NOT_A_FILE}'),
    '/dev/zero': (lambda d: pathlib.Path('/dev/zero'), f'is a character device, {NOT_A_FILE}'),
    'declares a 2 GiB array': (lambda d: written(d / 'array.msgpack', frame(DECLARES_2_GIB)),
                               'has an unreadable payload: ValueError: Unpack failed: incomplete input'),
    'declares 2**31 items': (lambda d: written(d / 'items.msgpack', frame(struct.pack('>BI', 0xDD, 2 ** 31))),
                             'has an unreadable payload: ValueError: 2147483648 exceeds max_array_len'),
}


@pytest.fixture(scope='module')
def refusals(tmp_path_factory) -> dict:
    """name -> (path, what loading it raised, peak memory growth, seconds), all loaded in one fresh process
    (which a FIFO opened for reading would block; it is killed after a minute)."""
    made = tmp_path_factory.mktemp('not-checkpoints')
    paths = {name: make(made) for name, (make, _) in NOT_CHECKPOINTS.items()}
    result = subprocess.run([sys.executable, '-c', LOAD_IN_CHILD, *map(str, paths.values())], timeout=60,
                            capture_output=True, text=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    found = {path: (message, grown, seconds) for path, message, grown, seconds in
             map(json.loads, result.stdout.splitlines())}
    return {name: (path, *found.get(str(path), (f'not reached: {result.stderr[-2000:]}', 0, 0.0)))
            for name, path in paths.items()}


@pytest.mark.parametrize('name', list(NOT_CHECKPOINTS))
def test_what_is_not_a_checkpoint_is_refused_quickly_in_little_memory(refusals, name):
    path, message, grown, seconds = refusals[name]
    assert message.startswith(f'CheckpointError {path} {NOT_CHECKPOINTS[name][1]}'), message
    assert grown < 100 * 2 ** 20 and seconds < 5, (grown, seconds)


# -- the documented layout -----------------------------------------------------------------

def documented_layout() -> tuple[dict, list]:
    """The file layout as the module documentation states it: the offset and size of each field
    (``'48 + H'`` and ``'H'`` as written), and the byte ranges the checksum covers."""
    doc = sys.modules['stateopt.checkpoint'].__doc__
    rows = re.findall(r'^    (\d+(?: \+ H)?) +(\d+|H|\.\.\.) +(.+)$', doc, re.MULTILINE)
    fields = {}
    for offset, size, text in rows:
        name = next(name for name in ('magic', 'format version', 'SHA-256', 'header length', 'header:',
                                      'payload') if text.startswith(name))
        fields[name] = (offset, size)
    checksum = next(text for _, _, text in rows if text.startswith('SHA-256'))
    ranges = [(int(start), None if end == 'end of file' else int(end))
              for start, end in re.findall(r'\[(\d+), (\d+|end of file)\)', checksum)]
    return fields, ranges


def read_as_documented(data: bytes) -> tuple[dict, object]:
    """A minimal reader written from the documented layout alone: (header, payload)."""
    fields, ranges = documented_layout()
    at = {name: int(offset.split()[0]) for name, (offset, _) in fields.items()}
    assert fields['header:'] == (str(at['header:']), 'H') and fields['payload'][0] == f'{at["header:"]} + H'
    assert data[at['magic']:at['magic'] + int(fields['magic'][1])] == b'\x89STOPT\r\n'
    (version,) = struct.unpack_from('>I', data, at['format version'])
    (header_size,) = struct.unpack_from('>I', data, at['header length'])
    digest = data[at['SHA-256']:at['SHA-256'] + int(fields['SHA-256'][1])]
    assert hashlib.sha256(b''.join(data[start:end] for start, end in ranges)).digest() == digest
    header = msgpack.unpackb(data[at['header:']:at['header:'] + header_size])
    assert header['format'] == 'stateopt-checkpoint' and header['format_version'] == version == 1
    return header, msgpack.unpackb(data[at['header:'] + header_size:])


def test_a_reader_written_from_the_documented_layout_verifies_real_files(tmp_path):
    stateopt.save_checkpoint(tmp_path / 'a.msgpack', {'w': np.arange(3, dtype=np.float32), 'epoch': 4})
    header, payload = read_as_documented((tmp_path / 'a.msgpack').read_bytes())
    assert header == HEADER
    assert payload == ['dict', 'w', ['array', 'float32', [3], np.arange(3, dtype='<f4').tobytes()],
                       'epoch', 4]
    header, payload = read_as_documented((FIXTURES / 'checkpoint_v1.msgpack').read_bytes())
    assert header['format_version'] == 1 and payload[0] == 'dict'
    meta = payload[payload.index('meta') + 1]
    assert meta[meta.index('epoch') + 1] == 2 and meta[meta.index('name') + 1] == 'v1'


# -- failed background saves ---------------------------------------------------------------

ASYNC_FAILURE = textwrap.dedent('''
    import sys, time
    import stateopt
    failing, handling, other = sys.argv[1:]
    save = stateopt.save_checkpoint_async(failing, {'x': 1})
    if handling == 'wait':
        try:
            save.wait()
        except FileNotFoundError:
            print('raised by wait')
    elif handling == 'next save':
        try:
            stateopt.save_checkpoint(other, {'x': 2})
        except FileNotFoundError:
            print('raised by the next save')
        stateopt.save_checkpoint(other, {'x': 3})
        print('the save after it works')
''')


@pytest.mark.parametrize('handling', ['none', 'wait', 'next save'])
def test_a_failed_background_save_is_reported_once(tmp_path, handling):
    failing = tmp_path / 'no-such-directory' / 'a.msgpack'
    result = subprocess.run([sys.executable, '-c', ASYNC_FAILURE, str(failing), handling,
                             str(tmp_path / 'b.msgpack')], capture_output=True, text=True, timeout=120,
                            env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert result.returncode == 0, result.stderr[-3000:]
    reported = {'none': '', 'wait': 'raised by wait\n',
                'next save': 'raised by the next save\nthe save after it works\n'}[handling]
    assert result.stdout == reported
    warned = re.findall(rf'RuntimeWarning: .*{re.escape(str(failing))}.*does not exist', result.stderr)
    assert len(warned) == (handling == 'none'), result.stderr[-3000:]


def test_the_next_save_raises_a_background_failure_nobody_waited_for_and_writes_nothing(tmp_path):
    failing = stateopt.save_checkpoint_async(tmp_path / 'no-such-directory' / 'a.msgpack', {'x': 1})
    with pytest.raises(FileNotFoundError, match='no-such-directory') as info:
        stateopt.save_checkpoint(tmp_path / 'b.msgpack', {'x': 2})
    assert any('save_checkpoint_async' in note and 'b.msgpack' in note for note in info.value.__notes__)
    assert os.listdir(tmp_path) == []
    stateopt.save_checkpoint(tmp_path / 'b.msgpack', {'x': 3})                 # reported once
    assert stateopt.load_checkpoint(tmp_path / 'b.msgpack', {'x': 0}).tree == {'x': 3}
    with pytest.raises(FileNotFoundError):                                    # wait() always raises it
        failing.wait()
    second = stateopt.save_checkpoint_async(tmp_path / 'no-such-directory' / 'c.msgpack', {'x': 1})
    while not second.done():
        time.sleep(0.01)
    with pytest.raises(FileNotFoundError, match='c.msgpack'):
        stateopt.save_checkpoint_async(tmp_path / 'd.msgpack', {'x': 4})
    stateopt.save_checkpoint_async(tmp_path / 'd.msgpack', {'x': 5}).wait()
    assert sorted(os.listdir(tmp_path)) == ['b.msgpack', 'd.msgpack']


# -- crafted optimizer state in a file -----------------------------------------------------

@pytest.mark.parametrize('name', list(state_dict_tests.CRAFTED))
def test_crafted_optimizer_state_in_a_file_raises_one_error_naming_the_entry(tmp_path, name):
    edit, entry = state_dict_tests.CRAFTED[name]
    opt, states, scheduler, sd = state_dict_tests.scheduled()
    path = tmp_path / 'a.msgpack'
    stateopt.save_checkpoint(path, {'model': states, 'optimizer': edit(sd)})
    fresh_opt, fresh, fresh_scheduler, _ = state_dict_tests.scheduled()
    before = state_dict_tests.scheduled_snapshot(fresh_opt, fresh, fresh_scheduler)
    model_before = values(fresh)
    with pytest.raises(stateopt.CheckpointMismatchError) as info:
        stateopt.load_checkpoint(path, {'model': fresh, 'optimizer': fresh_opt})
    message, opening = str(info.value), f'{path} does not fit the target at optimizer: '
    assert message.startswith(opening), message
    state_dict_tests.assert_names_the_entry(message.removeprefix(opening), entry)
    np.testing.assert_equal(state_dict_tests.scheduled_snapshot(fresh_opt, fresh, fresh_scheduler), before)
    assert_same(values(fresh), model_before)


def test_a_checkpoint_of_another_optimizer_class_is_refused_unless_not_strict(tmp_path):
    _, params, _ = mlp_and_sgd()
    adam = stateopt.Adam(lr=0.1).register_trainable_weights(params)
    adam.update({key: jax.tree.map(jnp.ones_like, state.value) for key, state in params.items()})
    stateopt.save_checkpoint(tmp_path / 'a.msgpack', {'optimizer': adam})
    adamw = stateopt.AdamW(lr=0.1).register_trainable_weights(params)
    before = leaves_of({'optimizer': adamw})
    with pytest.raises(stateopt.CheckpointMismatchError, match=r"optimizer_class.*'Adam'.*'AdamW'"):
        stateopt.load_checkpoint(tmp_path / 'a.msgpack', {'optimizer': adamw})
    assert unchanged(before, {'optimizer': adamw})
    with pytest.warns(UserWarning, match=r"'Adam'.*'AdamW'"):
        stateopt.load_checkpoint(tmp_path / 'a.msgpack', {'optimizer': adamw}, strict=False)
    assert_same(adamw.opt_state.value, adam.opt_state.value)
    assert int(adamw.step_count.value) == 1


def test_an_object_that_cannot_be_put_back_does_not_hide_the_refusal(tmp_path):
    model, params, opt = mlp_and_sgd()
    train_eagerly(model, params, opt)
    stateopt.save_checkpoint(tmp_path / 'a.msgpack', {'optimizer': opt, 'last': Counter(6)})
    _, _, diverged = mlp_and_sgd(seed=1)
    diverged.opt_state.value = jax.tree.map(lambda leaf: jnp.full_like(leaf, jnp.nan)
                                            if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf,
                                            diverged.opt_state.value)     # a run that diverged
    with pytest.raises(stateopt.CheckpointMismatchError, match='at last: this counter refuses') as info:
        stateopt.load_checkpoint(tmp_path / 'a.msgpack',
                                 {'optimizer': diverged, 'last': Counter(refuse=True)})
    assert any(note.startswith('optimizer could not be put back: ') and 'must be finite' in note
               for note in info.value.__notes__)
    assert_same(diverged.state_dict()['state'], opt.state_dict()['state'])    # kept what it loaded
