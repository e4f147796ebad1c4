"""donating_jit on sharded States (8 fake CPU devices, in a subprocess: see jit_sharding_check.py): train
steps keep every State's sharding and delete the buffers they donate, with the numbers of a plain
jax/optax run on one device; state_shardings pins a State; in_shardings and out_shardings do what
jax.jit's do; each misuse is refused with a clear error and changes nothing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close_f32

CHECK = os.path.join(os.path.dirname(__file__), 'jit_sharding_check.py')


@pytest.fixture(scope='module')
def report():
    env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'}
    process = subprocess.run([sys.executable, CHECK], capture_output=True, text=True, timeout=600, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('run', ['sharded', 'unsharded'])
def test_train_steps_keep_every_state_where_it_lives_and_free_what_they_donate(run, report):
    row = report[run]
    assert row['problems'] == []
    assert row['kept'] == [0] * 5        # every array a call received for a written State was deleted


@pytest.mark.parametrize('run', ['sharded', 'unsharded'])
def test_the_numbers_are_those_of_plain_jax_and_optax_on_one_device(run, report):
    got, want = report[run], report['reference']
    # Each step is a forward pass, its gradient and an AdamW update, in float32: the sharded program
    # sums the batch in per-device partial sums and contracts multiply-adds differently from the
    # one-device reference, so each step may land a few ulps away and the steps add up (assert_close_f32
    # with steps=5: rtol 9.5e-6, atol 9.5e-6 times each array's magnitude). The dropout masks and the
    # PRNG keys are exact: jax's threefry gives the same bits however the arrays are sharded.
    assert_close_f32(np.asarray(got['losses']), np.asarray(want['losses']), steps=5)
    assert_close_f32(arrays(got['final']), arrays(want['final']), steps=5)


def arrays(final: dict) -> dict:
    """The final States from their JSON lists: float32, and the PRNG key's uint32."""
    return {name: np.asarray(value, np.uint32 if name == 'key' else np.float32)
            for name, value in final.items()}


def test_a_state_stays_where_xla_would_move_it(report):
    row = report['propagation']
    assert row['brainstate.jit'] == "P('data', 'model')"      # XLA's choice: the update's sharding
    assert row['donating_jit'] == "P(None, 'model')"
    # p = 1 - 0.1 * u, twice, with u = 0..63: exact in float32 only up to rounding of 0.1 * u
    expected = 1.0 - 2 * 0.1 * np.arange(64.0).reshape(8, 8)
    assert_close_f32(np.asarray(row['donating_jit values'], np.float32), expected.astype(np.float32), steps=2)


@pytest.mark.parametrize('check', ['pins', 'moved', 'arguments', 'devices'])
def test_shardings_given_and_misuse(check, report):
    assert report[check]['problems'] == []
