"""Run by test_multiprocess.py: data-parallel training over 8 CPU devices, as one of
``num_processes`` jax processes (2 processes of 4 devices, or 1 process of 8 for the reference).

    python multiprocess_check.py <process_id> <num_processes> <port> <out.json>

Every process builds the same MLP (replicated, ``P()``, on a mesh of all 8 devices with axis
``'data'``), feeds its slice of one global batch (sharded ``P('data')``), and trains 5 steps with
a stateopt AdamW (two param groups, a warm-up cosine scheduler, ZeRO-1 over ``'data'``) in a
``donating_jit`` step. Each process writes a JSON report to its ``out.json``: the shapes of the
moments' shards it holds, and what the checkpoint writers did with arrays it cannot read whole;
process 0 also writes the final parameters, the optimizer's state-dict arrays and the losses.
"""

import json
import os
import sys
import tempfile

import jax

DEVICES = 8

if __name__ == '__main__':      # before jax starts (brainstate's import starts it); imported, it is inert
    PROCESS_ID, NUM_PROCESSES = int(sys.argv[1]), int(sys.argv[2])
    jax.config.update('jax_num_cpu_devices', DEVICES // NUM_PROCESSES)
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    if NUM_PROCESSES > 1:
        jax.distributed.initialize(f'127.0.0.1:{sys.argv[3]}', NUM_PROCESSES, PROCESS_ID)

import brainstate  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import stateopt  # noqa: E402

STEPS = 5
BATCH, N_IN, N_HIDDEN, N_OUT = 32, 8, 16, 8       # every dimension divisible by the 8 devices


class MLP(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = brainstate.nn.Linear(N_IN, N_HIDDEN)
        self.head = brainstate.nn.Linear(N_HIDDEN, N_OUT)

    def __call__(self, x):
        return self.head(jax.nn.tanh(self.l1(x)))


def global_batch(mesh: Mesh) -> tuple:
    """The same global batch in every process, each giving the rows of its own devices."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((STEPS, BATCH, N_IN)).astype(np.float32)
    y = rng.standard_normal((STEPS, BATCH, N_OUT)).astype(np.float32)
    sharding = NamedSharding(mesh, P(None, 'data'))
    rows = BATCH // jax.process_count()
    mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
    return tuple(jax.make_array_from_process_local_data(sharding, array[:, mine], array.shape)
                 for array in (x, y))


def on_host(tree):
    """Every array of ``tree`` as a nested list, gathered from all processes (a collective)."""
    def fetch(leaf):
        if not isinstance(leaf, jax.Array):
            return leaf
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True)).tolist()

    return jax.tree.map(fetch, tree)


def shard_shapes(tree) -> dict:
    """``path: {'shape', 'spec', 'shards'}`` for each array of ``tree``: its global shape, its
    partition spec and the shapes of the shards this process holds."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): {
                'shape': list(leaf.shape), 'spec': str(leaf.sharding.spec),
                'shards': [list(shard.data.shape) for shard in leaf.addressable_shards]}
            for path, leaf in flat if isinstance(leaf, jax.Array)}


def save_error(target) -> str | None:
    """What ``stateopt.save_checkpoint`` raised for ``target``, as ``'Type: message'``, or None."""
    with tempfile.TemporaryDirectory() as directory:
        try:
            stateopt.save_checkpoint(os.path.join(directory, 'run.msgpack'), target)
        except Exception as error:
            return f'{type(error).__name__}: {error}'
    return None


def build(mesh: Mesh, seed: int) -> tuple:
    """The MLP (replicated on ``mesh``), its params, and AdamW with two param groups, a warm-up
    cosine scheduler and ZeRO-1 over 'data'."""
    brainstate.random.seed(seed)
    model = MLP()
    params = model.states(brainstate.ParamState)
    for state in params.values():       # a host value becomes one global array, the same in each process
        state.value = jax.tree.map(lambda v: jax.device_put(np.asarray(v), NamedSharding(mesh, P())),
                                   state.value)
    sched = stateopt.WarmupCosineSchedule(base_lr=1e-2, warmup_steps=2, total_steps=6,
                                          warmup_start_lr=2e-3)
    opt = stateopt.AdamW(lr=sched, weight_decay=1e-2, state_sharding='data')     # ZeRO-1 over the 8
    opt.register_trainable_weights(params)
    opt.add_param_group(model.head.states(brainstate.ParamState), lr=3e-3, weight_decay=0.0)
    return model, params, opt, sched


def orbax_round_trip(directory: str, mesh: Mesh, params, opt) -> bool:
    """Save the model and optimizer with OrbaxCheckpointManager from every process, restore them
    into a fresh model and optimizer, and say whether every array came back exactly."""
    _, fresh_params, fresh_opt, _ = build(mesh, seed=1)
    with stateopt.OrbaxCheckpointManager(os.path.join(directory, 'orbax'), async_save=False) as manager:
        manager.save(STEPS, {'model': params, 'optimizer': opt})
        manager.restore({'model': fresh_params, 'optimizer': fresh_opt})
    saved = on_host(({k: s.value for k, s in params.items()}, opt.state_dict()['state']))
    restored = on_host(({k: s.value for k, s in fresh_params.items()}, fresh_opt.state_dict()['state']))
    return saved == restored and int(fresh_opt.step_count.value) == STEPS


def main(out: str) -> None:
    assert jax.device_count() == DEVICES, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ('data',))
    model, params, opt, sched = build(mesh, seed=0)

    def loss_fn(x, y):
        return jnp.mean((model(x) - y) ** 2)

    @stateopt.donating_jit
    def train_step(x, y):
        grads, loss = brainstate.transform.grad(loss_fn, grad_states=params, return_value=True)(x, y)
        opt.update(grads)
        sched.step()
        return loss

    xs, ys = global_batch(mesh)
    losses = [train_step(xs[step], ys[step]) for step in range(STEPS)]

    state_dict = opt.state_dict()
    report = {
        'process_count': jax.process_count(),
        'local_devices': jax.local_device_count(),
        'moment_shards': shard_shapes(state_dict['state']),
        'param_shards': shard_shapes({key: state.value for key, state in params.items()}),
        # the msgpack writer, given arrays this process cannot read whole
        'save_error_sharded_entry': save_error({'host': np.zeros(3, np.float32),
                                                'sharded': xs[0]}),
        'save_error_model_and_optimizer': save_error({'model': params, 'optimizer': opt}),
    }
    directory = os.path.dirname(os.path.abspath(out))
    report['orbax_restored_exactly'] = orbax_round_trip(directory, mesh, params, opt)
    gathered = {                        # collectives: every process takes part
        'params': on_host({'/'.join(map(str, key)): state.value for key, state in params.items()}),
        'state_dict': on_host(state_dict),
        'losses': on_host(losses),
    }
    if jax.process_index() == 0:
        report.update(gathered)
    with open(out, 'w') as f:
        json.dump(report, f)


if __name__ == '__main__':
    main(sys.argv[4])
