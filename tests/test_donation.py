"""Donation is invisible: no array a caller can reach through a public brainstate API is invalidated.

Eager steps and ``stateopt.donating_jit`` reuse the buffers of the States they write. A
caller may hold a State's value (``.value``), or a second State sharing it: brainstate's
``copy()``, ``replace()`` and ``to_state_ref()`` share the value without reading
``.value``. Each row holds one such thing for one State the step writes, runs two more
steps, and reads what it holds.
"""

import weakref

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stateopt

HOLDS = {
    'value': lambda state: state.value,
    'copy()': lambda state: state.copy(),
    'replace()': lambda state: state.replace(),
    'to_state_ref()': lambda state: state.to_state_ref(),
}


def _reachable_states(root) -> list:
    """Every brainstate State reachable from ``root``'s attributes, once each."""
    found, seen, stack = [], set(), [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, brainstate.State):
            found.append(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
        elif type(node).__module__.startswith('stateopt') and hasattr(node, '__dict__'):
            stack.extend(vars(node).values())
    return found


def _build():
    """SGD with momentum and a scheduler (so the step writes every kind of State)."""
    params = {'w': brainstate.ParamState(jnp.arange(3.0)),
              'tree': brainstate.ParamState({'a': jnp.ones(2), 'b': jnp.full(2, 2.0)})}
    sched = stateopt.StepLR(base_lr=0.1, step_size=1, gamma=0.5)
    opt = stateopt.SGD(lr=sched, momentum=0.9).register_trainable_weights(params)
    opt.add_param_group({'tree': params['tree']}, lr=0.2)
    grads = {'w': jnp.ones(3), 'tree': {'a': jnp.ones(2), 'b': jnp.ones(2)}}
    return params, opt, sched, grads


def _written_states(opt, sched) -> list:
    states = _reachable_states(opt)
    return states + [state for state in _reachable_states(sched) if state not in states]


def _cases():
    params, opt, sched, _ = _build()
    return [f'{type(state).__name__}#{index}' for index, state in enumerate(_written_states(opt, sched))]


@pytest.mark.parametrize('mode', ['eager', 'donating_jit'])
@pytest.mark.parametrize('hold', list(HOLDS))
@pytest.mark.parametrize('which', range(len(_cases())), ids=_cases())
def test_whatever_a_caller_holds_stays_valid(mode, hold, which):
    params, opt, sched, grads = _build()
    state = _written_states(opt, sched)[which]

    def train_step(grads):
        opt.update(grads)
        sched.step()

    step = train_step if mode == 'eager' else stateopt.donating_jit(train_step)
    step(grads)
    held = HOLDS[hold](state)
    expected = jax.tree.map(np.array, held.value if isinstance(held, (brainstate.State,
                                                                      brainstate.TreefyState)) else held)
    step(grads)
    step(grads)
    now = held.value if isinstance(held, (brainstate.State, brainstate.TreefyState)) else held
    for got, want in zip(jax.tree.leaves(now), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(got), want)     # readable, and what it was
    # the optimizer itself went on: SGD with momentum 0.9, lr 0.1 halved each step, on w
    lrs = [0.1, 0.05, 0.025]
    buffer, w = 0.0, np.arange(3.0, dtype=np.float32)
    for lr in lrs:
        buffer = 0.9 * buffer + 1.0 if buffer else 1.0
        w = w - np.float32(lr) * np.float32(buffer)
    np.testing.assert_allclose(np.asarray(params['w'].value), w, rtol=1e-6, atol=1e-6)


def test_the_first_step_donates_the_state_registration_made_and_copies_nothing(monkeypatch):
    """A kept copy of the moments would double the optimizer's memory at the first step (the peak a
    run is sized by): the state registration creates is held by nobody, so it is donated, not copied.
    Read through ``.value``, it is copied instead, and what was read stays valid."""
    import stateopt._donation as donation
    copies = []
    real = donation._copy
    monkeypatch.setattr(donation, '_copy', lambda leaf: copies.append(np.shape(leaf)) or real(leaf))
    params = {key: brainstate.ParamState(jnp.full((64, 32), float(i))) for i, key in enumerate('ab')}
    opt = stateopt.AdamW(lr=0.1, gradient_accumulation_steps=2, skip_nonfinite=True)
    opt.register_trainable_weights(params)
    opt.add_param_group({'c': brainstate.ParamState(jnp.ones(5))}, lr=0.5)
    # weak references: a strong one would hold the moments, and they would rightly be copied
    moments = [weakref.ref(leaf) for leaf in jax.tree.leaves(donation.RAW(opt.opt_state))
               if np.shape(leaf) == (64, 32)]
    grads = {'a': jnp.ones((64, 32)), 'b': jnp.ones((64, 32)), 'c': jnp.ones(5)}
    opt.update(grads)
    assert copies == [] and len(moments) == 4
    assert all(ref() is None or ref().is_deleted() for ref in moments)     # donated
    held = opt.opt_state.value          # a read: the next step copies what was read
    opt.update(grads)
    assert copies and not any(leaf.is_deleted() for leaf in jax.tree.leaves(held))


def test_compiling_a_train_step_does_not_make_its_first_call_copy_the_optimizer_state(monkeypatch):
    """Tracing a train step reads the optimizer's state through ``.value``, but those reads give
    tracers, which hold no buffer: the first ``donating_jit`` call donates the moments registration
    made instead of copying them (the copy set the peak memory of a run). A read outside the trace
    still makes the next call copy what was read."""
    import stateopt._donation as donation
    copies = []
    real = donation._copy
    monkeypatch.setattr(donation, '_copy', lambda leaf: copies.append(np.shape(leaf)) or real(leaf))
    params = {key: brainstate.ParamState(jnp.full((64, 32), float(i))) for i, key in enumerate('ab')}
    opt = stateopt.AdamW(lr=0.1).register_trainable_weights(params)
    moments = [weakref.ref(leaf) for leaf in jax.tree.leaves(donation.RAW(opt.opt_state))
               if np.shape(leaf) == (64, 32)]
    loss = brainstate.transform.grad(lambda: sum(jnp.sum(p.value ** 2) for p in params.values()),
                                     grad_states=params)

    @stateopt.donating_jit
    def train():
        opt.update(loss())

    train()
    assert copies == [] and len(moments) == 4
    assert all(ref() is None or ref().is_deleted() for ref in moments)     # donated
    held = opt.opt_state.value
    train()
    assert copies and not any(leaf.is_deleted() for leaf in jax.tree.leaves(held))
