"""Run by test_orbax.py in a process of its own, with 8 fake CPU devices: a model, an AdamW with two
groups and a scheduler, and an EMA, trained with parameters sharded over a (2, 4) mesh ('data',
'model'), saved with OrbaxCheckpointManager and restored into the same objects built on an (8,) mesh
('x') with other shardings. Prints one JSON line: how many arrays were restored, and every one that
differs from the saved value or lacks the sharding the target's array had."""

import json
import os
import sys

if __name__ == '__main__':      # before jax starts; imported (by pytest's doctest collection) it is inert
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'

import brainstate  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import stateopt  # noqa: E402

SHAPES = {'embed': (16, 8), 'hidden': (8, 8), 'head': (8, 4), 'bias': (8,)}
#: How each mesh shards each parameter: a (2, 4) mesh splits rows over 'data' and columns over
#: 'model'; the (8,) mesh splits another axis, or replicates.
SPECS_2X4 = {'embed': P('data', 'model'), 'hidden': P(None, 'model'), 'head': P('model', None), 'bias': P()}
SPECS_8 = {'embed': P('x', None), 'hidden': P('x'), 'head': P(), 'bias': P('x')}


def build(mesh: Mesh, specs: dict, seed: int):
    rng = np.random.default_rng(seed)
    params = {name: brainstate.ParamState(jax.device_put(
        jnp.asarray(rng.standard_normal(shape), jnp.float32), NamedSharding(mesh, specs[name])))
        for name, shape in SHAPES.items()}
    scheduler = stateopt.StepLR(base_lr=0.01, step_size=2, gamma=0.5)
    opt = stateopt.AdamW(lr=scheduler, weight_decay=1e-2).register_trainable_weights(
        {name: params[name] for name in ('embed', 'hidden', 'bias')})
    opt.add_param_group({'head': params['head']}, lr=0.003, weight_decay=0.0)
    ema = stateopt.EMA(params, decay=0.9)
    plain = jax.device_put(jnp.arange(8.0) + seed, NamedSharding(mesh, P(mesh.axis_names[-1])))
    return {'model': params, 'optimizer': opt, 'ema': ema, 'plain': plain}


def arrays(target: dict, tree: dict | None = None) -> dict:
    """Every array the target holds, by a readable name."""
    found = {f'model/{name}': state.value for name, state in target['model'].items()}
    for name, state in brainstate.graph.states(target['optimizer']).items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(state.value)[0]:
            found[f'optimizer/{name}{jax.tree_util.keystr(path)}'] = leaf
    for group, entries in enumerate(target['optimizer'].param_groups):
        for key in ('lr', 'weight_decay'):
            found[f'optimizer/group {group}/{key}'] = entries[key]
    found['ema/count'] = target['ema'].count.value
    found.update({f'ema/{name}': state.value for name, state in target['ema'].averages.items()})
    found['plain'] = (tree or target)['plain']
    return found


def train(target: dict, steps: int) -> None:
    params, opt, ema = target['model'], target['optimizer'], target['ema']

    @brainstate.transform.jit
    def step(scale):
        opt.update({name: jnp.cos(params[name].value * scale) for name in params})
        opt.lr_scheduler.step()
        ema.update()

    for index in range(steps):
        step(jnp.float32(index + 1))


def main(directory: str) -> None:
    devices = np.array(jax.devices())
    source = build(Mesh(devices.reshape(2, 4), ('data', 'model')), SPECS_2X4, seed=0)
    train(source, 3)
    with stateopt.OrbaxCheckpointManager(directory) as manager:
        manager.save(3, source)
    saved = {name: np.asarray(array) for name, array in arrays(source).items()}

    target = build(Mesh(devices, ('x',)), SPECS_8, seed=1)
    shardings = {name: array.sharding for name, array in arrays(target).items()}
    tree = stateopt.OrbaxCheckpointManager(directory).restore(target).tree
    problems = []
    restored = arrays(target, tree)
    if set(restored) != set(saved):
        problems.append(f'the arrays differ: {sorted(set(restored) ^ set(saved))}')
    for name, array in restored.items():
        if name not in saved:
            continue
        if not np.array_equal(np.asarray(array), saved[name]) or array.dtype != saved[name].dtype:
            problems.append(f'{name} is {np.asarray(array)!r}, saved {saved[name]!r}')
        if array.sharding != shardings[name]:
            problems.append(f'{name} has {array.sharding}, the target had {shardings[name]}')
    print(json.dumps({'restored': len(restored), 'problems': problems}))


if __name__ == '__main__':
    main(sys.argv[1])
