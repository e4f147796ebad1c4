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


#: The ways a step can run: each compiles the same update differently.
MODES = ['eager', 'jit', 'for_loop', 'donating_jit']


def run_in_mode(opt, grads: list, mode: str) -> None:
    """``opt.update(g)`` for each dict of arrays ``g`` in ``grads``: eagerly, each in
    ``brainstate.transform.jit`` or ``stateopt.donating_jit``, or all in one ``for_loop``."""
    import stateopt

    def update(g):
        opt.update(g)

    if mode == 'eager':
        for g in grads:
            update(g)
    elif mode in ('jit', 'donating_jit'):
        step = (brainstate.transform.jit if mode == 'jit' else stateopt.donating_jit)(update)
        for g in grads:
            step(g)
    else:
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *grads)
        brainstate.transform.jit(lambda gs: brainstate.transform.for_loop(update, gs))(stacked)


def assert_same(a, b) -> None:
    """Bit-identical pytrees.

    Only for values no arithmetic produced differently: stored and loaded, held and copied, or
    computed twice by the same compiled code on the same inputs (a resume runs the same step).
    Results of different compiled code (eager, jit, for_loop, scan, another machine) or of a
    reference are compared with `assert_close_f32`.
    """
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


#: float32's machine epsilon, 2**-23: one correctly rounded operation is off by at most half of it.
F32_EPS = float(np.finfo(np.float32).eps)
#: The relative tolerance one step of float32 arithmetic (an optimizer update, a forward pass) adds.
F32_STEP_RTOL = 16 * F32_EPS


def f32_tolerances(steps: int = 1, scale: float = 1.0) -> dict:
    """The ``rtol`` and ``atol`` of `assert_close_f32`, as keywords for ``np.testing.assert_allclose``."""
    rtol = steps * F32_STEP_RTOL
    return dict(rtol=rtol, atol=rtol * scale)


def _is_exact(leaf) -> bool:
    return not np.issubdtype(np.asarray(leaf).dtype, np.inexact)


def assert_close_f32(actual, desired, *, steps: int = 1, scale: float | None = None,
                     err_msg: str = '') -> None:
    """Assert that two float32 results agree to float32 rounding, ``steps`` steps of arithmetic apart.

    The tolerance for results of different compiled code: eager, jit, for_loop or scan, another
    fusion, another CPU or a GPU, and a float64 reference or a torch trajectory. Each float32
    operation rounds to within half an ulp (``F32_EPS / 2`` relative), but two compilations
    contract multiply-adds, order sums and approximate ``exp``/``tanh``/``rsqrt`` differently, so
    a step of a few dozen operations (an optimizer update, a forward pass) may land some ulps
    away, and the differences of successive steps add up: ``rtol = steps * 16 * F32_EPS``
    (1.9e-6 per step). The same budget covers float32 hyper-parameters against a float64
    reference (``1 - beta2`` for a float32 ``beta2 = 0.999`` is 1.3e-5 off, which moves Adam's
    first step by 6e-6 of the lr).

    A value that cancels towards zero keeps the absolute error of the operands it came from, so
    ``atol = rtol * scale``, where ``scale`` is the magnitude of those operands: by default the
    largest magnitude in each desired array; pass it where every entry is a cancellation of
    larger terms (a model output near zero from activations of order 1). Matmuls run at float32
    precision in every test (the ``_float32_matmuls`` fixture), so a GPU's TF32 does not count.

    Integer and boolean leaves (step counts) must be equal, and the pytrees must have the same
    structure (a list is a pytree too: compare ``np.asarray(values)``).

    Parameters
    ----------
    actual, desired : array or pytree of arrays
        The float32 result, and the result or reference it must match.
    steps : int
        How many steps of arithmetic (optimizer updates, forward passes) separate the two.
    scale : float, optional
        The magnitude of the operands the results were computed from.
    err_msg : str
        Prefixed to each failure message, with the leaf's path.
    """
    paths_and_leaves, tree_a = jax.tree_util.tree_flatten_with_path(actual)
    leaves_d, tree_d = jax.tree.flatten(desired)
    assert tree_a == tree_d, f'{err_msg} structures differ: {tree_a} and {tree_d}'.strip()
    for (path, a), d in zip(paths_and_leaves, leaves_d):
        what = f'{err_msg} {jax.tree_util.keystr(path)}'.strip()
        a, d = np.asarray(a), np.asarray(d)
        if _is_exact(a) and _is_exact(d):
            np.testing.assert_array_equal(a, d, err_msg=what)
            continue
        leaf_scale = (float(np.max(np.abs(d))) if d.size else 0.0) if scale is None else scale
        np.testing.assert_allclose(a, d, err_msg=what, **f32_tolerances(steps, leaf_scale))


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


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Every test runs its float32 matmuls at float32 precision.

    The tests check algorithms (against float64 references, and across compiled paths), not a
    backend's matmul precision: a GPU's default float32 matmul rounds its inputs to 10
    significant bits (TF32), errors of 1e-3 in Muon's Newton-Schulz iterations and in every
    forward pass. XLA's CPU matmuls are float32 whatever the setting.
    """
    with jax.default_matmul_precision('highest'):
        yield
