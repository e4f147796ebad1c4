"""OrbaxCheckpointManager: bit-exact resume of a model, an optimizer with groups and a scheduler, an
EMA and plain values; steps kept, listed and chosen; background saves; refusals that change nothing;
damaged directories; restoring onto another mesh (8 fake CPU devices, in a subprocess: see
orbax_mesh_check.py); and save_checkpoint's refusal of arrays other processes hold."""

import json
import os
import re
import shutil
import subprocess
import sys
from collections import namedtuple

import brainstate
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from conftest import MLP, assert_same, make_params, values

import stateopt

pytest.importorskip('orbax.checkpoint')

CHECK = os.path.join(os.path.dirname(__file__), 'orbax_mesh_check.py')


def training_run(seed: int):
    """A model, an AdamW with a second group for the head and a scheduler, an EMA, and the
    compiled train step that moves all of them."""
    brainstate.random.seed(seed)
    model = MLP()
    params = model.states(brainstate.ParamState)
    scheduler = stateopt.StepLR(base_lr=0.01, step_size=2, gamma=0.7)
    opt = stateopt.AdamW(lr=scheduler, weight_decay=1e-2, grad_clip_norm=1.0)
    opt.register_trainable_weights(params)
    opt.add_param_group(model.head.states(brainstate.ParamState), lr=0.002, weight_decay=0.0)
    ema = stateopt.EMA(params, decay=0.9)

    @brainstate.transform.jit
    def train_step(x, y):
        grads = brainstate.transform.grad(lambda: jnp.mean((model(x) - y) ** 2), grad_states=params)()
        opt.update(grads)
        scheduler.step()
        ema.update()

    return params, opt, scheduler, ema, train_step


def run_state(params, opt, scheduler, ema) -> tuple:
    return (values(params), jax.tree.map(np.asarray, opt.opt_state.value), int(opt.step_count.value),
            values(ema.averages), int(ema.count), opt.get_last_lr(),
            [group.hyperparams() for group in opt.param_groups], scheduler.state_dict())


def batches(count: int) -> list:
    rng = np.random.default_rng(2)
    return [(jnp.asarray(rng.standard_normal((8, 4)), jnp.float32),
             jnp.asarray(rng.standard_normal((8, 3)), jnp.float32)) for _ in range(count)]


