"""Where the gap to torch's fused CPU AdamW comes from, and what closes it.

Run from the repository root (torch is optional; without it the torch column is skipped):

    python benchmarks/adamw_gap.py

For each parameter set of bench_optimizers.py it times, each in a fresh process so that
XLA flags take effect, an AdamW step (donated buffers) written four ways:

- ``per-leaf``: the usual jitted step over the parameter pytree (what optax and stateopt compile);
- ``flat``: parameters and gradients concatenated into one buffer per dtype, the moments kept
  flat, the new parameters sliced back out;
- ``small flat``: ``flat`` for the leaves of at most ``SMALL`` elements, the larger ones per
  leaf (a layout that would leave large sets as they are);
- ``packed``: parameters, gradients and moments each stored as one flat buffer, as a packed
  parameter layout would keep them (the model reading views of one buffer): no copies in or
  out, the bound for any layout;
- ``grouped``: leaves of one shape stacked, one update per shape, unstacked again;
- with XLA flags: the per-leaf step under each flag of ``FLAGS``;

and torch.optim.AdamW(fused=True), then prints ms per step and the ratio to torch fused.
It also counts the loops (fusions) XLA emits per parameter leaf for the per-leaf step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

FLAGS = [
    '--xla_cpu_use_thunk_runtime=false',
    '--xla_cpu_multi_thread_eigen=false',
    '--xla_cpu_enable_fast_math=true',
    '--xla_cpu_parallel_codegen_split_count=1',
]

B1, B2, EPS, LR, WD = 0.9, 0.999, 1e-8, 1e-3, 1e-2

#: The largest leaf (in elements) the ``small flat`` layout puts in its flat buffer.
SMALL = 65536


def _worker(set_name: str, variant: str, steps: int) -> dict:
    """Time one variant in this process (XLA_FLAGS already set by the parent)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    from bench_optimizers import PARAM_SETS, arrays

    shapes = PARAM_SETS[set_name]
    params = [jnp.asarray(a) for a in arrays(shapes, 0, 0.05)]
    grads = [jnp.asarray(a) for a in arrays(shapes, 1, 1e-3)]

    def adamw(p, g, m, v, t):
        m = m + (1 - B1) * (g - m)
        v = B2 * v + (1 - B2) * g * g
        p = p * (1 - LR * WD) - LR * (m / (1 - B1 ** t)) / (jnp.sqrt(v / (1 - B2 ** t)) + EPS)
        return p, m, v

    if variant == 'flat':
        sizes = [int(np.prod(s)) for s in shapes]
        cuts = np.cumsum(sizes)[:-1]

        def step(p, m, v, g, t):
            t = t + 1
            flat_p, flat_m, flat_v = adamw(jnp.concatenate([x.ravel() for x in p]),
                                           jnp.concatenate([x.ravel() for x in g]), m, v, t)
            pieces = jnp.split(flat_p, cuts)
            return [x.reshape(s) for x, s in zip(pieces, shapes)], flat_m, flat_v, t

        state = [jnp.zeros(sum(sizes)), jnp.zeros(sum(sizes))]
    elif variant == 'small flat':
        small = [i for i, s in enumerate(shapes) if int(np.prod(s)) <= SMALL]
        large = [i for i in range(len(shapes)) if i not in small]
        cuts = np.cumsum([int(np.prod(shapes[i])) for i in small])[:-1]

        def step(p, m, v, g, t):
            t = t + 1
            new_p = list(p)
            flat_p, flat_m, flat_v = adamw(jnp.concatenate([p[i].ravel() for i in small]),
                                           jnp.concatenate([g[i].ravel() for i in small]), m[0], v[0], t)
            for i, piece in zip(small, jnp.split(flat_p, cuts)):
                new_p[i] = piece.reshape(shapes[i])
            out = [adamw(p[i], g[i], mm, vv, t) for i, mm, vv in zip(large, m[1:], v[1:])]
            for i, (pp, _, _) in zip(large, out):
                new_p[i] = pp
            return new_p, [flat_m, *(o[1] for o in out)], [flat_v, *(o[2] for o in out)], t

        n_small = sum(int(np.prod(shapes[i])) for i in small)
        state = [[jnp.zeros(n_small), *(jnp.zeros(shapes[i]) for i in large)] for _ in range(2)]
    elif variant == 'packed':
        params = jnp.concatenate([x.ravel() for x in params])
        grads = jnp.concatenate([x.ravel() for x in grads])

        def step(p, m, v, g, t):
            t = t + 1
            return (*adamw(p, g, m, v, t), t)

        state = [jnp.zeros(params.size), jnp.zeros(params.size)]
    elif variant == 'grouped':
        order = sorted(set(shapes), key=str)
        members = {s: [i for i, shape in enumerate(shapes) if shape == s] for s in order}

        def step(p, m, v, g, t):
            t = t + 1
            new_p, new_m, new_v = list(p), [], []
            for s, mm, vv in zip(order, m, v):
                idx = members[s]
                sp, sm, sv = adamw(jnp.stack([p[i] for i in idx]), jnp.stack([g[i] for i in idx]), mm, vv, t)
                for k, i in enumerate(idx):
                    new_p[i] = sp[k]
                new_m.append(sm)
                new_v.append(sv)
            return new_p, new_m, new_v, t

        state = [[jnp.zeros((len(members[s]),) + s) for s in order] for _ in range(2)]
    else:
        def step(p, m, v, g, t):
            t = t + 1
            out = [adamw(*xs, t) for xs in zip(p, g, m, v)]
            return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out], t

        state = [[jnp.zeros(s) for s in shapes] for _ in range(2)]

    compiled = jax.jit(step, donate_argnums=(0, 1, 2))
    box = [params, state[0], state[1], jnp.zeros((), jnp.float32)]
    fusions = None
    if variant == 'per-leaf':
        text = compiled.lower(*box[:3], grads, box[3]).compile().as_text()
        fusions = len(re.findall(r' fusion\(', text.split('ENTRY')[-1])) / len(shapes)
    for _ in range(5):
        box[0], box[1], box[2], box[3] = compiled(box[0], box[1], box[2], grads, box[3])
    jax.block_until_ready(box)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        box[0], box[1], box[2], box[3] = compiled(box[0], box[1], box[2], grads, box[3])
        jax.block_until_ready(box[0])
        times.append(time.perf_counter() - start)
    return {'ms': statistics.median(times) * 1e3, 'fusions_per_leaf': fusions}


