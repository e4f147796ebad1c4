"""Save and load throughput of stateopt checkpoints.

Run from the repository root:

    python benchmarks/checkpoint_throughput.py                  # 100 MB, 5 rounds, in /tmp
    python benchmarks/checkpoint_throughput.py --size-mb 20 --rounds 3 --dir /dev/shm

The checkpoint holds a model's 10 float32 ParamStates and an AdamW optimizer over them,
sized so that the payload is ``--size-mb`` MB (1 MB = 10**6 bytes): one third parameters,
two thirds moments. For each round it times ``save_checkpoint`` (encoding, SHA-256, write,
fsync and rename), ``load_checkpoint`` into the same targets (read, verification, decoding,
validation and device transfer), and how long ``save_checkpoint_async`` blocks the caller,
then prints the median and best MB/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

import stateopt

STATES = 10


def build(size_mb: float) -> dict:
    """A model of 10 ParamStates whose values and AdamW moments together take ``size_mb`` MB."""
    floats = round(size_mb * 1e6 / (3 * 4 * STATES))
    rng = np.random.default_rng(0)
    params = {('layer', i, 'weight'): brainstate.ParamState(
        jnp.asarray(rng.standard_normal(floats, np.float32)))
        for i in range(STATES)}
    opt = stateopt.AdamW(lr=1e-3).register_trainable_weights(params)
    opt.update({key: jnp.full(floats, 0.5, jnp.float32) for key in params})
    return {'model': params, 'optimizer': opt, 'epoch': 1}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size-mb', type=float, default=100.0)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--dir', default=None, help='where to write (default: the system temp dir)')
    args = parser.parse_args()

    target = build(args.size_mb)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        path = os.path.join(directory, 'bench.msgpack')
        stateopt.save_checkpoint(path, target)
        stateopt.load_checkpoint(path, target)
        size = os.path.getsize(path) / 1e6
        times: dict[str, list[float]] = {'save': [], 'load': [], 'async call': [], 'async total': []}
        for _ in range(args.rounds):
            times['save'].append(timed(lambda: stateopt.save_checkpoint(path, target)))
            times['load'].append(timed(lambda: stateopt.load_checkpoint(path, target)))
            start = time.perf_counter()
            pending = stateopt.save_checkpoint_async(path, target)
            times['async call'].append(time.perf_counter() - start)
            pending.wait()
            times['async total'].append(time.perf_counter() - start)

    print(f'stateopt {stateopt.__version__}, jax {jax.__version__} on {jax.devices()[0].platform}; '
          f'checkpoint file {size:.1f} MB in {args.dir or tempfile.gettempdir()}, {args.rounds} rounds')
    for name, seconds in times.items():
        median, best = statistics.median(seconds), min(seconds)
        print(f'{name:>12}: median {median * 1e3:8.1f} ms = {size / median:7.0f} MB/s   '
              f'(best {best * 1e3:.1f} ms = {size / best:.0f} MB/s)')


if __name__ == '__main__':
    main()