def plain_values(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {'order': rng.permutation(10), 'key': jax.random.key(seed),
            'losses': jnp.asarray(rng.standard_normal(4), jnp.float32), 'epoch': seed, 'name': f'run-{seed}'}


def leaves_of(target) -> list:
    """Every array a restore would replace, to check that none was."""
    found = []
    for node in jax.tree.leaves(target, is_leaf=lambda x: isinstance(x, (brainstate.State, stateopt.EMA))):
        if isinstance(node, stateopt.OptaxOptimizer):
            found += [node.step_count.value, *jax.tree.leaves(node.opt_state.value)]
            found += jax.tree.leaves([group[key] for group in node.param_groups for key in group
                                      if key != 'params'])
        elif isinstance(node, stateopt.EMA):
            found += [node.count.value, *(state.value for state in node.averages.values())]
        elif isinstance(node, brainstate.State):
            found += jax.tree.leaves(node.value)
        else:
            found.append(node)
    return found


def unchanged(before: list, target) -> bool:
    after = leaves_of(target)
    return len(before) == len(after) and all(a is b for a, b in zip(before, after))


# -- resuming ------------------------------------------------------------------------------

@pytest.mark.parametrize('async_save', [True, False])
def test_training_resumes_bit_identically(tmp_path, async_save):
    data = batches(9)
    params, opt, scheduler, ema, train_step = training_run(seed=0)
    for x, y in data[:5]:
        train_step(x, y)
    plain = plain_values(5)
    with stateopt.OrbaxCheckpointManager(tmp_path, async_save=async_save) as manager:
        manager.save(5, {'model': params, 'optimizer': opt, 'ema': ema, 'plain': plain})
        for x, y in data[5:]:                      # while a background save may still write
            train_step(x, y)
    uninterrupted = run_state(params, opt, scheduler, ema)

    params, opt, scheduler, ema, train_step = training_run(seed=1)
    manager = stateopt.OrbaxCheckpointManager(tmp_path)
    assert manager.latest_step() == 5
    result = manager.restore({'model': params, 'optimizer': opt, 'ema': ema, 'plain': plain_values(0)})
    assert result.missing_keys == result.unexpected_keys == []
    restored = result.tree['plain']
    assert restored['epoch'] == 5 and restored['name'] == 'run-5'
    assert type(restored['order']) is np.ndarray and restored['order'].tolist() == plain['order'].tolist()
    assert restored['losses'].tolist() == plain['losses'].tolist()
    assert jax.random.key_data(restored['key']).tolist() == jax.random.key_data(plain['key']).tolist()
    assert int(opt.step_count.value) == 5 and int(ema.count) == 5
    for x, y in data[5:]:
        train_step(x, y)
    resumed = run_state(params, opt, scheduler, ema)
    assert_same(resumed[:5], uninterrupted[:5])
    assert resumed[5:7] == uninterrupted[5:7]
    assert_same(resumed[7], uninterrupted[7])


def test_the_optimizers_non_array_entries_round_trip(tmp_path):
    """Class name, version, groups' param names, None and bool settings come back as they were."""
    params, opt, *_ = training_run(seed=0)
    with stateopt.OrbaxCheckpointManager(tmp_path) as manager:
        manager.save(1, {'optimizer': opt.state_dict()})
        saved = manager.restore({'optimizer': opt.state_dict()}).tree['optimizer']
    expected = opt.state_dict()
    assert saved['optimizer_class'] == expected['optimizer_class'] == 'AdamW'
    assert saved['version'] == expected['version']
    for got, want in zip(saved['param_groups'], expected['param_groups']):
        assert got['params'] == want['params'] and got['grad_clip_value'] is None
        assert got['grad_clip_norm'] == want['grad_clip_norm'] and got['maximize'] is False
        assert type(got['betas']) is tuple
        assert [float(b) for b in got['betas']] == [np.float32(0.9), np.float32(0.999)]


DTYPES = {
    'float32-specials': np.asarray([np.nan, -0.0, 1e-45, -np.inf], np.float32),
    'bfloat16': np.asarray([np.nan, -np.inf, 1e-40, 3.5], ml_dtypes.bfloat16),
    'float16': np.asarray([6e-8, -2.5, 65504], np.float16),
    'int4': np.asarray([-8, 0, 7], ml_dtypes.int4),
    'float8_e4m3fn': np.asarray([-448, 0.5, 1.75], ml_dtypes.float8_e4m3fn),
    'uint64': np.asarray([2 ** 64 - 1, 0], np.uint64),
    'complex128': np.asarray([1 + 2j, -0.5j], np.complex128),
    'bool': np.asarray([[True], [False]]),
    'zero-d': np.asarray(3, np.int16),
    'zero-size': np.zeros((2, 0, 3), np.complex64),
    'big-endian': np.asarray([1.5, -2.25], '>f8'),
}


@pytest.mark.parametrize('name', list(DTYPES))
def test_every_dtype_round_trips_bit_exactly(tmp_path, name):
    original = DTYPES[name]
    native = original.dtype.newbyteorder('=')
    as_jax = jax.dtypes.canonicalize_dtype(native) == native
    target = {'numpy': original, 'state': brainstate.State(jnp.asarray(original) if as_jax else original)}
    manager = stateopt.OrbaxCheckpointManager(tmp_path, async_save=False)
    manager.save(0, target)
    zeros = np.zeros(original.shape, native)
    state = brainstate.State(jnp.asarray(zeros) if as_jax else zeros)
    tree = manager.restore({'numpy': zeros, 'state': state}).tree
    assert type(tree['numpy']) is np.ndarray and tree['numpy'].dtype == native
    assert tree['numpy'].tobytes() == original.astype(native).tobytes()
    assert isinstance(state.value, jax.Array) == as_jax
    assert np.asarray(state.value).tobytes() == original.astype(native).tobytes()


def test_numbers_strings_bytes_containers_and_tuple_keys_round_trip(tmp_path):
    pair = namedtuple('pair', 'first second')
    saved = {'epoch': 7, 'big': 2 ** 64 - 1, 'small': -2 ** 63, 'ratio': 0.1, 'z': 1.5 - 2j, 'name': 'ünï\n"',
             'raw': b'\x00\xff', 'flag': True, 'nothing': None, 'list': [1, [2.5]], 'tuple': (1, ('a',)),
             'pair': pair(np.float32(1.5), 'b'), 3: 'int key', ('a', (1, None)): 'nested tuple key',
             'scalar': np.int64(-5), 'inf': float('-inf'), 'empty': {}}
    template = {'epoch': 0, 'big': 0, 'small': 0, 'ratio': 0.0, 'z': 0j, 'name': '', 'raw': b'',
                'flag': False, 'nothing': None, 'list': [0, [0.0]], 'tuple': (0, ('',)),
                'pair': pair(np.float32(0), ''), 3: '', ('a', (1, None)): '', 'scalar': np.int64(0),
                'inf': 0.0, 'empty': {}}
    manager = stateopt.OrbaxCheckpointManager(tmp_path / 'run')
    manager.save(0, saved)
    tree = manager.restore(template).tree
    assert tree == saved and list(tree) == list(saved)
    assert type(tree['pair']) is pair and type(tree['scalar']) is np.int64 and type(tree['tuple']) is tuple
    partial = manager.restore({'x': 0.0}, step=None, strict=False)    # the tree has no 'x': reported
    assert partial.missing_keys == ['x'] and 'epoch' in partial.unexpected_keys


# -- steps ---------------------------------------------------------------------------------

def test_steps_kept_listed_and_restored_by_number(tmp_path):
    w = brainstate.ParamState(jnp.zeros(3))
    manager = stateopt.OrbaxCheckpointManager(tmp_path, max_to_keep=2)
    assert manager.latest_step() is None and manager.all_steps() == []
    for step in (10, 20, 30, 40):
        w.value = jnp.full(3, float(step))
        manager.save(step, {'w': w})
    manager.wait()
    assert manager.all_steps() == [30, 40] and manager.latest_step() == 40
    assert sorted(name for name in os.listdir(tmp_path) if not name.startswith('.')) == ['30', '40']
    manager.restore({'w': w}, step=30)
    assert w.value.tolist() == [30.0] * 3
    manager.restore({'w': w})
    assert w.value.tolist() == [40.0] * 3
    with pytest.raises(FileNotFoundError, match=r'no checkpoint of step 20; its steps are \[30, 40\]'):
        manager.restore({'w': w}, step=20)
    assert repr(manager) == f"OrbaxCheckpointManager('{tmp_path}', max_to_keep=2, async_save=True)"
    assert stateopt.OrbaxCheckpointManager(tmp_path).all_steps() == [30, 40]     # a new process's view


def test_a_step_is_never_replaced_or_inserted_before_a_later_one(tmp_path):
    w = brainstate.ParamState(jnp.ones(2))
    manager = stateopt.OrbaxCheckpointManager(tmp_path, async_save=False)
    manager.save(3, {'w': w})
    manager.save(5, {'w': w})
    with pytest.raises(ValueError, match=r'cannot save step 5: step 5 exists in .*save a step after 5'):
        manager.save(5, {'w': w})
    with pytest.raises(ValueError, match=r'cannot save step 4: step 4 is before the latest step, 5'):
        manager.save(4, {'w': w})
    for step in (-1, 1.0, True, '6'):
        with pytest.raises(ValueError, match='pass an int of 0 or more'):
            manager.save(step, {'w': w})
    manager.save(np.int64(6), {'w': w})
    assert manager.all_steps() == [3, 5, 6]


def test_values_orbax_cannot_store_are_refused_before_writing(tmp_path):
    manager = stateopt.OrbaxCheckpointManager(tmp_path / 'run')
    cases = [({'a': {'b': object()}}, TypeError, 'a/b'),
             ({'a': [np.array(['text'])]}, TypeError, 'a/0'),
             ({'a': np.zeros(2, ml_dtypes.uint4)}, TypeError, 'a is an array of dtype uint4, which orbax '
                                                             'cannot store; cast it to one of'),
             ({'a': 2 ** 64}, ValueError, 'a is the int')]
    for target, error, match in cases:
        with pytest.raises(error, match=match):
            manager.save(0, target)
    with pytest.raises(TypeError, match='outside jit'):
        brainstate.transform.jit(lambda x: manager.save(0, {'x': x}))(jnp.ones(2))
    manager.wait()
    assert not (tmp_path / 'run').exists() and manager.all_steps() == []


def test_a_background_save_holds_the_values_of_its_call(tmp_path):
    params = make_params()
    saved = values(params)
    order = np.arange(5)
    opt = stateopt.SGD(lr=0.5).register_trainable_weights(params)
    grads = {key: jnp.ones_like(state.value) for key, state in params.items()}
    step = stateopt.donating_jit(lambda g: opt.update(g))
    with stateopt.OrbaxCheckpointManager(tmp_path, async_save=True) as manager:
        manager.save(1, {'model': params, 'order': order})
        step(grads)                        # donates the parameters' buffers
        order[:] = 0                       # changes the numpy array in place
        manager.wait()
        assert manager.all_steps() == [1]
        tree = manager.restore({'model': params, 'order': np.ones(5, int)}).tree
    assert_same(values(params), saved)
    assert tree['order'].tolist() == [0, 1, 2, 3, 4]


def test_a_killed_save_leaves_the_earlier_steps_and_no_partial_one(tmp_path):
    """A process killed while it writes step 2 (in the background) leaves step 1 to restore."""
    script = (
        'import sys, jax.numpy as jnp, brainstate, stateopt\n'
        'w = brainstate.ParamState(jnp.ones(2))\n'
        'manager = stateopt.OrbaxCheckpointManager(sys.argv[1])\n'
        'manager.save(1, {"w": w, "big": jnp.zeros(8)})\n'
        'manager.wait()\n'
        'w.value = jnp.full(2, 2.0)\n'
        'manager.save(2, {"w": w, "big": jnp.zeros(50_000_000)})\n'
        'print("saving", flush=True)\n'
        'manager.wait()\n')
    process = subprocess.Popen([sys.executable, '-c', script, str(tmp_path)], stdout=subprocess.PIPE,
                               text=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert process.stdout.readline() == 'saving\n'
    process.kill()
    process.wait(timeout=60)
    left = sorted(os.listdir(tmp_path))
    assert left[0] == '1' and len(left) == 2 and left[1] != '2'          # step 2's unfinished write
    manager = stateopt.OrbaxCheckpointManager(tmp_path)
    assert manager.all_steps() == [1]
    w = brainstate.ParamState(jnp.zeros(2))
    manager.restore({'w': w, 'big': jnp.ones(8)})
    assert w.value.tolist() == [1.0, 1.0]
    w.value = jnp.full(2, 3.0)                     # the run resumes and saves step 2 again
    manager.save(2, {'w': w, 'big': jnp.ones(8)})
    w.value = jnp.zeros(2)
    manager.restore({'w': w, 'big': jnp.ones(8)})
    assert manager.all_steps() == [1, 2] and w.value.tolist() == [3.0, 3.0]


def test_the_guide_pages_example_runs_as_written(tmp_path):
    """docs/checkpoints.md's orbax example, in a process of its own (its fake devices come before jax)."""
    with open(os.path.join(os.path.dirname(__file__), '..', 'docs', 'checkpoints.md')) as f:
        blocks = [block for block in re.findall(r'```python\n(.*?)```', f.read(), re.S)
                  if 'OrbaxCheckpointManager' in block]
    assert len(blocks) == 1
    env = {key: value for key, value in os.environ.items() if key != 'XLA_FLAGS'}
    process = subprocess.run([sys.executable, '-c', blocks[0]], capture_output=True, text=True, timeout=300,
                             env={**env, 'JAX_PLATFORMS': 'cpu', 'TMPDIR': str(tmp_path)})
    assert process.returncode == 0, process.stderr[-3000:]
    assert os.listdir(tmp_path)                # the example's directory


# -- refusals change nothing ---------------------------------------------------------------

def _saved_run(directory):
    params, opt, scheduler, ema, train_step = training_run(seed=0)
    for x, y in batches(3):
        train_step(x, y)
    with stateopt.OrbaxCheckpointManager(directory) as manager:
        manager.save(3, {'model': params, 'optimizer': opt, 'ema': ema, 'epoch': 3})


def _other_optimizer(params):
    return stateopt.Adam(lr=0.01).register_trainable_weights(params)


def _negative_second_moment(state_dict):
    slots = state_dict['state']['l1.weight']
    slots['exp_avg_sq.bias'] = -jnp.ones_like(slots['exp_avg_sq.bias'])


MISMATCHES = {
    # name: (what to restore into, given the run's params, opt and ema; the error's words)
    'missing-entry': (lambda p, o, e: {'model': p, 'optimizer': o, 'ema': e, 'epoch': 0, 'extra': 1},
                      'the checkpoint lacks extra; pass strict=False'),
    'unexpected-entry': (lambda p, o, e: {'model': p, 'optimizer': o, 'epoch': 0},
                         'the target lacks ema; pass strict=False'),
    'shape': (lambda p, o, e: {'model': {**p, ('l1', 'weight'): brainstate.ParamState(
        {'weight': jnp.zeros((5, 8)), 'bias': jnp.zeros(8)})}, 'optimizer': o, 'ema': e, 'epoch': 0},
        r"at model/\('l1', 'weight'\)/weight: the checkpoint has shape \(4, 8\) and dtype float32, the "
        r"target has shape \(5, 8\)"),
    'dtype': (lambda p, o, e: {'model': {**p, ('l1', 'weight'): brainstate.ParamState(
        {'weight': jnp.zeros((4, 8), jnp.bfloat16), 'bias': jnp.zeros(8)})}, 'optimizer': o, 'ema': e,
        'epoch': 0}, r"model/\('l1', 'weight'\)/weight: .* dtype float32, .* dtype bfloat16"),
    'plain-type': (lambda p, o, e: {'model': p, 'optimizer': o, 'ema': e, 'epoch': 'three'},
                   "at epoch: the checkpoint has the int 3, the target has the str 'three'"),
    'optimizer-class': (lambda p, o, e: {'model': p, 'optimizer': _other_optimizer(p), 'ema': e, 'epoch': 0},
                        'at optimizer: .*AdamW'),
}


@pytest.mark.parametrize('name', list(MISMATCHES))
def test_a_step_that_does_not_fit_is_refused_naming_the_entry_and_nothing_changes(tmp_path, name):
    _saved_run(tmp_path)
    make_target, match = MISMATCHES[name]
    params, opt, _, ema, _ = training_run(seed=1)
    target = make_target(params, opt, ema)
    before = leaves_of(target)
    with pytest.raises(stateopt.CheckpointMismatchError, match=match):
        stateopt.OrbaxCheckpointManager(tmp_path).restore(target)
    assert unchanged(before, target)


def test_a_state_dict_the_optimizer_refuses_after_reading_changes_nothing(tmp_path):
    """The optimizer checks values (a negative second moment) once the arrays are read."""
    params, opt, _, ema, train_step = training_run(seed=0)
    train_step(*batches(1)[0])
    state_dict = opt.state_dict()
    _negative_second_moment(state_dict)
    with stateopt.OrbaxCheckpointManager(tmp_path) as manager:
        manager.save(1, {'model': params, 'optimizer': state_dict, 'ema': ema})
    params, opt, _, ema, _ = training_run(seed=1)
    target = {'model': params, 'optimizer': opt, 'ema': ema}
    before = leaves_of(target)
    with pytest.raises(stateopt.CheckpointMismatchError, match=r'does not fit the target at optimizer: .*'
                                                               r'exp_avg_sq.*negative'):
        stateopt.OrbaxCheckpointManager(tmp_path).restore(target)
    assert unchanged(before, target)


def test_partial_restore_reports_what_only_one_side_has(tmp_path):
    _saved_run(tmp_path)
    params, opt, _, ema, _ = training_run(seed=1)
    result = stateopt.OrbaxCheckpointManager(tmp_path).restore(
        {'model': params, 'optimizer': opt, 'lr_note': 'x'}, strict=False)
    assert result.missing_keys == ['lr_note'] and result.unexpected_keys == ['ema', 'epoch']
    assert int(opt.step_count.value) == 3


# -- damaged or missing directories --------------------------------------------------------

def test_no_checkpoint_to_restore_is_said_clearly(tmp_path):
    w = brainstate.ParamState(jnp.ones(2))
    with pytest.raises(FileNotFoundError, match=r'no checkpoint to restore \(it does not exist\)'):
        stateopt.OrbaxCheckpointManager(tmp_path / 'nowhere').restore({'w': w})
    assert not (tmp_path / 'nowhere').exists()
    with pytest.raises(FileNotFoundError, match=r'has no checkpoint to restore; save one first'):
        stateopt.OrbaxCheckpointManager(tmp_path).restore({'w': w})
    (tmp_path / 'file').write_text('x')
    with pytest.raises(NotADirectoryError, match='is a file, not a directory of checkpoints'):
        stateopt.OrbaxCheckpointManager(tmp_path / 'file')
    with pytest.raises(ValueError, match='max_to_keep is 0; pass a positive int'):
        stateopt.OrbaxCheckpointManager(tmp_path, max_to_keep=0)


def _rewrite_tree(step_dir, change):
    path = step_dir / 'tree' / 'metadata'
    header = json.loads(path.read_text())
    change(header)
    path.write_text(json.dumps(header))


def _names_of_two_arrays_swapped(header):
    """The tree's first (8,) and (4, 8) arrays (l1's bias and weight) exchange their names."""
    found = {}

    def walk(node):
        if isinstance(node, list) and node and node[0] == 'stored':
            found.setdefault(tuple(node[2]), node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(header['tree'])
    found[(4, 8)][3], found[(8,)][3] = found[(8,)][3], found[(4, 8)][3]


def _truncate_array_data(step_dir):
    for root, _, files in os.walk(step_dir / 'arrays'):
        for name in files:
            if root.endswith('d'):                  # ocdbt's data files
                path = os.path.join(root, name)
                with open(path, 'r+b') as file:
                    file.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    'tree-removed': (lambda step: shutil.rmtree(step / 'tree'), 'has no tree item'),
    'tree-not-json': (lambda step: (step / 'tree' / 'metadata').write_text('{"tree": [1, '),
                      'has an unreadable tree'),
    'tree-of-another-format': (lambda step: _rewrite_tree(step, lambda h: h.update(format='x')),
                               'is not a stateopt checkpoint'),
    'tree-of-a-newer-version': (lambda step: _rewrite_tree(step, lambda h: h.update(format_version=2)),
                                'tree format version 2; this stateopt .* reads version 1'),
    'tree-malformed': (lambda step: _rewrite_tree(step, lambda h: h.update(tree=['dict', 'model'])),
                       'is corrupt: <root> is a dict with an odd number'),
    'tree-disagrees-with-arrays': (lambda step: _rewrite_tree(step, _names_of_two_arrays_swapped),
                                   r"is corrupt: its tree has a float32 array of shape \(8,\) at "
                                   r"model/\('l1', 'weight'\)/bias, its arrays hold a float32 array "
                                   r"of shape \(4, 8\) there"),
    'arrays-removed': (lambda step: shutil.rmtree(step / 'arrays'), 'has arrays, but it has no arrays item'),
    'arrays-metadata-not-json': (lambda step: (step / 'arrays' / '_METADATA').write_text('{"tree'),
                                 'has arrays that cannot be read: JSONDecodeError'),
}


@pytest.mark.parametrize('name', list(DAMAGE))
def test_a_damaged_step_raises_one_clear_error_and_changes_nothing(tmp_path, name):
    _saved_run(tmp_path)
    damage, match = DAMAGE[name]
    damage(tmp_path / '3')
    params, opt, _, ema, _ = training_run(seed=1)
    target = {'model': params, 'optimizer': opt, 'ema': ema, 'epoch': 0}
    before = leaves_of(target)
    with pytest.raises(stateopt.CheckpointError, match=match):
        stateopt.OrbaxCheckpointManager(tmp_path).restore(target)
    assert unchanged(before, target)


TRUNCATED = """
import pathlib, sys
sys.path.insert(0, sys.argv[1])
import stateopt, test_orbax as t
t._saved_run(sys.argv[2])
t._truncate_array_data(pathlib.Path(sys.argv[2]) / '3')
params, opt, _, ema, _ = t.training_run(seed=1)
target = {'model': params, 'optimizer': opt, 'ema': ema, 'epoch': 0}
before = t.leaves_of(target)
try:
    stateopt.OrbaxCheckpointManager(sys.argv[2]).restore(target)
except stateopt.CheckpointError as error:
    print(t.unchanged(before, target), error)
"""


def test_truncated_array_data_raises_one_clear_error_and_changes_nothing(tmp_path):
    """In a process of its own: orbax's other reads, left running when the first one fails, report
    into its closed event loop when they end."""
    process = subprocess.run([sys.executable, '-c', TRUNCATED, os.path.dirname(__file__), str(tmp_path)],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert process.returncode == 0, process.stderr[-3000:]
    assert re.match(rf'True {re.escape(str(tmp_path / "3"))} has arrays that cannot be read: ValueError: '
                    rf'.*Error reading', process.stdout), process.stdout


# -- another mesh; arrays of other processes; orbax missing --------------------------------

def test_a_step_saved_on_a_2x4_mesh_restores_exactly_onto_an_8_mesh(tmp_path):
    env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'}
    process = subprocess.run([sys.executable, CHECK, str(tmp_path)], capture_output=True, text=True,
                             timeout=600, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads(process.stdout.strip().splitlines()[-1])
    assert report['restored'] > 20, report
    assert report['problems'] == [], report['problems']


class _HeldElsewhere(np.ndarray):
    """Stands in for a jax array on devices of several processes (one process cannot make one;
    the multi-process test makes real ones)."""

    is_fully_addressable = False


def test_save_checkpoint_refuses_arrays_of_several_processes(tmp_path):
    held = np.zeros((4, 2), np.float32).view(_HeldElsewhere)
    with pytest.raises(ValueError, match=r"^model/\('l1', 'weight'\) is a jax array of shape \(4, 2\) "
                                         r"on devices of several processes \(a multi-host array\); .*save "
                                         r"multi-host state with stateopt.OrbaxCheckpointManager"):
        stateopt.save_checkpoint(tmp_path / 'run.msgpack', {'model': {('l1', 'weight'): held}})
    assert list(tmp_path.iterdir()) == []


def test_without_orbax_the_manager_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'orbax.checkpoint', None)     # makes the import fail
    with pytest.raises(ImportError, match=r"needs orbax-checkpoint.*pip install 'stateopt\[orbax\]'"):
        stateopt.OrbaxCheckpointManager(tmp_path)
    assert list(tmp_path.iterdir()) == []
