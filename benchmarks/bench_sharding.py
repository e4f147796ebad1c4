"""Scaling out: the optimizer state each device holds with and without ZeRO-1, and orbax checkpoint times.

Run from the repository root:

    python benchmarks/bench_sharding.py [--set '4 x 1024x2048'] [--devices 8] [--steps 10]

AdamW on a parameter set of bench_optimizers.py (by default 4 x 1024x2048, 8.4M parameters),
data-parallel over a mesh of ``--devices`` devices (``('data',)``; on a CPU, fake devices:
``--xla_force_host_platform_device_count``), the parameters replicated on every device. Each
setting runs in a fresh process and reports, per device (the bytes of the shards device 0 holds):

- the parameters, the optimizer's state (moments, masters, the step count) and both together;
- the eager ``update`` time per call (on fake CPU devices every device shares the same cores:
  the time says nothing about a real mesh, only that the step runs);
- with orbax-checkpoint installed, the time ``stateopt.OrbaxCheckpointManager`` takes to save the
  parameters and the optimizer (waited for) and to restore them into a fresh model and optimizer.

Settings: float32 parameters with the state sharded as they are (``state_sharding=None``) and
with ZeRO-1 (``state_sharding='data'``); bfloat16 parameters with float32 master weights, both ways.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    'float32': ('float32', {}),
    'float32, ZeRO-1': ('float32', {'state_sharding': 'data'}),
    'bfloat16 + f32 masters': ('bfloat16', {'master_dtype': 'float32'}),
    'bfloat16 + f32 masters, ZeRO-1': ('bfloat16', {'master_dtype': 'float32', 'state_sharding': 'data'}),
}


def _device_bytes(tree, device) -> int:
    import jax
    return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
               for shard in leaf.addressable_shards if shard.device == device)


def _worker(name: str, set_name: str, steps: int, devices: int) -> dict:
    import brainstate
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import stateopt

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_optimizers import PARAM_SETS

    mesh = Mesh(np.array(jax.devices()[:devices]), ('data',))
    replicated = NamedSharding(mesh, P())
    dtype, settings = SETTINGS[name]
    settings = {key: jnp.dtype(value) if key.endswith('dtype') else value for key, value in settings.items()}
    rng = np.random.default_rng(0)
    shapes = PARAM_SETS[set_name]

    def model():
        return {f'p{i}': brainstate.ParamState(jax.device_put(jnp.asarray(rng.standard_normal(shape), dtype),
                                                              replicated)) for i, shape in enumerate(shapes)}

    states = model()
    opt = stateopt.AdamW(lr=1e-3, **settings).register_trainable_weights(states)
    grads = {k: jax.device_put(jnp.asarray(rng.standard_normal(s.value.shape) * 1e-2, dtype), replicated)
             for k, s in states.items()}
    for _ in range(2):
        opt.update(grads)
    jax.block_until_ready([s.value for s in states.values()])
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.update(grads)
        jax.block_until_ready([s.value for s in states.values()])
        times.append(time.perf_counter() - start)
    device = jax.devices()[0]
    held = [opt.opt_state.value, opt.step_count.value, *(s.value for s in opt._step_states().values())]
    result = {'params': sum(int(np.prod(shape)) for shape in shapes),
              'param MiB': _device_bytes([s.value for s in states.values()], device) / 2**20,
              'state MiB': _device_bytes(held, device) / 2**20, 'ms': statistics.median(times) * 1e3}
    if hasattr(stateopt, 'OrbaxCheckpointManager'):
        try:
            import orbax.checkpoint  # noqa: F401
        except ImportError:
            return result
        directory = tempfile.mkdtemp()
        try:
            manager = stateopt.OrbaxCheckpointManager(directory, async_save=False)
            start = time.perf_counter()
            manager.save(1, {'params': states, 'opt': opt})
            manager.wait()
            result['save s'] = time.perf_counter() - start
            fresh = model()
            fresh_opt = stateopt.AdamW(lr=1e-3, **settings).register_trainable_weights(fresh)
            start = time.perf_counter()
            manager.restore({'params': fresh, 'opt': fresh_opt})
            jax.block_until_ready([s.value for s in fresh.values()])
            result['restore s'] = time.perf_counter() - start
            result['exact'] = all(bool(jnp.array_equal(fresh[k].value, states[k].value)) for k in states)
            manager.close() if hasattr(manager, 'close') else None
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--set', default='4 x 1024x2048')
    parser.add_argument('--devices', type=int, default=8)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.set, args.steps, args.devices)))
        return
    env = dict(os.environ)
    if 'cpu' in env.get('JAX_PLATFORMS', 'cpu'):
        env['XLA_FLAGS'] = f'{env.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={args.devices}'
    print(f'AdamW on {args.set}, data-parallel over {args.devices} devices (parameters replicated); '
          f'per device, each setting in a fresh process')
    print(f'{"setting":32s} {"params MiB":>10s} {"state MiB":>10s} {"total MiB":>10s} {"ms/step":>8s} '
          f'{"orbax save s":>12s} {"restore s":>10s}')
    for name in SETTINGS:
        out = subprocess.run([sys.executable, __file__, '--worker', name, '--set', args.set,
                              '--steps', str(args.steps), '--devices', str(args.devices)],
                             capture_output=True, text=True, env=env)
        if out.returncode:
            print(f'{name:32s} failed: {out.stderr.strip().splitlines()[-1]}')
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        save = f'{r["save s"]:12.2f}' if 'save s' in r else f'{"-":>12s}'
        restore = f'{r["restore s"]:10.2f}' if 'restore s' in r else f'{"-":>10s}'
        print(f'{name:32s} {r["param MiB"]:10.1f} {r["state MiB"]:10.1f} '
              f'{r["param MiB"] + r["state MiB"]:10.1f} {r["ms"]:8.2f} {save} {restore}'
              + ('' if r.get('exact', True) else '  (restore NOT exact)'))


if __name__ == '__main__':
    main()
