"""Sharded parameters (8 fake CPU devices, in a subprocess: see sharding_check.py): every optimizer's
States stay on the parameters' mesh through registration, param groups, eager, jit and donating_jit
steps, state dicts and lr assignments; moments keep their parameter's sharding; and the numbers are
those of the unsharded run."""

import json
import os
import subprocess
import sys

import pytest
from catalogue import CASES, GROUP_CASES

CHECK = os.path.join(os.path.dirname(__file__), 'sharding_check.py')


@pytest.fixture(scope='module')
def report():
    env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'}
    process = subprocess.run([sys.executable, CHECK], capture_output=True, text=True, timeout=900, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('case', CASES + GROUP_CASES, ids=[case.id for case in CASES + GROUP_CASES])
def test_optimizer_states_stay_on_the_parameters_mesh(case, report):
    row = report[case.id]
    assert row['problems'] == [], row['problems']
    # the sharded step compiles to other code than the unsharded one: float32 rounding of 4 steps
    assert row['max_diff'] <= 4 * 2.0 ** -23 * 8 * (1 + row['scale']), row
