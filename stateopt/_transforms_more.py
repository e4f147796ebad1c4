"""Transforms for the paper and newer optimizers, as update *directions*.

As in :mod:`stateopt._transforms`, ``update`` returns the direction ``d`` of the shared
chain's ``param - lr * d``. The transforms that take ``lr`` themselves return the whole
step ``param - new_param`` (their optimizers set ``_lr_in_algorithm``): Lookahead's
slow weights, schedule-free averaging and line searches need the learning rate inside.
Hyper-parameters may be traced scalars; only their structure is fixed at ``init``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import contrib

from .optimizers._common import one_minus_power

__all__ = [
    'negated', 'LookaheadState', 'scale_by_lookahead', 'ScheduleFreeState',
    'scale_by_schedule_free', 'schedule_free_eval_params', 'scale_by_lbfgs_search',
    'scale_by_muon_or_adam', 'AdanState', 'scale_by_adan',
]


def _copy(tree: Any) -> Any:
    """Fresh buffers, so that the state never shares an array with the params."""
    return jax.tree.map(jnp.copy, tree)


def negated(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """The step of a complete optax optimizer as a direction: ``d = -u`` for its update ``u``.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> from stateopt._transforms_more import negated
    >>> tx = negated(optax.sgd(0.5))
    >>> g = {'w': jnp.array([2.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> d['w'].tolist()
    [1.0]
    """
    tx = optax.with_extra_args_support(tx)

    def update_fn(updates, state, params=None, **extra_args):
        step, state = tx.update(updates, state, params, **extra_args)
        return jax.tree.map(jnp.negative, step), state

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)


class LookaheadState(NamedTuple):
    """State of :func:`scale_by_lookahead`: steps taken, slow weights, the fast direction's state."""

    count: jax.Array
    slow: Any
    fast_state: Any


def scale_by_lookahead(
    fast: optax.GradientTransformation, lr: Any, sync_period: int, alpha: Any
) -> optax.GradientTransformationExtraArgs:
    """Lookahead around the direction ``fast``, returning the step ``p - p_new``.

    The params are the fast weights ``θ``; ``φ`` are the slow weights (``φ_0 = θ_0``)::

        θ ← θ - lr * fast(g)                                  every step
        φ ← φ + alpha * (θ - φ) ;  θ ← φ                      every sync_period-th step

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> from stateopt._transforms_more import scale_by_lookahead
    >>> tx = scale_by_lookahead(optax.identity(), lr=1.0, sync_period=2, alpha=0.5)
    >>> p = {'w': jnp.array([0.0])}; state = tx.init(p)
    >>> for _ in range(2):
    ...     step, state = tx.update({'w': jnp.array([1.0])}, state, p)
    ...     p = {'w': p['w'] - step['w']}
    >>> p['w'].tolist()  # fast weights at -2, pulled half-way back to 0
    [-1.0]
    """
    fast = optax.with_extra_args_support(fast)

    def init_fn(params):
        return LookaheadState(jnp.zeros([], jnp.int32), _copy(params), fast.init(params))

    def update_fn(updates, state, params, **extra_args):
        direction, fast_state = fast.update(updates, state.fast_state, params, **extra_args)
        count = optax.safe_increment(state.count)
        sync = count % sync_period == 0

        def new_param(p, d, s):
            moved = p - lr * d
            return jnp.where(sync, s + alpha * (moved - s), moved)

        new = jax.tree.map(new_param, params, direction, state.slow)
        slow = jax.tree.map(lambda n, s: jnp.where(sync, n, s), new, state.slow)
        return jax.tree.map(jnp.subtract, params, new), LookaheadState(count, slow, fast_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class ScheduleFreeState(NamedTuple):
    """State of :func:`scale_by_schedule_free`."""

    count: jax.Array
    weight_sum: jax.Array  # sum of the averaging weights so far
    max_lr: jax.Array      # the largest learning rate seen
    z: Any                 # the base iterate
    base_state: Any


def scale_by_schedule_free(
    base: optax.GradientTransformation, lr: Any, b1: Any, weight_lr_power: Any
) -> optax.GradientTransformationExtraArgs:
    """Schedule-free averaging around the direction ``base``, returning ``y - y_new``.

    The params are ``y``, where gradients are taken; ``z`` is the base iterate and ``x``
    the average, at which to evaluate (:func:`schedule_free_eval_params`)::

        z ← z - lr * base(g(y)) ;  c = w_t / Σ_{i<=t} w_i with w_t = max_{i<=t} lr_i ** weight_lr_power
        x ← (1 - c) x + c z     ;  y = (1 - b1) z + b1 x

    ``y`` moves by ``(1 - b1 + b1 c) Δz - c (y - z)``, so a step with nothing to do (a
    vanishing ``lr``) leaves it bit-identical.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> from stateopt._transforms_more import scale_by_schedule_free
    >>> tx = scale_by_schedule_free(optax.identity(), lr=0.5, b1=0.9, weight_lr_power=2.0)
    >>> p = {'w': jnp.array([1.0])}
    >>> step, state = tx.update({'w': jnp.array([1.0])}, tx.init(p), p)
    >>> [round(float(v), 6) for v in (state.z['w'][0], p['w'][0] - step['w'][0])]  # z; y = z = x
    [0.5, 0.5]
    """
    base = optax.with_extra_args_support(base)

    def init_fn(params):
        dtype = jnp.result_type(*jax.tree.leaves(params)) if jax.tree.leaves(params) else jnp.float32
        zero = jnp.zeros([], dtype)
        return ScheduleFreeState(jnp.zeros([], jnp.int32), zero, zero, _copy(params), base.init(params))

    def update_fn(updates, state, params, **extra_args):
        direction, base_state = base.update(updates, state.base_state, params, **extra_args)
        max_lr = jnp.maximum(state.max_lr, lr).astype(state.max_lr.dtype)
        weight = max_lr ** weight_lr_power
        weight_sum = state.weight_sum + weight
        c = jnp.where(weight_sum > 0, weight / jnp.where(weight_sum > 0, weight_sum, 1), 0)

        new_z = jax.tree.map(lambda z, d: z - lr * d, state.z, direction)

        def moved(y, z, z_next):  # y - y_new, exactly 0 when z and y have not moved
            return (1 - b1 + b1 * c) * (z - z_next) + c * (y - z)

        step = jax.tree.map(moved, params, state.z, new_z)
        count = optax.safe_increment(state.count)
        return step, ScheduleFreeState(count, weight_sum, max_lr, new_z, base_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def schedule_free_eval_params(state: ScheduleFreeState, params: Any, b1: Any) -> Any:
    """The averaged point ``x = z + (y - z) / b1`` of :func:`scale_by_schedule_free`."""
    return jax.tree.map(lambda y, z: (z + (y - z) / b1).astype(y.dtype), params, state.z)


def scale_by_lbfgs_search(
    lr: Any, memory_size: int, scale_init_precond: bool,
    linesearch: optax.GradientTransformation | None,
) -> optax.GradientTransformationExtraArgs:
    """optax's L-BFGS direction, scaled by ``lr`` and then by the line search; the step ``p - p_new``.

    The line search gets the gradient it needs (``grad``) from the updates; the caller
    passes ``value`` (the loss at ``params``) and ``value_fn`` (the loss at any params).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_more import scale_by_lbfgs_search
    >>> tx = scale_by_lbfgs_search(0.5, memory_size=3, scale_init_precond=False, linesearch=None)
    >>> g = {'w': jnp.array([1.0, -1.0])}
    >>> step, _ = tx.update(g, tx.init(g), {'w': jnp.zeros(2)})
    >>> step['w'].tolist()  # no memory yet: lr * g
    [0.5, -0.5]
    """
    lbfgs = optax.lbfgs(lr, memory_size=memory_size, scale_init_precond=scale_init_precond,
                        linesearch=linesearch)

    def update_fn(updates, state, params, **extra_args):
        if linesearch is not None:
            extra_args = {**extra_args, 'grad': updates}
        step, state = lbfgs.update(updates, state, params, **extra_args)
        return jax.tree.map(jnp.negative, step), state

    def init_fn(params):
        if not jax.tree.leaves(params):  # optax's line searches cannot start on no params
            return optax.EmptyState()
        # strongly typed, as the updated state is: a weakly typed counter would recompile once
        return jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.result_type(leaf)), lbfgs.init(params))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _width_scaled(update: jax.Array) -> jax.Array:
    fan_in, fan_out = update.shape
    return update * max(1.0, fan_out / fan_in) ** 0.5


def scale_by_muon_or_adam(
    momentum: Any, nesterov: bool, ns_steps: int, eps: Any, adam_b1: Any, adam_b2: Any
) -> optax.GradientTransformation:
    """Muon's direction for matrices (2-D parameters), Adam's for every other parameter.

    Matrices: ``optax.contrib.scale_by_muon`` (momentum, then ``ns_steps`` Newton-Schulz
    iterations towards the nearest semi-orthogonal matrix) times
    ``sqrt(max(1, fan_out / fan_in))``; others: ``optax.scale_by_adam``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_more import scale_by_muon_or_adam
    >>> tx = scale_by_muon_or_adam(0.95, True, 5, 1e-8, 0.9, 0.999)
    >>> g = {'matrix': jnp.eye(2) * 3.0, 'bias': jnp.array([3.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> round(float(d['bias'][0]), 4), d['matrix'].shape  # Adam's first step is sign(g)
    (1.0, (2, 2))
    """

    def dimension_numbers(tree):
        return jax.tree.map(lambda _: contrib.MuonDimensionNumbers(), tree)

    def labels(params):
        return jax.tree.map(lambda p: 'muon' if jnp.ndim(p) == 2 else 'adam', params)

    muon = optax.chain(
        contrib.scale_by_muon(ns_steps=ns_steps, beta=momentum, eps=eps, nesterov=nesterov,
                              weight_dimension_numbers=dimension_numbers),
        optax.stateless(lambda updates, params: jax.tree.map(_width_scaled, updates)),
    )
    return optax.partition({'muon': muon, 'adam': optax.scale_by_adam(adam_b1, adam_b2, eps)}, labels)


class AdanState(NamedTuple):
    """State of :func:`scale_by_adan`."""

    count: jax.Array
    exp_avg: Any        # m
    exp_avg_diff: Any   # v
    exp_avg_sq: Any     # n
    prev_grad: Any


def scale_by_adan(b1: Any, b2: Any, b3: Any, eps: Any) -> optax.GradientTransformation:
    """Adan's direction (Xie et al., 2022, Algorithm 1, with ``b = 1 - β`` of the paper).

    With ``Δ_t = g_t - g_{t-1}`` (``Δ_1 = 0``) and bias corrections ``^``::

        m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) Δ ;  n = b3 n + (1 - b3) (g + b2 Δ)²
        d = (m̂ + b2 v̂) / (sqrt(n̂) + eps)

    ``optax.scale_by_adan`` weighs ``Δ`` by ``1 - b2`` instead of the paper's ``b2``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_more import scale_by_adan
    >>> tx = scale_by_adan(0.98, 0.92, 0.99, 1e-8)
    >>> g = {'w': jnp.array([2.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> round(float(d['w'][0]), 4)
    1.0
    """

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdanState(jnp.zeros([], jnp.int32), zeros, zeros, zeros, zeros)

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        first = state.count == 0
        diff = jax.tree.map(lambda g, prev: jnp.where(first, 0, g - prev), updates, state.prev_grad)
        exp_avg = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.exp_avg, updates)
        exp_avg_diff = jax.tree.map(lambda v, d: b2 * v + (1 - b2) * d, state.exp_avg_diff, diff)
        exp_avg_sq = jax.tree.map(lambda n, g, d: b3 * n + (1 - b3) * (g + b2 * d) ** 2,
                                  state.exp_avg_sq, updates, diff)
        corrections = [one_minus_power(beta, count) for beta in (b1, b2, b3)]

        def direction(m, v, n):
            return (m / corrections[0] + b2 * v / corrections[1]) / (jnp.sqrt(n / corrections[2]) + eps)

        directions = jax.tree.map(direction, exp_avg, exp_avg_diff, exp_avg_sq)
        return directions, AdanState(count, exp_avg, exp_avg_diff, exp_avg_sq, updates)

    return optax.GradientTransformation(init_fn, update_fn)
