"""AdamW step time of stateopt against raw optax and its peers, side by side in one process.

Run from the repository root (after ``pip install -e ".[bench]"``; torch is optional and is
used only if it is installed):

    python benchmarks/bench_optimizers.py               # all parameter sets, ~5 minutes
    python benchmarks/bench_optimizers.py --quick       # fewer steps, a smoke run

For each parameter set it prints the median milliseconds per AdamW step of every runner,
its ratio to a jitted raw-optax step with donated buffers, the optimizer-state bytes and
the first step's time (compilation included), then the targets with their measured ratios.
The update runners take the same fixed gradients, so only the update is timed; the
train-step runners compute a cheap loss and its gradient (0.5 * sum |p|^2) and update, as
a whole compiled step, in raw jax.jit + optax and in stateopt under brainstate's jit or
stateopt.donating_jit.

Two precautions make the ratios repeatable on a shared machine. Runners are interleaved
in rounds of consecutive steps, so drift spreads evenly over them. And each runner is
built several times (``--instances``), its median taken over all of them: with donated
buffers an instance keeps the same memory for its whole life, and one instance can be
persistently slower than another of the same code through where its arrays landed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

LR, WEIGHT_DECAY = 1e-3, 1e-2

PARAM_SETS = {
    'tiny 6 x 16': [(16,)] * 6,
    'mlp 784-512-512-10': [(784, 512), (512,), (512, 512), (512,), (512, 10), (10,)],
    '100 x 64x64': [(64, 64), (64,)] * 100,
    '4 x 1024x2048': [(1024, 2048), (2048,)] * 4,
    '1000 leaves': [(32, 32)] * 500 + [(32,)] * 500,
}


@dataclass
class Runner:
    """One way of taking an AdamW step: ``step()`` runs one and waits for it."""

    name: str
    step: Callable[[], None]
    state_bytes: int
    first_step_s: float = 0.0
    times: list = field(default_factory=list)


def nbytes(tree) -> int:
    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree) if hasattr(leaf, 'shape')))


def arrays(shapes, seed, scale):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s) * scale, np.float32) for s in shapes]


# -- runners -----------------------------------------------------------------------------

_OPTAX_TX = optax.adamw(LR, weight_decay=WEIGHT_DECAY)


def _optax_update(p, s, g):
    updates, s = _OPTAX_TX.update(g, s, p)
    return optax.apply_updates(p, updates), s


#: One compiled raw-optax step per donation choice, shared by every instance (as stateopt's is).
_OPTAX_STEPS = {True: jax.jit(_optax_update, donate_argnums=(0, 1)), False: jax.jit(_optax_update)}


def optax_runner(shapes, donate: bool) -> Runner:
    params = {str(i): jnp.asarray(a) for i, a in enumerate(arrays(shapes, 0, 0.05))}
    grads = {str(i): jnp.asarray(a) for i, a in enumerate(arrays(shapes, 1, 1e-3))}
    box = [params, _OPTAX_TX.init(params)]
    compiled = _OPTAX_STEPS[donate]

    def step():
        box[0], box[1] = compiled(box[0], box[1], grads)
        jax.block_until_ready(box[0])

    return Runner(f'optax jax.jit{" donated" if donate else ""}', step, nbytes(box[1]))


def _half_square(leaves) -> jax.Array:
    """The train steps' loss: 0.5 * sum |p|^2, cheap next to the update (its gradient is p)."""
    return 0.5 * sum(jnp.vdot(leaf, leaf) for leaf in leaves)


def _optax_train(p, s):
    grads = jax.grad(lambda q: _half_square(jax.tree.leaves(q)))(p)
    updates, s = _OPTAX_TX.update(grads, s, p)
    return optax.apply_updates(p, updates), s


_OPTAX_TRAIN = {True: jax.jit(_optax_train, donate_argnums=(0, 1)), False: jax.jit(_optax_train)}


def optax_train_runner(shapes, donate: bool) -> Runner:
    """A whole train step (forward, backward, update) in raw jax.jit + optax."""
    params = {str(i): jnp.asarray(a) for i, a in enumerate(arrays(shapes, 0, 0.05))}
    box = [params, _OPTAX_TX.init(params)]
    compiled = _OPTAX_TRAIN[donate]

    def step():
        box[0], box[1] = compiled(box[0], box[1])
        jax.block_until_ready(box[0])

    return Runner(f'train step: optax jax.jit{" donated" if donate else ""}', step, nbytes(box[1]))