def _torch(set_name: str, steps: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_optimizers import PARAM_SETS, arrays

    shapes = PARAM_SETS[set_name]
    params = [torch.nn.Parameter(torch.from_numpy(a)) for a in arrays(shapes, 0, 0.05)]
    for p, g in zip(params, arrays(shapes, 1, 1e-3)):
        p.grad = torch.from_numpy(g)
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD, fused=True)
    for _ in range(5):
        opt.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _run(set_name: str, variant: str, flags: str, steps: int) -> dict:
    env = {**os.environ, 'XLA_FLAGS': flags}
    out = subprocess.run([sys.executable, __file__, '--worker', set_name, variant, str(steps)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=60)
    parser.add_argument('--worker', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        set_name, variant, steps = args.worker
        print(json.dumps(_worker(set_name, variant, int(steps))))
        return
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_optimizers import LARGE_SETS, PARAM_SETS

    for set_name in (name for name in PARAM_SETS if name not in LARGE_SETS):
        torch_ms = _torch(set_name, args.steps)
        rows = [('per-leaf', '', 'per-leaf'), ('flat', '', 'flat'), ('small flat', '', 'small flat'),
                ('packed', '', 'packed'), ('grouped', '', 'grouped')]
        rows += [(flag, flag, 'per-leaf') for flag in FLAGS]
        print(f'\n{set_name}' + (f': torch.optim.AdamW(fused=True) {torch_ms:.3f} ms' if torch_ms else
                                 ' (torch is not installed: no torch column)'))
        for label, flags, variant in rows:
            result = _run(set_name, variant, flags, args.steps)
            ratio = f'{result["ms"] / torch_ms:6.2f}x torch fused' if torch_ms else ''
            per_leaf = result['fusions_per_leaf']
            loops = f'  ({per_leaf:.1f} loops per leaf)' if per_leaf else ''
            print(f'  {label:44s} {result["ms"]:8.3f} ms  {ratio}{loops}')


if __name__ == '__main__':
    main()
