"""AdamW step time of stateopt against raw optax and its peers, side by side in one process.

Run from the repository root (after ``pip install -e ".[bench]"``; torch is optional and is
used only if it is installed):

    python benchmarks/bench_optimizers.py               # every set but 537M on a CPU, ~15 minutes
    python benchmarks/bench_optimizers.py --quick       # fewer steps, a smoke run
    python benchmarks/bench_optimizers.py --sets '8 x 8192x8192' --json FILE --add-to   # 537M
    python benchmarks/bench_optimizers.py --sets 'tiny 6 x 16' --no-peers --json FILE --add-to

The per-call set (6 x 16) is timed without the peers in the process: their libraries' threads
wake on a 2-core machine and move a 30 us call by more than its targets allow.

For each parameter set it prints the median milliseconds per AdamW step of every runner
(latency: each step waited for), its ratio to a jitted raw-optax step with donated buffers,
its throughput (steps launched back to back, one wait at the end), the optimizer-state bytes
and the first step's time (compilation included); then the bandwidth of the update (AdamW
reads and writes 7 float32 values per parameter) next to an in-place pass over as many
values (a copy's traffic); then the targets with their measured ratios, OK or OVER. torch
runs on CUDA when jax runs on a GPU.
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
    # 24 blocks of d=256: qkv, output, two MLP matrices with their biases, two layer norms;
    # embeddings and a final norm: 292 leaves, 21M parameters
    'transformer-like 24 x d256': [(8192, 256), (512, 256)] + [
        (256, 768), (768,), (256, 256), (256,), (256, 1024), (1024,), (1024, 256), (256,),
        (256,), (256,), (256,), (256,)] * 24 + [(256,), (256,)],
    '8 x 8192x8192': [(8192, 8192)] * 8,
}

#: Sets too large to hold every runner at once: only raw optax donated, the eager update, torch fused
#: (not on a CPU) and the copy, one instance, and only when named with --sets on a CPU (537M
#: parameters: each runner holds 6.4 GB and the shared gradients 2.1 GB more).
LARGE_SETS = {'8 x 8192x8192'}


@dataclass
class Runner:
    """One way of taking an AdamW step: ``launch()`` starts one, ``wait()`` waits for the last."""

    name: str
    launch: Callable[[], None]
    wait: Callable[[], None]
    state_bytes: int
    first_step_s: float = 0.0
    times: list = field(default_factory=list)         # latency: one step, waited for
    throughput: list = field(default_factory=list)    # per step of THROUGHPUT_STEPS launched, one wait

    def step(self) -> None:
        self.launch()
        self.wait()


def nbytes(tree) -> int:
    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree) if hasattr(leaf, 'shape')))


def arrays(shapes, seed, scale):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s) * scale, np.float32) for s in shapes]


_GRADIENTS: dict = {}


def gradients(shapes) -> dict:
    """The fixed gradients of ``shapes`` as jax arrays, made once and shared by the update runners."""
    key = tuple(map(tuple, shapes))
    if key not in _GRADIENTS:
        _GRADIENTS.clear()
        _GRADIENTS[key] = {str(i): jnp.asarray(a) for i, a in enumerate(arrays(shapes, 1, 1e-3))}
    return _GRADIENTS[key]


# -- runners -----------------------------------------------------------------------------

_OPTAX_TX = optax.adamw(LR, weight_decay=WEIGHT_DECAY)


def _optax_update(p, s, g):
    updates, s = _OPTAX_TX.update(g, s, p)
    return optax.apply_updates(p, updates), s


#: One compiled raw-optax step per donation choice, shared by every instance (as stateopt's is).
_OPTAX_STEPS = {True: jax.jit(_optax_update, donate_argnums=(0, 1)), False: jax.jit(_optax_update)}


def optax_runner(shapes, donate: bool) -> Runner:
    params = {str(i): jnp.asarray(a) for i, a in enumerate(arrays(shapes, 0, 0.05))}
    grads = gradients(shapes)
    box = [params, _OPTAX_TX.init(params)]
    compiled = _OPTAX_STEPS[donate]

    def launch():
        box[0], box[1] = compiled(box[0], box[1], grads)

    return Runner(f'optax jax.jit{" donated" if donate else ""}', launch,
                  lambda: jax.block_until_ready(box[0]), nbytes(box[1]))


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

    def launch():
        box[0], box[1] = compiled(box[0], box[1])

    return Runner(f'train step: optax jax.jit{" donated" if donate else ""}', launch,
                  lambda: jax.block_until_ready(box[0]), nbytes(box[1]))


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
    return Runner(f'train step: stateopt {jit}', compiled, lambda: jax.block_until_ready(first.value),
                  nbytes(opt.opt_state.value))


def stateopt_runner(shapes, mode: str, groups: int = 1) -> Runner:
    import brainstate

    import stateopt

    states = {str(i): brainstate.ParamState(jnp.asarray(a)) for i, a in enumerate(arrays(shapes, 0, 0.05))}
    grads = gradients(shapes)
    opt = stateopt.AdamW(lr=LR, weight_decay=WEIGHT_DECAY)
    keys = sorted(states)
    split = np.array_split(np.arange(len(keys)), groups)
    opt.register_trainable_weights({keys[i]: states[keys[i]] for i in split[0]})
    for part in split[1:]:
        opt.add_param_group({keys[i]: states[keys[i]] for i in part}, lr=LR)
    first = states[keys[0]]
    update = opt.update if mode == 'eager' else brainstate.transform.jit(opt.update)

    label = f'stateopt {mode}' + (f' ({groups} groups)' if groups > 1 else '')
    return Runner(label, lambda: update(grads), lambda: jax.block_until_ready(first.value),
                  nbytes(opt.opt_state.value))


def _packed(shapes, seed: int, scale: float):
    """ParamStates of ``arrays(shapes, seed, scale)`` packed in a stateopt.PackedParams."""
    import brainstate

    import stateopt

    values = arrays(shapes, seed, scale)
    states = {str(i): brainstate.ParamState(jnp.asarray(a)) for i, a in enumerate(values)}
    return states, stateopt.PackedParams(states)


def stateopt_packed_runner(shapes) -> Runner:
    """The eager update on a stateopt.PackedParams: the gradient is the buffer's (the fixed
    gradients packed the same way), the step one AdamW update of one array."""
    import stateopt

    states, packed = _packed(shapes, 0, 0.05)
    grads = {key: buffer.value for key, buffer in _packed(shapes, 1, 1e-3)[1].items()}
    opt = stateopt.AdamW(lr=LR, weight_decay=WEIGHT_DECAY).register_trainable_weights(packed)
    buffer = packed['float32']
    return Runner('stateopt packed eager', lambda: opt.update(grads),
                  lambda: jax.block_until_ready(buffer.value), nbytes(opt.opt_state.value))


def stateopt_packed_train_runner(shapes) -> Runner:
    """The train step of :func:`stateopt_train_runner` on a stateopt.PackedParams in
    stateopt.donating_jit: the model reads its arrays as slices, the gradient is the buffer's."""
    import brainstate

    import stateopt

    states, packed = _packed(shapes, 0, 0.05)
    opt = stateopt.AdamW(lr=LR, weight_decay=WEIGHT_DECAY).register_trainable_weights(packed)
    loss = brainstate.transform.grad(lambda: _half_square([s.value for s in states.values()]),
                                     grad_states=packed)

    @stateopt.donating_jit
    def train():
        opt.update(loss())

    buffer = packed['float32']
    return Runner('train step: stateopt packed donating_jit', train,
                  lambda: jax.block_until_ready(buffer.value), nbytes(opt.opt_state.value))


