"""Many param groups and many States: registration, compilation and step time, each case in a fresh process.

Run from the repository root:

    python benchmarks/bench_groups.py                   # ~3 minutes on 2 cores
    python benchmarks/bench_groups.py --groups 100,1000 --states 1000

Two families of cases, AdamW throughout:

- ``N groups``: N param groups of one ``(4,)`` array each (``register_trainable_weights``
  for the first, ``add_param_group`` for the rest; the lrs cycle through three values, the
  static settings are shared). It times the registration, the first step (compilation
  included) and the median step after it.
- ``N States``: N arrays of ``(4,)`` in one group: the first step and the median step.
- ``N packed``: the same N arrays packed in one ``stateopt.PackedParams`` (registration
  includes the packing), stepped with the gradient of its buffer.
- The peers, raw optax in one donated ``jax.jit``: ``N optax groups`` (``optax.multi_transform``
  of one ``optax.adamw`` per group, the same lrs) and ``N optax states`` (``optax.adamw`` over
  the N arrays); "registration" is building the transform and its state.

The targets: registering 1,000 groups in under 2 s, with the time per group flat as N grows
(linear cost); 5,000 States compiling (the first step) in under 20 s, as they are and
packed. Compile time and step size that follow the number of distinct group
configurations rather than the number of groups are a target too: the ``N groups`` rows
show how the first step grows with N.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time

REGISTER_1000_S, COMPILE_5000_S = 2.0, 20.0
#: (case, measure, limit in s, what it is)
TARGETS = (('1000 groups', 'register_s', REGISTER_1000_S, 'registering 1,000 groups'),
           ('5000 states', 'first_step_s', COMPILE_5000_S, 'compiling 5,000 States'),
           ('5000 packed', 'first_step_s', COMPILE_5000_S, 'compiling 5,000 packed'))


def run(kind: str, n: int) -> dict:
    """One case in this process: ``kind`` is 'groups', 'states', 'packed', 'optax-groups' or
    'optax-states'."""
    if kind.startswith('optax-'):
        return run_optax(kind, n)
    import brainstate
    import jax
    import jax.numpy as jnp

    import stateopt

    states = [brainstate.ParamState(jnp.full(4, float(i))) for i in range(n)]
    grads = {f'p{i}': jnp.full(4, 0.01) for i in range(n)}
    jax.block_until_ready((grads, [s.value for s in states]))
    opt = stateopt.AdamW(lr=1e-3)
    start = time.perf_counter()
    if kind == 'groups':
        opt.register_trainable_weights({'p0': states[0]})
        for i in range(1, n):
            opt.add_param_group({f'p{i}': states[i]}, lr=1e-3 * (1 + i % 3))
    elif kind == 'packed':
        opt.register_trainable_weights(stateopt.PackedParams({f'p{i}': s for i, s in enumerate(states)}))
        grads = {'float32': jnp.full(4 * n, 0.01)}
    else:
        opt.register_trainable_weights({f'p{i}': s for i, s in enumerate(states)})
    registered = time.perf_counter()
    opt.update(grads)
    jax.block_until_ready(states[0].value)
    first = time.perf_counter()
    times = []
    for _ in range(7):
        t = time.perf_counter()
        opt.update(grads)
        jax.block_until_ready(states[0].value)
        times.append(time.perf_counter() - t)
    return {'register_s': registered - start, 'first_step_s': first - registered,
            'step_ms': statistics.median(times) * 1e3}


def run_optax(kind: str, n: int) -> dict:
    """The peer of ``run``: the same arrays, lrs and gradients in raw optax, one donated ``jax.jit``."""
    import jax
    import jax.numpy as jnp
    import optax

    params = {f'p{i}': jnp.full(4, float(i)) for i in range(n)}
    grads = {f'p{i}': jnp.full(4, 0.01) for i in range(n)}
    jax.block_until_ready((grads, params))
    start = time.perf_counter()
    if kind == 'optax-groups':
        tx = optax.multi_transform({f'g{i}': optax.adamw(1e-3 if i == 0 else 1e-3 * (1 + i % 3))
                                    for i in range(n)}, {f'p{i}': f'g{i}' for i in range(n)})
    else:
        tx = optax.adamw(1e-3)
    box = [params, tx.init(params)]
    jax.block_until_ready(box)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    registered = time.perf_counter()
    box[:] = step(*box, grads)
    jax.block_until_ready(box[0])
    first = time.perf_counter()
    times = []
    for _ in range(7):
        t = time.perf_counter()
        box[:] = step(*box, grads)
        jax.block_until_ready(box[0])
        times.append(time.perf_counter() - t)
    return {'register_s': registered - start, 'first_step_s': first - registered,
            'step_ms': statistics.median(times) * 1e3}


def case(kind: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, '--run', kind, str(n)], capture_output=True, text=True,
                         check=False)
    if out.returncode:
        raise RuntimeError(f'{n} {kind} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--groups', default='10,100,1000', help='comma-separated group counts')
    parser.add_argument('--states', default='1000,5000', help='comma-separated State counts (one group)')
    parser.add_argument('--packed', default='5000', help='comma-separated State counts, packed')
    parser.add_argument('--optax-groups', default='1000', help='comma-separated group counts, raw optax')
    parser.add_argument('--optax-states', default='1000,5000', help='comma-separated State counts, raw optax')
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--run', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run(args.run[0], int(args.run[1]))))
        return
    results = {}
    print(f'{"case":>20s} {"register s":>11s} {"per group ms":>13s} {"first step s":>13s} {"step ms":>9s}')
    for kind, counts in (('groups', args.groups), ('states', args.states), ('packed', args.packed),
                         ('optax-groups', args.optax_groups), ('optax-states', args.optax_states)):
        for n in map(int, filter(None, counts.split(','))):
            r = results[f'{n} {kind}'] = case(kind, n)
            per_group = f'{r["register_s"] / n * 1e3:13.2f}' if kind.endswith('groups') else f'{"":13s}'
            print(f'{n:>7d} {kind:12s} {r["register_s"]:11.2f} {per_group} {r["first_step_s"]:13.2f} '
                  f'{r["step_ms"]:9.2f}')
    for label, key, limit, what in TARGETS:
        if label in results:
            value = results[label][key]
            print(f'  target {what:28s} {value:6.2f} s (limit {limit:.0f} s)  '
                  f'{"OK" if value <= limit else "OVER"}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
