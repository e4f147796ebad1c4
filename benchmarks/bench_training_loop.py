"""What the training-loop features cost: step time against the plain step, and memory.

Run from the repository root:

    python benchmarks/bench_training_loop.py [--size 4x1024x2048] [--steps 40]

For AdamW on ``size`` (the default: 4 matrices of 1024x2048, 8.4M parameters) it runs each
setting in a fresh process and reports

- the eager ``update`` time per call (median of rounds, after a warm-up), and its ratio to the
  plain float32 AdamW step measured in the same process;
- the bytes the optimizer's States hold per parameter (moments, masters, the accumulator,
  counted from the arrays), and the bytes of the parameters;
- the peak resident memory of the process (``ru_maxrss``) after the steps.

Settings: plain float32; ``skip_nonfinite``; ``gradient_accumulation_steps=4`` (the time
is per call, 3 of 4 calls only add); ``weight_decay_mask=decay_matrices_only``; bfloat16
parameters; bfloat16 parameters with ``master_dtype=float32``; the same with
``state_dtype=bfloat16``; float32 parameters with ``state_dtype=bfloat16``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

SETTINGS = {
    'float32': ('float32', {}),
    'skip_nonfinite': ('float32', {'skip_nonfinite': True}),
    'accumulate 4': ('float32', {'gradient_accumulation_steps': 4}),
    'decay mask': ('float32', {'weight_decay_mask': 'decay_matrices_only'}),
    'bfloat16': ('bfloat16', {}),
    'bfloat16 + master': ('bfloat16', {'master_dtype': 'float32'}),
    'bfloat16 + master + bf16 state': ('bfloat16', {'master_dtype': 'float32', 'state_dtype': 'bfloat16'}),
    'float32 + bf16 state': ('float32', {'state_dtype': 'bfloat16'}),
}


def _worker(name: str, size: str, steps: int) -> dict:
    import brainstate
    import jax
    import jax.numpy as jnp
    import numpy as np

    import stateopt

    count, *shape = map(int, size.split('x'))
    dtype, settings = SETTINGS[name]
    settings = dict(settings)
    if settings.get('weight_decay_mask') == 'decay_matrices_only':
        settings['weight_decay_mask'] = stateopt.decay_matrices_only
    rng = np.random.default_rng(0)

    def run(dtype, settings):
        states = {f'w{i}': brainstate.ParamState(jnp.asarray(rng.standard_normal(shape), dtype))
                  for i in range(count)}
        opt = stateopt.AdamW(lr=1e-3, **settings).register_trainable_weights(states)
        grads = {k: jnp.asarray(rng.standard_normal(shape) * 1e-2, dtype) for k in states}
        for _ in range(3):
            opt.update(grads)
        jax.block_until_ready([s.value for s in states.values()])
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            opt.update(grads)
            jax.block_until_ready([s.value for s in states.values()])
            times.append(time.perf_counter() - start)
        return opt, states, statistics.median(times)

    opt, states, seconds = run(jnp.dtype(dtype), settings)
    params = sum(int(np.prod(s.value.shape)) for s in states.values())
    held = {name: sum(leaf.nbytes for leaf in jax.tree.leaves(state.value))
            for name, state in [('moments', opt.opt_state), *opt._step_states().items()]}
    param_bytes = sum(s.value.nbytes for s in states.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    del opt, states
    _, _, plain = run(jnp.float32, {})
    return {'ms': seconds * 1e3, 'ratio': seconds / plain, 'params': params,
            'bytes per param': {'parameter': param_bytes / params,
                                **{k: v / params for k, v in held.items() if v}},
            'peak GiB': peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', default='4x1024x2048')
    parser.add_argument('--steps', type=int, default=40)
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.size, args.steps)))
        return
    print(f'AdamW on {args.size}, eager update, {args.steps} steps, each setting in a fresh process')
    print(f'{"setting":32s} {"ms/call":>8s} {"vs plain":>8s} {"peak GiB":>9s}  bytes per parameter')
    for name in SETTINGS:
        out = subprocess.run([sys.executable, __file__, '--worker', name, '--size', args.size,
                              '--steps', str(args.steps)], capture_output=True, text=True, check=True,
                             env={**os.environ})
        result = json.loads(out.stdout.strip().splitlines()[-1])
        held = ', '.join(f'{k} {v:g}' for k, v in result['bytes per param'].items())
        print(f'{name:32s} {result["ms"]:8.3f} {result["ratio"]:7.2f}x {result["peak GiB"]:9.2f}  {held}')


if __name__ == '__main__':
    main()
