"""Peak memory of stateopt's steps against raw optax with donated buffers, in fresh processes.

A copy of the optimizer state kept or made at any step raises the peak by the size of
the moments; the pairs here must stay within half of that of raw optax.
"""

import json
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).parent.parent / 'benchmarks' / 'bench_memory.py'
SHAPE, ARRAYS, SIZE = '8x1024x1024', 8, 1024 * 1024   # 8M float32 parameters
MOMENTS_MIB = 2 * ARRAYS * SIZE * 4 / 2**20            # AdamW's m and v: 64 MiB

PAIRS = [
    ('stateopt eager', 'optax donated'),
    ('stateopt packed eager', 'optax donated'),
    ('train step: stateopt donating_jit', 'train step: optax donated'),
]


@pytest.mark.skipif(sys.platform != 'linux', reason='peak RSS in bytes is read as Linux reports it')
@pytest.mark.parametrize('runner, reference', PAIRS, ids=[runner for runner, _ in PAIRS])
def test_peak_memory_is_raw_optax_donated_within_a_fraction_of_the_moments(runner, reference, tmp_path):
    out = tmp_path / 'memory.json'
    subprocess.run([sys.executable, str(BENCH), '--shape', SHAPE, '--steps', '3',
                    '--runners', f'{reference},{runner}', '--json', str(out)],
                   check=True, capture_output=True, timeout=300)
    results = json.loads(out.read_text())['results']
    extra_mib = (results[runner]['peak'] - results[reference]['peak']) / 2**20
    assert extra_mib < MOMENTS_MIB / 2, (
        f'{runner} peaks {extra_mib:.0f} MiB above {reference}: a copy of the moments '
        f'({MOMENTS_MIB:.0f} MiB) is kept or made')
