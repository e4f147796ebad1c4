"""Run by test_sharding.py in a process of its own, with 8 fake CPU devices: every optimizer of the
catalogue on parameters sharded over a (2, 4) mesh, once with its state sharded as the parameters
(``state_sharding=None``) and once with ZeRO-1 (``state_sharding='data'`` for one param group, a
function for the other). Prints one JSON line: for each row and layout, the places where an
optimizer State was found off the mesh or a moment without the sharding it should have, and how far
its params ended from the same run unsharded."""

import functools
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
# ZeRO-1: shapes the 'data' axis (2) divides; w's moments go to P('data', 'model') (the first dimension
# w does not shard), b's (replicated) to P('data'), the sharding the second group's function returns
ZERO_SHAPES = {'w': (4, 8), 'b': (6,)}
ZERO_SPECS = {'w': P('data', 'model'), 'b': P('data')}


def zero_b(name, value):
    """The second group's state_sharding: b's state split over 'data'."""
    assert name == 'b' and value.shape == ZERO_SHAPES['b'], (name, value.shape)
    return NamedSharding(MESH, P('data'))


def sharded_params(seed=0, shapes=SHAPES):
    states = make_params(seed, shapes)
    for key, state in states.items():
        state.value = jax.device_put(state.value, NamedSharding(MESH, SPECS[key]))
    return states


def off_mesh(opt, moment: str, shapes=SHAPES, specs=SPECS) -> list[str]:
    """Where a State of ``opt`` is off the mesh, or an array of a parameter's shape lacks ``specs``."""
    found = []
    expected = {shapes[key]: spec for key, spec in specs.items() if key == 'w' or shapes is ZERO_SHAPES}
    for path, state in brainstate.graph.states(opt).items():
        if '_static' in path:       # a Lookahead's base optimizer: only its settings are used
            continue
        for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(state.value)[0]:
            where = f'{moment}: {path}{jax.tree_util.keystr(leaf_path)}'
            sharding = getattr(leaf, 'sharding', None)
            if not isinstance(sharding, NamedSharding) or sharding.mesh != MESH:
                found.append(f'{where} on {sharding}')
            elif tuple(leaf.shape) in expected and sharding.spec != expected[tuple(leaf.shape)]:
                found.append(f'{where} has {sharding.spec}, not {expected[tuple(leaf.shape)]}')
    return found


def run(case, layout: str):
    """Train ``case`` on 'unsharded', 'sharded' or 'zero' parameters; (their values, problems found)."""
    shapes = ZERO_SHAPES if layout.startswith('zero') else SHAPES
    sharded = layout in ('sharded', 'zero')
    states = sharded_params(shapes=shapes) if sharded else make_params(shapes=shapes)
    grads = grad_sequence(shapes, 4, seed=1)
    zero = dict(state_sharding='data') if layout == 'zero' else {}
    opt = case.make(**zero).register_trainable_weights({'w': states['w']})
    if layout == 'zero':
        checked = functools.partial(off_mesh, shapes=ZERO_SHAPES, specs=ZERO_SPECS)
    else:
        checked = off_mesh
    problems = checked(opt, 'registered') if sharded else []
    opt.add_param_group({'b': states['b']}, **case.group, **(dict(state_sharding=zero_b) if zero else {}))
    problems += checked(opt, 'group added') if sharded else []

    def update(g):
        opt.update(g)

    as_arrays = [{k: jnp.asarray(v) for k, v in g.items()} for g in grads]
    update(as_arrays[0])
    problems += checked(opt, 'eager step') if sharded else []
    brainstate.transform.jit(update)(as_arrays[1])
    problems += checked(opt, 'jit step') if sharded else []
    stateopt.donating_jit(update)(as_arrays[2])
    problems += checked(opt, 'donating_jit step') if sharded else []
    opt.load_state_dict(jax.tree.map(np.asarray, opt.state_dict()))
    problems += checked(opt, 'state dict loaded') if sharded else []
    opt.param_groups[1]['lr'] = 0.5 * float(opt.param_groups[1]['lr'])
    problems += checked(opt, 'lr assigned') if sharded else []
    stacked = {k: jnp.stack([g[k] for g in as_arrays[3:]]) for k in shapes}
    brainstate.transform.jit(lambda gs: brainstate.transform.for_loop(update, gs))(stacked)
    problems += checked(opt, 'for_loop') if sharded else []
    if not any(group.lr_schedule is not None for group in opt.param_groups):   # a scheduler can drive it
        sched = stateopt.StepLR(opt, step_size=1, gamma=0.5)
        sched.step()
        problems += checked(opt, 'scheduler step') if sharded else []
        problems += checked(sched, 'the scheduler\'s own States') if sharded else []

        def update_and_step(g):
            opt.update(g)
            sched.step()

        brainstate.transform.jit(update_and_step)(as_arrays[0])
        problems += checked(opt, 'scheduler stepped in jit') if sharded else []
    return values(states), problems


def main():
    report = {}
    for case in CASES + GROUP_CASES:
        for layout, reference in (('sharded', 'unsharded'), ('zero', 'zero-unsharded')):
            got, problems = run(case, layout)
            want, _ = run(case, reference)
            report[f'{case.id}/{layout}'] = {
                'problems': problems[:5],
                'max_diff': max(float(np.max(np.abs(got[k] - want[k]))) for k in got),
                'scale': max(float(np.max(np.abs(want[k]))) for k in want)}
    print(json.dumps(report))


if __name__ == '__main__':
    main()
