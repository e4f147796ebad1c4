"""Save and load throughput of stateopt checkpoints: msgpack files and orbax directories.

Run from the repository root:

    python benchmarks/checkpoint_throughput.py                  # 100 MB, 5 rounds, in /tmp
    python benchmarks/checkpoint_throughput.py --size-mb 20 --rounds 3 --dir /dev/shm
    python benchmarks/checkpoint_throughput.py --params 8.4M    # 4 x 1024x2048 and biases

The checkpoint holds a model's float32 ParamStates and an AdamW optimizer over them: one
third parameters, two thirds moments. By default 10 flat ParamStates sized so that the
payload is ``--size-mb`` MB (1 MB = 10**6 bytes); ``--params 8.4M`` saves the 8.4M-parameter
set of the other benchmarks instead (4 weights of 1024x2048 and their biases, 101 MB in all).
For each round it times ``save_checkpoint`` (encoding, SHA-256, write, fsync and rename),
``load_checkpoint`` into the same targets (read, verification, decoding, validation and
device transfer), and how long ``save_checkpoint_async`` blocks the caller; with
orbax-checkpoint installed, also ``OrbaxCheckpointManager``'s ``save`` (one new step each
round, waited for), ``restore`` of the latest step into the same targets, and how long an
asynchronous ``save`` blocks the caller. It prints the median and best MB/s of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

import stateopt

STATES = 10
PARAM_SETS = {'8.4M': [(1024, 2048), (2048,)] * 4}      # the 8.4M set of bench_optimizers.py


def build(size_mb: float, param_set: str | None = None) -> dict:
    """A model and its AdamW: 10 flat ParamStates whose values and moments together take
    ``size_mb`` MB, or the arrays of ``PARAM_SETS[param_set]``."""
    floats = round(size_mb * 1e6 / (3 * 4 * STATES))
    shapes = PARAM_SETS[param_set] if param_set else [(floats,)] * STATES
    rng = np.random.default_rng(0)
    params = {('layer', i, 'weight'): brainstate.ParamState(
        jnp.asarray(rng.standard_normal(shape, np.float32)))
        for i, shape in enumerate(shapes)}
    opt = stateopt.AdamW(lr=1e-3).register_trainable_weights(params)
    opt.update({key: jnp.full(state.value.shape, 0.5, jnp.float32) for key, state in params.items()})
    return {'model': params, 'optimizer': opt, 'epoch': 1}


def orbax_rounds(directory: str, target: dict, rounds: int, times: dict) -> None:
    """Time OrbaxCheckpointManager's save (waited for), restore and asynchronous save call."""
    waited = stateopt.OrbaxCheckpointManager(os.path.join(directory, 'orbax'), max_to_keep=1,
                                             async_save=False)
    background = stateopt.OrbaxCheckpointManager(os.path.join(directory, 'orbax-async'), max_to_keep=1)
    waited.save(0, target)
    waited.restore(target)
    for step in range(1, rounds + 1):
        times['orbax save'].append(timed(partial(waited.save, step, target)))
        times['orbax restore'].append(timed(lambda: waited.restore(target)))
        start = time.perf_counter()
        background.save(step, target)
        times['orbax async call'].append(time.perf_counter() - start)
        background.wait()
        times['orbax async total'].append(time.perf_counter() - start)
    waited.close()
    background.close()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size-mb', type=float, default=100.0)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--dir', default=None, help='where to write (default: the system temp dir)')
    parser.add_argument('--params', choices=sorted(PARAM_SETS), default=None,
                        help='save this parameter set instead of --size-mb of flat arrays')
    args = parser.parse_args()

    target = build(args.size_mb, args.params)
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
        try:
            import orbax.checkpoint  # noqa: F401
        except ImportError:
            print('orbax-checkpoint is not installed: no orbax rows')
        else:
            times.update({name: [] for name in ('orbax save', 'orbax restore', 'orbax async call',
                                                'orbax async total')})
            orbax_rounds(directory, target, args.rounds, times)

    parameters = sum(state.value.size for state in target['model'].values())
    print(f'stateopt {stateopt.__version__}, jax {jax.__version__} on {jax.devices()[0].platform}; '
          f'{parameters / 1e6:.1f}M parameters and their AdamW moments, checkpoint file {size:.1f} MB '
          f'in {args.dir or tempfile.gettempdir()}, {args.rounds} rounds')
    for name, seconds in times.items():
        median, best = statistics.median(seconds), min(seconds)
        print(f'{name:>17}: median {median * 1e3:8.1f} ms = {size / median:7.0f} MB/s   '
              f'(best {best * 1e3:.1f} ms = {size / best:.0f} MB/s)')


if __name__ == '__main__':
    main()