def braintools_runner(shapes, jit: bool) -> Runner:
    import brainstate
    import braintools

    states = {str(i): brainstate.ParamState(jnp.asarray(a)) for i, a in enumerate(arrays(shapes, 0, 0.05))}
    grads = gradients(shapes)
    opt = braintools.optim.AdamW(lr=LR, weight_decay=WEIGHT_DECAY)
    opt.register_trainable_weights(states)
    update = brainstate.transform.jit(opt.update) if jit else opt.update
    first = states['0']

    return Runner(f'braintools.optim {"brainstate jit" if jit else "eager"}', lambda: update(grads),
                  lambda: jax.block_until_ready(first.value), nbytes(opt.opt_state.value))


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

    return Runner('flax.nnx.Optimizer nnx.jit', lambda: update(optimizer, model, grads),
                  lambda: jax.block_until_ready(model.p0[...]), nbytes(nnx.state(optimizer, nnx.OptState)))


def torch_runner(shapes, kind: str) -> Runner:
    """torch.optim.AdamW (``kind``: 'foreach' or 'fused') on the device jax runs on: CUDA next to a GPU."""
    import torch

    cuda = jax.devices()[0].platform == 'gpu' and torch.cuda.is_available()
    device = 'cuda' if cuda else 'cpu'
    params = [torch.nn.Parameter(torch.from_numpy(a).to(device)) for a in arrays(shapes, 0, 0.05)]
    for p, g in zip(params, arrays(shapes, 1, 1e-3)):
        p.grad = torch.from_numpy(g).to(device)
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, **{kind: True})
    opt.step()
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                      if isinstance(t, torch.Tensor))
    return Runner(f'torch.optim.AdamW {kind}', opt.step, torch.cuda.synchronize if cuda else (lambda: None),
                  state_bytes)