def stateopt_train_runner(shapes, jit: str) -> Runner:
    """The same train step with stateopt, under brainstate's jit or stateopt.donating_jit."""
    import brainstate

    import stateopt

    states = {str(i): brainstate.ParamState(jnp.asarray(a)) for i, a in enumerate(arrays(shapes, 0, 0.05))}
    opt = stateopt.AdamW(lr=LR, weight_decay=WEIGHT_DECAY).register_trainable_weights(states)
    loss = brainstate.transform.grad(lambda: _half_square([s.value for s in states.values()]),
                                     grad_states=states)

    def train():
        opt.update(loss())

    compiled = brainstate.transform.jit(train) if jit == 'brainstate jit' else stateopt.donating_jit(train)
    first = states['0']

    def step():
        compiled()
        jax.block_until_ready(first.value)

    return Runner(f'train step: stateopt {jit}', step, nbytes(opt.opt_state.value))


def stateopt_runner(shapes, mode: str, groups: int = 1) -> Runner:
    import brainstate

    import stateopt

    states = {str(i): brainstate.ParamState(jnp.asarray(a)) for i, a in enumerate(arrays(shapes, 0, 0.05))}
    grads = {str(i): jnp.asarray(a) for i, a in enumerate(arrays(shapes, 1, 1e-3))}
    opt = stateopt.AdamW(lr=LR, weight_decay=WEIGHT_DECAY)
    keys = sorted(states)
    split = np.array_split(np.arange(len(keys)), groups)
    opt.register_trainable_weights({keys[i]: states[keys[i]] for i in split[0]})
    for part in split[1:]:
        opt.add_param_group({keys[i]: states[keys[i]] for i in part}, lr=LR)
    first = states[keys[0]]
    update = opt.update if mode == 'eager' else brainstate.transform.jit(opt.update)

    def step():
        update(grads)
        jax.block_until_ready(first.value)

    label = f'stateopt {mode}' + (f' ({groups} groups)' if groups > 1 else '')
    return Runner(label, step, nbytes(opt.opt_state.value))


def braintools_runner(shapes, jit: bool) -> Runner:
    import brainstate
    import braintools

    states = {str(i): brainstate.ParamState(jnp.asarray(a)) for i, a in enumerate(arrays(shapes, 0, 0.05))}
    grads = {str(i): jnp.asarray(a) for i, a in enumerate(arrays(shapes, 1, 1e-3))}
    opt = braintools.optim.AdamW(lr=LR, weight_decay=WEIGHT_DECAY)
    opt.register_trainable_weights(states)
    update = brainstate.transform.jit(opt.update) if jit else opt.update
    first = states['0']

    def step():
        update(grads)
        jax.block_until_ready(first.value)

    return Runner(f'braintools.optim {"brainstate jit" if jit else "eager"}', step,
                  nbytes(opt.opt_state.value))


def flax_runner(shapes) -> Runner:
    from flax import nnx

    class Params(nnx.Module):
        def __init__(self, values):
            for i, value in enumerate(values):
                setattr(self, f'p{i}', nnx.Param(jnp.asarray(value)))

    model = Params(arrays(shapes, 0, 0.05))
    optimizer = nnx.Optimizer(model, optax.adamw(LR, weight_decay=WEIGHT_DECAY), wrt=nnx.Param)
    gradient = {f'p{i}': jnp.asarray(g) for i, g in enumerate(arrays(shapes, 1, 1e-3))}
    grads = jax.tree_util.tree_map_with_path(lambda path, _: gradient[path[0].key],
                                             nnx.state(model, nnx.Param))

    @nnx.jit
    def update(optimizer, model, grads):
        optimizer.update(model, grads)

    def step():
        update(optimizer, model, grads)
        jax.block_until_ready(model.p0[...])

    return Runner('flax.nnx.Optimizer nnx.jit', step, nbytes(nnx.state(optimizer, nnx.OptState)))


def torch_runner(shapes, kind: str) -> Runner:
    import torch

    params = [torch.nn.Parameter(torch.from_numpy(a)) for a in arrays(shapes, 0, 0.05)]
    for p, g in zip(params, arrays(shapes, 1, 1e-3)):
        p.grad = torch.from_numpy(g)
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, **{kind: True})
    opt.step()
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                      if isinstance(t, torch.Tensor))
    return Runner(f'torch.optim.AdamW {kind}', opt.step, state_bytes)


PEERS = {
    'braintools': lambda shapes: [braintools_runner(shapes, False), braintools_runner(shapes, True)],
    'flax': lambda shapes: [flax_runner(shapes)],
    'torch': lambda shapes: [torch_runner(shapes, 'foreach'), torch_runner(shapes, 'fused')],
}


