"""ZeRO-1 (``state_sharding=``): the tests of zero_cases.py, run by pytest in a process of its own
with 8 fake CPU devices (the device count is fixed before jax starts, so not in this process)."""

import os
import subprocess
import sys


def test_zero_cases_pass_on_eight_devices():
    here = os.path.dirname(__file__)
    env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'}
    process = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--no-header', '-rfEs',
         os.path.join(here, 'zero_cases.py')],
        capture_output=True, text=True, timeout=900, env=env, cwd=os.path.join(here, '..'))
    assert process.returncode == 0, process.stdout[-6000:] + process.stderr[-2000:]
    assert ' passed' in process.stdout and 'skipped' not in process.stdout, process.stdout[-2000:]