PEERS = {
    'braintools': lambda shapes: [braintools_runner(shapes, False), braintools_runner(shapes, True)],
    'flax': lambda shapes: [flax_runner(shapes)],
    'torch': lambda shapes: [torch_runner(shapes, 'foreach'), torch_runner(shapes, 'fused')],
}


def copy_runner(shapes) -> Runner:
    """The bandwidth reference: a pass reading and writing as many float32 values as the parameters.

    It is ``x + 1`` with ``x`` donated: a device-to-device copy's traffic (read once, write once)
    into a buffer that already exists, as the donated update writes its own. A copy into a new
    buffer would also time the allocation (on a CPU, the first touch of fresh pages: several
    times the copy itself).
    """
    step = jax.jit(lambda x: x + 1.0, donate_argnums=0)
    box = [step(jnp.zeros(sum(int(np.prod(s)) for s in shapes), jnp.float32))]

    def launch():
        box[0] = step(box[0])

    return Runner(COPY, launch, lambda: jax.block_until_ready(box[0]), 0)


COPY = 'device copy (in place)'


def build(shapes, announce: bool, large: bool = False, peers: bool = True) -> list[Runner]:
    """Every runner for ``shapes`` (for a set of :data:`LARGE_SETS`, the few that fit), the copy last."""
    if large:
        runners = [optax_runner(shapes, donate=True), stateopt_runner(shapes, 'eager')]
        # on a CPU, torch's copy of the arrays would not fit next to the others
        if jax.devices()[0].platform != 'cpu' and _installed('torch', announce):
            runners.append(torch_runner(shapes, 'fused'))
        return runners + [copy_runner(shapes)]
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
        stateopt_packed_runner(shapes),
        stateopt_packed_train_runner(shapes),
    ]
    for peer, make in PEERS.items() if peers else ():
        if _installed(peer, announce):
            runners.extend(make(shapes))
    return runners + [copy_runner(shapes)]


def _installed(peer: str, announce: bool) -> bool:
    try:
        __import__({'braintools': 'braintools', 'flax': 'flax.nnx', 'torch': 'torch'}[peer])
    except ImportError:
        if announce:
            print(f'  ({peer} is not installed: skipped)')
        return False
    return True


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
                for _ in range(per_round):        # latency: each step waited for
                    start = time.perf_counter()
                    runner.step()
                    runner.times.append(time.perf_counter() - start)
                start = time.perf_counter()       # throughput: the same number launched, one wait
                for _ in range(per_round):
                    runner.launch()
                runner.wait()
                runner.throughput.append((time.perf_counter() - start) / per_round)
    merged = instances[0]
    for runner, *others in zip(*instances):
        runner.times.extend(t for other in others for t in other.times)
        runner.throughput.extend(t for other in others for t in other.throughput)
    return merged


#: The sets where stateopt must match torch's fused AdamW, and those where it must stay at raw optax.
TORCH_SETS = ('100 x 64x64', '1000 leaves')
#: The sets of small arrays only, which the packed layout is for: there its whole train step is a target.
#: With large arrays a packed train step builds the gradient as a new buffer (on a CPU, fresh pages).
SMALL_ARRAY_SETS = ('tiny 6 x 16', *TORCH_SETS)
LARGE_LIMIT_SETS = ('4 x 1024x2048', '8 x 8192x8192')


def targets_of(name: str, median: dict) -> dict:
    """``{target: (ratio, limit)}`` for the runners of one set that were measured."""
    base = median['optax jax.jit donated']
    # the train step under brainstate.transform.jit is reported in the runner table, not as a target:
    # its cost over raw jax.jit is brainstate's per-call work, and stateopt.donating_jit is the drop-in
    # the targets hold to
    ratios = {
        'eager update / optax jit donated': ('stateopt eager', base, 1.10),
        'train step in donating_jit / optax jit donated': (
            'train step: stateopt donating_jit', median.get('train step: optax jax.jit donated'), 1.10),
        '4 groups / 1 group (eager update)': ('stateopt eager (4 groups)', median['stateopt eager'], 1.10),
    }
    packed_limit = 1.02 if name in LARGE_LIMIT_SETS else 1.10
    ratios['packed: eager update / optax jit donated'] = ('stateopt packed eager', base, packed_limit)
    if name in SMALL_ARRAY_SETS:
        ratios['packed: train step in donating_jit / optax jit donated'] = (
            'train step: stateopt packed donating_jit', median.get('train step: optax jax.jit donated'), 1.10)
    if name in TORCH_SETS:
        ratios['eager update / torch fused'] = ('stateopt eager', median.get('torch.optim.AdamW fused'), 1.00)
        ratios['packed: eager update / torch fused'] = (
            'stateopt packed eager', median.get('torch.optim.AdamW fused'), 1.00)
    if name in LARGE_LIMIT_SETS:
        ratios['eager update / optax jit donated (large arrays)'] = ('stateopt eager', base, 1.02)
    return {label: (median[runner] / reference, limit) for label, (runner, reference, limit) in ratios.items()
            if runner in median and reference}