def build(shapes, announce: bool) -> list[Runner]:
    runners = [
        optax_runner(shapes, donate=True),
        optax_runner(shapes, donate=False),
        stateopt_runner(shapes, 'eager'),
        stateopt_runner(shapes, 'eager', groups=4),
        stateopt_runner(shapes, 'brainstate jit'),
        optax_train_runner(shapes, donate=True),
        optax_train_runner(shapes, donate=False),
        stateopt_train_runner(shapes, 'brainstate jit'),
        stateopt_train_runner(shapes, 'donating_jit'),
    ]
    for peer, make in PEERS.items():
        try:
            __import__({'braintools': 'braintools', 'flax': 'flax.nnx', 'torch': 'torch'}[peer])
        except ImportError:
            if announce:
                print(f'  ({peer} is not installed: skipped)')
            continue
        runners.extend(make(shapes))
    return runners


def measure(instances: list[list[Runner]], steps: int, rounds: int) -> list[Runner]:
    """Time every instance of every runner; return one Runner per kind with all their times."""
    for runners in instances:
        for runner in runners:
            start = time.perf_counter()
            runner.step()
            runner.first_step_s = time.perf_counter() - start
            for _ in range(3):
                runner.step()
    per_round = max(1, steps // (rounds * len(instances)))
    for _ in range(rounds):
        for runners in instances:
            for runner in runners:
                for _ in range(per_round):
                    start = time.perf_counter()
                    runner.step()
                    runner.times.append(time.perf_counter() - start)
    merged = instances[0]
    for runner, *others in zip(*instances):
        runner.times.extend(t for other in others for t in other.times)
    return merged


def report(name: str, shapes, runners: list[Runner]) -> dict:
    size = sum(int(np.prod(s)) for s in shapes)
    median = {r.name: statistics.median(r.times) * 1e3 for r in runners}
    base = median['optax jax.jit donated']
    print(f'\n{name}: {len(shapes)} leaves, {size / 1e6:.2f}M parameters, '
          f'{len(runners[0].times)} timed steps per runner')
    print(f'  {"runner":38s} {"ms/step":>9s} {"x optax":>8s} {"state MB":>9s} {"first step s":>13s}')
    for r in runners:
        print(f'  {r.name:38s} {median[r.name]:9.3f} {median[r.name] / base:8.2f} '
              f'{r.state_bytes / 2**20:9.2f} {r.first_step_s:13.3f}')
    targets = {
        'eager update / optax jit donated': median['stateopt eager'] / base,
        'train step in brainstate jit / optax jit': (
            median['train step: stateopt brainstate jit'] / median['train step: optax jax.jit']),
        'train step in donating_jit / optax jit donated': (
            median['train step: stateopt donating_jit'] / median['train step: optax jax.jit donated']),
        '4 groups / 1 group (eager update)': median['stateopt eager (4 groups)'] / median['stateopt eager'],
    }
    for label, ratio in targets.items():
        print(f'  target {label:48s} {ratio:5.2f}  {"ok" if ratio <= 1.10 else "OVER 1.10"}')
    return {'leaves': len(shapes), 'params': size, 'median_ms': median, 'targets': targets,
            'state_bytes': {r.name: r.state_bytes for r in runners},
            'first_step_s': {r.name: r.first_step_s for r in runners}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=90, help='timed steps per runner and set')
    parser.add_argument('--rounds', type=int, default=6, help='interleaved rounds')
    parser.add_argument('--instances', type=int, default=2, help='instances of each runner')
    parser.add_argument('--sets', default=','.join(PARAM_SETS), help='comma-separated set names')
    parser.add_argument('--quick', action='store_true', help='10 steps in 2 rounds')
    parser.add_argument('--json', help='also write the results to this file')
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.instances = 12, 2, 1
    print(f'AdamW step benchmark: jax {jax.__version__} on {jax.devices()[0].platform}, '
          f'{platform.processor() or platform.machine()}, Python {platform.python_version()}')
    results = {}
    for name in args.sets.split(','):
        shapes = PARAM_SETS[name]
        instances = [build(shapes, announce=i == 0) for i in range(args.instances)]
        runners = measure(instances, args.steps, args.rounds)
        results[name] = report(name, shapes, runners)
        del runners, instances
        gc.collect()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f'\nprocess peak memory: {peak:.0f} MB')
    if args.json:
        machine = {'description': f'{_cpu()}, {os.cpu_count()} cores, {jax.devices()[0].platform.upper()}, '
                                  f'jax {jax.__version__}, Python {platform.python_version()}',
                   'date': time.strftime('%Y-%m-%d')}
        argv = [a for a in sys.argv[1:] if a != '--json' and a != args.json]
        with open(args.json, 'w') as f:
            json.dump({'machine': machine, 'results': results, 'peak_mb': peak, 'argv': argv}, f, indent=1)


def _cpu() -> str:
    """The processor's model name, where the system tells it."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == '__main__':
    main()
