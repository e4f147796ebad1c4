"""Multi-process training: 2 jax processes of 4 CPU devices each (gloo collectives) train a
data-parallel model with AdamW, two param groups, a scheduler and ZeRO-1 over the 8 devices
(multiprocess_check.py), and end where one process with 8 devices ends."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import assert_close_f32

CHECK = os.path.join(os.path.dirname(__file__), 'multiprocess_check.py')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def _run(processes: int, directory) -> list[dict]:
    """Run the check as ``processes`` processes (each with its JSON report) and wait for them."""
    port, env = _free_port(), {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    env.pop('XLA_FLAGS', None)      # the script gives each process its devices
    outs = [directory / f'process{i}.json' for i in range(processes)]
    running = [subprocess.Popen([sys.executable, CHECK, str(i), str(processes), str(port), str(out)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i, out in enumerate(outs)]
    try:
        results = [process.communicate(timeout=300) for process in running]
    except subprocess.TimeoutExpired:
        for process in running:
            process.kill()
        pytest.fail('the processes did not finish in 300 s:\n' + '\n'.join(
            process.communicate()[1][-2000:] for process in running))
    for process, (_, stderr) in zip(running, results):
        assert process.returncode == 0, stderr[-4000:]
    return [json.loads(out.read_text()) for out in outs]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    if not hasattr(jax, 'distributed'):
        pytest.skip('this jax has no jax.distributed')
    return _run(2, tmp_path_factory.mktemp('two')), _run(1, tmp_path_factory.mktemp('one'))[0]


def test_two_processes_train_as_one_process_with_eight_devices(runs):
    (first, second), single = runs
    assert [first['process_count'], first['local_devices']] == [2, 4]
    assert [single['process_count'], single['local_devices']] == [1, 8]
    # 5 steps; the gradients' all-reduce over 8 devices sums in another order across gloo and in-process
    # collectives: float32 rounding of 5 steps
    assert_close_f32(np.asarray(first['losses']), np.asarray(single['losses']), steps=5)
    assert_close_f32(_arrays(first['params']), _arrays(single['params']), steps=5)
    got, want = first['state_dict'], single['state_dict']
    assert np.asarray(got['step_count']) == np.asarray(want['step_count']) == 5
    assert_close_f32(_arrays(got['state']), _arrays(want['state']), steps=5)


def _arrays(tree):
    """A report's nested lists (arrays written as JSON) as numpy arrays."""
    return jax.tree.map(np.asarray, tree, is_leaf=lambda node: isinstance(node, list))


def test_each_process_holds_its_eighths_of_the_moments(runs):
    """ZeRO-1 over 8 devices: a process holds 4 shards of each moment, each 1/8 along 'data'."""
    (first, second), _ = runs
    for report in (first, second):
        assert report['moment_shards'], report
        for where, found in report['moment_shards'].items():
            shape, shards = found['shape'], found['shards']
            assert len(shards) == 4, where
            assert all(shard[0] * 8 == shape[0] and shard[1:] == shape[1:] for shard in shards), where
        for where, found in report['param_shards'].items():     # the parameters stay replicated
            assert all(shard == found['shape'] for shard in found['shards']), where


def test_checkpoints_of_multi_host_arrays(runs):
    """save_checkpoint refuses them naming the entry; OrbaxCheckpointManager saves and restores them."""
    (first, second), _ = runs
    for report in (first, second):
        assert report['save_error_sharded_entry'].startswith('ValueError: sharded is a jax array')
        assert 'OrbaxCheckpointManager' in report['save_error_sharded_entry']
        assert report['save_error_model_and_optimizer'].startswith('ValueError: model/')
        assert report['orbax_restored_exactly'] is True