def report(name: str, shapes, runners: list[Runner]) -> dict:
    size = sum(int(np.prod(s)) for s in shapes)
    median = {r.name: statistics.median(r.times) * 1e3 for r in runners}
    throughput = {r.name: statistics.median(r.throughput) * 1e3 for r in runners}
    base = median['optax jax.jit donated']
    print(f'\n{name}: {len(shapes)} leaves, {size / 1e6:.2f}M parameters, '
          f'{len(runners[0].times)} timed steps per runner')
    print(f'  {"runner":38s} {"ms/step":>9s} {"x optax":>8s} {"throughput":>11s} {"state MB":>9s} '
          f'{"first step s":>13s}')
    for r in runners:
        print(f'  {r.name:38s} {median[r.name]:9.3f} {median[r.name] / base:8.2f} {throughput[r.name]:11.3f} '
              f'{r.state_bytes / 2**20:9.2f} {r.first_step_s:13.3f}')
    # AdamW moves 7 float32 values per parameter (read p, g, m, v; write p, m, v); a copy moves 2
    copy_gbs = 2 * 4 * size / (throughput[COPY] * 1e-3) / 1e9
    bandwidth = {runner: 7 * 4 * size / (throughput[runner] * 1e-3) / 1e9
                 for runner in ('optax jax.jit donated', 'stateopt eager', 'stateopt packed eager',
                                'torch.optim.AdamW fused')
                 if runner in throughput}
    print('  update bandwidth (throughput): ' + ', '.join(
        f'{runner} {gbs:.1f} GB/s ({gbs / copy_gbs:.0%} of a copy)' for runner, gbs in bandwidth.items())
        + f'; device copy {copy_gbs:.1f} GB/s')
    targets = targets_of(name, median)
    for label, (ratio, limit) in targets.items():
        print(f'  target {label:48s} {ratio:5.2f}  {"OK" if ratio <= limit else f"OVER {limit:.2f}"}')
    return {'leaves': len(shapes), 'params': size, 'median_ms': median, 'throughput_ms': throughput,
            'targets': {label: ratio for label, (ratio, _) in targets.items()},
            'limits': {label: limit for label, (_, limit) in targets.items()},
            'bandwidth_gbs': {**bandwidth, COPY: copy_gbs},
            'state_bytes': {r.name: r.state_bytes for r in runners},
            'first_step_s': {r.name: r.first_step_s for r in runners}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=90, help='timed steps per runner and set')
    parser.add_argument('--rounds', type=int, default=6, help='interleaved rounds')
    parser.add_argument('--instances', type=int, default=2, help='instances of each runner')
    parser.add_argument('--sets', help='comma-separated set names (default: all; on a CPU, all but '
                                       'the 537M-parameter set, which needs 20 GB)')
    parser.add_argument('--quick', action='store_true', help='10 steps in 2 rounds')
    parser.add_argument('--no-peers', action='store_true',
                        help='only optax and stateopt (for the per-call set: the threads of a peer '
                             'in the same process disturb a 30 us call)')
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--add-to', action='store_true',
                        help='add the sets measured to those already in the --json file')
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.instances = 12, 2, 1
    if args.sets is None:
        on_cpu = jax.devices()[0].platform == 'cpu'
        args.sets = ','.join(name for name in PARAM_SETS if not (on_cpu and name in LARGE_SETS))
    print(f'AdamW step benchmark: jax {jax.__version__} on {jax.devices()[0].platform}, '
          f'{platform.processor() or platform.machine()}, Python {platform.python_version()}')
    results = {}
    for name in args.sets.split(','):
        shapes = PARAM_SETS[name]
        large = name in LARGE_SETS
        instances = [build(shapes, announce=i == 0, large=large, peers=not args.no_peers)
                     for i in range(1 if large else args.instances)]
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
        data = {'machine': machine, 'results': results, 'peak_mb': peak, 'argv': argv}
        if args.add_to and os.path.exists(args.json):
            with open(args.json) as f:
                data = json.load(f)
            data['results'].update(results)
            data.setdefault('added', []).append({'argv': [a for a in argv if a != '--add-to'],
                                                 'peak_mb': peak, 'date': machine['date']})
        with open(args.json, 'w') as f:
            json.dump(data, f, indent=1)


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
