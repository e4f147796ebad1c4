"""Peak memory of an AdamW run: stateopt against raw optax, each runner in a fresh process.

Run from the repository root (after ``pip install -e ".[bench]"``):

    python benchmarks/bench_memory.py                  # 8 x 4096x4096 (134M parameters), ~1 minute
    python benchmarks/bench_memory.py --shape 8x1024x1024 --steps 3     # a smaller set

Each runner starts a new Python process that imports everything, makes the parameters
(and, for the update runners, a fixed gradient of the same size), takes ``--steps``
AdamW steps and reports its peak memory: the peak resident set size of the process on a
CPU, jax's ``peak_bytes_in_use`` of the device elsewhere. The runners are:

- ``optax donated``: a jitted raw optax update with its parameter and state buffers
  donated, the reference every target is measured against;
- ``optax``: the same without donation;
- ``stateopt eager``: ``opt.update(grads)`` called eagerly;
- ``stateopt packed eager``: the same on the parameters packed in a ``stateopt.PackedParams``
  (the gradient is its buffer's);
- ``stateopt brainstate jit``: ``opt.update`` inside ``brainstate.transform.jit``;
- ``train step: optax donated``: a jitted train step (the gradient of 0.5 * sum |p|^2
  computed inside, then the update) with donated buffers;
- ``train step: stateopt donating_jit``: the same train step with ``stateopt.donating_jit``.

With parameters p, gradients g and AdamW's moments m and v, the least a donated update
can hold is p + g + m + v. The targets: eager ``update`` within 1.02x of ``optax
donated``, and the ``donating_jit`` train step within 1.02x of the optax train step.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import subprocess
import sys

RUNNERS = ('optax donated', 'optax', 'stateopt eager', 'stateopt packed eager', 'stateopt brainstate jit',
           'train step: optax donated', 'train step: stateopt donating_jit')

#: (runner, reference) pairs whose peak ratio must stay within TARGET.
TARGETS = (('stateopt eager', 'optax donated'), ('stateopt packed eager', 'optax donated'),
           ('train step: stateopt donating_jit', 'train step: optax donated'))
TARGET = 1.02


def peak_bytes() -> int:
    """The process's peak memory: the device's peak bytes in use, or the peak RSS on a CPU."""
    import jax

    device = jax.devices()[0]
    if device.platform != 'cpu':
        stats = device.memory_stats() or {}
        if 'peak_bytes_in_use' in stats:
            return int(stats['peak_bytes_in_use'])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(name: str, shapes: list[tuple[int, ...]], steps: int) -> dict:
    """Take ``steps`` AdamW steps with runner ``name`` in this process; return its peak memory."""
    import brainstate
    import jax
    import jax.numpy as jnp
    import optax

    import stateopt

    tx = optax.adamw(1e-3, weight_decay=1e-2)
    keys = jax.random.split(jax.random.PRNGKey(0), len(shapes))
    params = {f'p{i}': jax.random.normal(key, shape) for i, (key, shape) in enumerate(zip(keys, shapes))}
    train = name.startswith('train step')
    grads = None if train else {k: v * 1e-3 for k, v in params.items()}
    jax.block_until_ready((params, grads))
    before = peak_bytes()

    def half_square(values):
        return 0.5 * sum(jnp.vdot(v, v) for v in values)

    if name.startswith('optax') or name == 'train step: optax donated':
        def update(p, s, g):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        def train_step(p, s):
            return update(p, s, jax.grad(lambda q: half_square(jax.tree.leaves(q)))(p))

        donate = (0, 1) if 'donated' in name else ()
        state = tx.init(params)
        step = jax.jit(train_step if train else update, donate_argnums=donate)
        for _ in range(steps):
            params, state = step(params, state) if train else step(params, state, grads)
        jax.block_until_ready(params)
    else:
        states = {k: brainstate.ParamState(v) for k, v in params.items()}
        del params
        if name == 'stateopt packed eager':     # its gradient is one array: the buffer's
            grads = None
            registered = stateopt.PackedParams(states)
        else:
            registered = states
        opt = stateopt.AdamW(lr=1e-3, weight_decay=1e-2).register_trainable_weights(registered)
        if grads is None and not train:
            grads = {'float32': registered['float32'].value * 1e-3}
        if train:
            loss = brainstate.transform.grad(lambda: half_square([s.value for s in states.values()]),
                                             grad_states=states)

            @stateopt.donating_jit
            def step():
                opt.update(loss())
        elif name == 'stateopt brainstate jit':
            step = functools.partial(brainstate.transform.jit(opt.update), grads)
        else:
            step = functools.partial(opt.update, grads)
        for _ in range(steps):
            step()
        jax.block_until_ready([s.value for s in registered.values()])   # a packed State's read is a copy
    return {'peak': peak_bytes(), 'before_steps': before}


def parse_shape(text: str) -> list[tuple[int, ...]]:
    """``'8x4096x4096'``: 8 arrays of 4096x4096."""
    count, *dims = map(int, text.lower().split('x'))
    return [tuple(dims)] * count


def measure(names, shape: str, steps: int, repeat: int) -> dict:
    """Each runner's least peak over ``repeat`` fresh processes, interleaved."""
    peaks: dict = {name: [] for name in names}
    for _ in range(repeat):
        for name in names:
            out = subprocess.run([sys.executable, __file__, '--run', name, '--shape', shape,
                                  '--steps', str(steps)], capture_output=True, text=True, check=False)
            if out.returncode:
                raise RuntimeError(f'runner {name!r} failed:\n{out.stderr[-3000:]}')
            peaks[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {name: min(results, key=lambda r: r['peak']) for name, results in peaks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shape', default='8x4096x4096', help='COUNTxDIMxDIM...: the parameter arrays')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--repeat', type=int, default=1,
                        help='fresh processes per runner; the least peak counts')
    parser.add_argument('--runners', default=','.join(RUNNERS), help='comma-separated runner names')
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--run', help=argparse.SUPPRESS)   # inside a runner's own process
    args = parser.parse_args()
    shapes = parse_shape(args.shape)
    if args.run:
        print(json.dumps(run(args.run, shapes, args.steps)))
        return
    import jax

    names = args.runners.split(',')
    size = sum(math.prod(s) for s in shapes)
    print(f'AdamW peak memory, {len(shapes)} arrays of {shapes[0]} ({size / 1e6:.0f}M float32 parameters, '
          f'p+g+m+v = {size * 16 / 2**30:.2f} GiB), {args.steps} steps, a fresh process per runner')
    print(f'jax {jax.__version__} on {jax.devices()[0].platform}, {platform.machine()}, '
          f'Python {platform.python_version()}; CPU: peak RSS, else the device peak')
    results = measure(names, args.shape, args.steps, args.repeat)
    print(f'  {"runner":36s} {"peak GiB":>9s} {"before steps":>13s}')
    for name in names:
        r = results[name]
        print(f'  {name:36s} {r["peak"] / 2**30:9.2f} {r["before_steps"] / 2**30:13.2f}')
    targets = {}
    for runner, reference in TARGETS:
        if runner in results and reference in results:
            ratio = results[runner]['peak'] / results[reference]['peak']
            targets[f'{runner} / {reference}'] = ratio
            print(f'  target {runner + " / " + reference:62s} {ratio:5.3f}  '
                  f'{"OK" if ratio <= TARGET else f"OVER {TARGET}"}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'shape': args.shape, 'steps': args.steps, 'results': results, 'targets': targets,
                       'machine': f'{platform.machine()}, {os.cpu_count()} cores'}, f, indent=1)


if __name__ == '__main__':
    main()
