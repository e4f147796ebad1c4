"""Peak memory of stateopt's steps against raw optax with donated buffers, in fresh processes.

A copy of the optimizer state kept or made at any step raises the peak by the size of
the moments; the pairs here must stay within half of that of raw optax.
"""

import json
import math
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).parent.parent / 'benchmarks' / 'bench_memory.py'
SMALL = '8x1024x1024'      # 8M float32 parameters: AdamW's m and v are 64 MiB
#: Packing frees the arrays it replaces after making their buffer. Arrays under glibc's largest
#: mmap threshold (32 MiB) free into the heap, where a buffer of all of them does not fit, so the
#: peak RSS grows by the parameters once, before any step; arrays of 64 MiB go back to the system.
LARGE = '2x4096x4096'      # 32M parameters: m and v are 256 MiB

PAIRS = [
    ('stateopt eager', 'optax donated', SMALL),
    ('stateopt packed eager', 'optax donated', LARGE),
    ('train step: stateopt donating_jit', 'train step: optax donated', SMALL),
]


def moments_mib(shape: str) -> float:
    count, *dims = map(int, shape.split('x'))
    return 2 * count * math.prod(dims) * 4 / 2**20


@pytest.mark.skipif(sys.platform != 'linux', reason='peak RSS in bytes is read as Linux reports it')
@pytest.mark.parametrize('runner, reference, shape', PAIRS, ids=[runner for runner, _, _ in PAIRS])
def test_peak_memory_is_raw_optax_donated_within_a_fraction_of_the_moments(runner, reference, shape,
                                                                          tmp_path):
    out = tmp_path / 'memory.json'
    subprocess.run([sys.executable, str(BENCH), '--shape', shape, '--steps', '3',
                    '--runners', f'{reference},{runner}', '--json', str(out)],
                   check=True, capture_output=True, timeout=300)
    results = json.loads(out.read_text())['results']
    extra_mib = (results[runner]['peak'] - results[reference]['peak']) / 2**20
    assert extra_mib < moments_mib(shape) / 2, (
        f'{runner} peaks {extra_mib:.0f} MiB above {reference}: a copy of the moments '
        f'({moments_mib(shape):.0f} MiB) is kept or made')
