"""What the training-loop features cost: step time against the plain step, and memory.

Run from the repository root:

    python benchmarks/bench_training_loop.py [--sets 'mlp 784-512-512-10,4 x 1024x2048'] [--steps 40]

For AdamW on each parameter set of bench_optimizers.py named in ``--sets`` (by default the MLP,
0.67M parameters, and 4 x 1024x2048, 8.4M) it runs each setting in a fresh process and reports

- the eager ``update`` time per call (median of rounds, after a warm-up), and its ratio to the
  plain float32 AdamW step measured in the same process;
- the bytes the optimizer's States hold per parameter (moments, masters, the accumulator,
  counted from the arrays), and the bytes of the parameters;
- the peak resident memory of the process (``ru_maxrss``) after the steps;
- XLA's own account of the compiled step (``memory_analysis``): the bytes of its arguments
  (parameters, gradients and every optimizer State) and of the temporary buffers it allocates,
  in MiB. Temporaries near 0 mean the step updates every buffer in place.

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


def _worker(name: str, set_name: str, steps: int) -> dict:
    import brainstate
    import jax
    import jax.numpy as jnp
    import numpy as np

    import stateopt

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_optimizers import PARAM_SETS

    shapes = PARAM_SETS[set_name]
    dtype, settings = SETTINGS[name]
    settings = dict(settings)
    if settings.get('weight_decay_mask') == 'decay_matrices_only':
        settings['weight_decay_mask'] = stateopt.decay_matrices_only
    rng = np.random.default_rng(0)

    def run(dtype, settings):
        states = {f'p{i}': brainstate.ParamState(jnp.asarray(rng.standard_normal(shape), dtype))
                  for i, shape in enumerate(shapes)}
        opt = stateopt.AdamW(lr=1e-3, **settings).register_trainable_weights(states)
        grads = {k: jnp.asarray(rng.standard_normal(s.value.shape) * 1e-2, dtype) for k, s in states.items()}
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
    xla = _memory_analysis(opt)
    params = sum(int(np.prod(s.value.shape)) for s in states.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    held = {name: sum(leaf.nbytes for leaf in jax.tree.leaves(state.value))
            for name, state in [('moments', opt.opt_state), *opt._step_states().items()]}
    param_bytes = sum(s.value.nbytes for s in states.values())
    del opt, states
    _, _, plain = run(jnp.float32, {})
    return {'ms': seconds * 1e3, 'ratio': seconds / plain, 'params': params,
            'bytes per param': {'parameter': param_bytes / params,
                                **{k: v / params for k, v in held.items() if v}},
            'peak GiB': peak, **xla}


def _memory_analysis(opt) -> dict:
    """XLA's memory analysis of ``opt``'s compiled eager step, called as ``update`` calls it."""
    import jax

    from stateopt._donation import RAW

    plan = opt._plan
    grads = {name: RAW(s) for name, s in zip(plan.spec.names, plan.states)}
    args = (tuple(RAW(s) for s in plan.states), grads,
            jax.tree.leaves(RAW(opt.opt_state)), tuple(RAW(g._hyper) for g in opt._groups),
            RAW(opt.step_count), {k: RAW(s) for k, s in opt._step_states().items()}, {}, ())
    analysis = plan.compiled.lower(*args).compile().memory_analysis()
    return {'arguments MiB': analysis.argument_size_in_bytes / 2**20,
            'temporaries MiB': analysis.temp_size_in_bytes / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sets', default='mlp 784-512-512-10,4 x 1024x2048')
    parser.add_argument('--steps', type=int, default=40)
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.sets, args.steps)))
        return
    for set_name in args.sets.split(','):
        print(f'\nAdamW on {set_name}, eager update, {args.steps} steps, each setting in a fresh process')
        print(f'{"setting":32s} {"ms/call":>8s} {"vs plain":>8s} {"peak GiB":>9s} {"args MiB":>9s} '
              f'{"temp MiB":>9s}  bytes per parameter')
        for name in SETTINGS:
            out = subprocess.run([sys.executable, __file__, '--worker', name, '--sets', set_name,
                                  '--steps', str(args.steps)], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            held = ', '.join(f'{k} {v:.3g}' for k, v in result['bytes per param'].items() if v >= 0.01)
            print(f'{name:32s} {result["ms"]:8.3f} {result["ratio"]:7.2f}x {result["peak GiB"]:9.2f} '
                  f'{result["arguments MiB"]:9.1f} {result["temporaries MiB"]:9.2f}  {held}')


if __name__ == '__main__':
    main()
