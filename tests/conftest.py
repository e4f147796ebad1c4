import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The fixture generators import torch, which is never a test dependency: they are
# scripts run by hand (see their docstrings), not test modules.
collect_ignore = ['fixtures']

SHAPES = {'w': (3, 4), 'b': (5,)}


def make_params(seed: int = 0, shapes: dict = SHAPES) -> dict:
    """A dict of ParamStates with fixed random float32 values."""
    rng = np.random.default_rng(seed)
    return {k: brainstate.ParamState(jnp.asarray(rng.standard_normal(s), jnp.float32))
            for k, s in shapes.items()}


def values(states: dict) -> dict:
    """The current numpy values of a dict of States."""
    return {k: jax.tree.map(np.asarray, s.value) for k, s in states.items()}


def snapshot(opt, states: dict) -> tuple:
    """Everything a failed call must leave unchanged, as numpy."""
    return (values(states), jax.tree.map(np.asarray, opt.opt_state.value),
            int(opt.step_count.value), [np.asarray(g['lr']) for g in opt.param_groups])


def assert_same(a, b) -> None:
    """Bit-identical pytrees."""
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class MLP(brainstate.nn.Module):
    """A small two-layer perceptron with a `head`."""

    def __init__(self, n_in: int = 4, n_hidden: int = 8, n_out: int = 3):
        super().__init__()
        self.l1 = brainstate.nn.Linear(n_in, n_hidden)
        self.head = brainstate.nn.Linear(n_hidden, n_out)

    def __call__(self, x):
        return self.head(jax.nn.tanh(self.l1(x)))


@pytest.fixture
def mlp():
    brainstate.random.seed(0)
    return MLP()
