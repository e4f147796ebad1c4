"""Run by test_sharding.py in a process of its own, with 8 fake CPU devices: every optimizer of the
catalogue on parameters sharded over a (2, 4) mesh. Prints one JSON line: for each row, the places
where an optimizer State was found off the mesh or a moment without its parameter's sharding, and
how far its params ended from the same run unsharded."""

import json
import os
import sys

if __name__ == '__main__':      # before jax starts; imported (by pytest's doctest collection) it is inert
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
    sys.path.insert(0, os.path.dirname(__file__))

import brainstate  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from catalogue import CASES, GROUP_CASES, grad_sequence  # noqa: E402
from conftest import SHAPES, make_params, values  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import stateopt  # noqa: E402

MESH = Mesh(np.array(jax.devices()).reshape(2, 4), ('data', 'model')) if len(jax.devices()) >= 8 else None
SPECS = {'w': P(None, 'model'), 'b': P()}       # w is (3, 4): its columns over 'model'; b is (5,)


def sharded_params(seed=0):
    states = make_params(seed)
    for key, state in states.items():
        state.value = jax.device_put(state.value, NamedSharding(MESH, SPECS[key]))
    return states


def off_mesh(opt, moment: str) -> list[str]:
    """Where a State of ``opt`` is off the mesh, or a (3, 4) array lacks w's sharding."""
    found = []
    for path, state in brainstate.graph.states(opt).items():
        if '_static' in path:       # a Lookahead's base optimizer: only its settings are used
            continue
        for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(state.value)[0]:
            where = f'{moment}: {path}{jax.tree_util.keystr(leaf_path)}'
            sharding = getattr(leaf, 'sharding', None)
            if not isinstance(sharding, NamedSharding) or sharding.mesh != MESH:
                found.append(f'{where} on {sharding}')
            elif tuple(leaf.shape) == SHAPES['w'] and sharding.spec != SPECS['w']:
                found.append(f'{where} has {sharding.spec}, not w\'s {SPECS["w"]}')
    return found


def run(case, sharded: bool):
    states = sharded_params() if sharded else make_params()
    grads = grad_sequence(SHAPES, 4, seed=1)
    opt = case.make().register_trainable_weights({'w': states['w']})
    problems = off_mesh(opt, 'registered') if sharded else []
    opt.add_param_group({'b': states['b']}, **case.group)
    problems += off_mesh(opt, 'group added') if sharded else []

    def update(g):
        opt.update(g)

    as_arrays = [{k: jnp.asarray(v) for k, v in g.items()} for g in grads]
    update(as_arrays[0])
    problems += off_mesh(opt, 'eager step') if sharded else []
    brainstate.transform.jit(update)(as_arrays[1])
    problems += off_mesh(opt, 'jit step') if sharded else []
    stateopt.donating_jit(update)(as_arrays[2])
    problems += off_mesh(opt, 'donating_jit step') if sharded else []
    opt.load_state_dict(jax.tree.map(np.asarray, opt.state_dict()))
    problems += off_mesh(opt, 'state dict loaded') if sharded else []
    opt.param_groups[1]['lr'] = 0.5 * float(opt.param_groups[1]['lr'])
    problems += off_mesh(opt, 'lr assigned') if sharded else []
    stacked = {k: jnp.stack([g[k] for g in as_arrays[3:]]) for k in SHAPES}
    brainstate.transform.jit(lambda gs: brainstate.transform.for_loop(update, gs))(stacked)
    problems += off_mesh(opt, 'for_loop') if sharded else []
    if not any(group.lr_schedule is not None for group in opt.param_groups):   # a scheduler can drive it
        sched = stateopt.StepLR(opt, step_size=1, gamma=0.5)
        sched.step()
        problems += off_mesh(opt, 'scheduler step') if sharded else []

        def update_and_step(g):
            opt.update(g)
            sched.step()

        brainstate.transform.jit(update_and_step)(as_arrays[0])
        problems += off_mesh(opt, 'scheduler stepped in jit') if sharded else []
    return values(states), problems


def main():
    report = {}
    for case in CASES + GROUP_CASES:
        got, problems = run(case, sharded=True)
        want, _ = run(case, sharded=False)
        report[case.id] = {'problems': problems[:5],
                           'max_diff': max(float(np.max(np.abs(got[k] - want[k]))) for k in SHAPES),
                           'scale': max(float(np.max(np.abs(want[k]))) for k in SHAPES)}
    print(json.dumps(report))


if __name__ == '__main__':
    main()
