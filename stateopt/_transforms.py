"""Algorithm transforms optax lacks: torch's update rules as update *directions*.

Each is an ``optax.GradientTransformation`` whose ``update`` returns the direction
``d`` of the shared chain's ``param - lr * d`` (see :mod:`stateopt._chain`). Its
hyper-parameters may be traced scalars; choices that change the state's structure
are taken in ``init``, from the values the param group was created with, and read
back from the state in ``update``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ['one_minus_power', 'TorchSGDState', 'scale_by_torch_sgd', 'TorchAdamState', 'scale_by_torch_adam']


def _zeros_like(tree: Any) -> Any:
    return jax.tree.map(jnp.zeros_like, tree)


def one_minus_power(beta: Any, step: Any) -> jax.Array:
    """``1 - beta ** step`` accurately in float32 (bias corrections with beta near 1).

    Computed as ``-expm1(step * log(beta))``: the direct form loses most digits of
    ``1 - 0.999 ** t`` to cancellation and to ``pow``'s rounding.
    """
    return -jnp.expm1(step * jnp.log(jnp.asarray(beta, jnp.float32)))


class TorchSGDState(NamedTuple):
    """State of :func:`scale_by_torch_sgd`: the steps that used the momentum buffer, and the buffer."""

    count: jax.Array       # 0 until the first step with momentum != 0 (torch's buffer is None until then)
    momentum_buffer: Any   # None when the group was created with momentum == 0


def scale_by_torch_sgd(
    momentum: Any = 0.0, dampening: Any = 0.0, nesterov: bool = False
) -> optax.GradientTransformation:
    """torch's SGD momentum rule as a direction.

    With ``b`` the momentum buffer and ``g`` the (decayed) gradient::

        b = g   at the first step with momentum != 0 ;  then  b = momentum * b + (1 - dampening) * g
        d = g + momentum * b   (nesterov)   or   d = b

    and ``d = g`` at a step with ``momentum == 0``, which leaves the buffer as it is, as
    torch does. A state initialised with ``momentum == 0`` keeps no buffer (the
    optimizer gives it one when a scheduler may cycle the momentum).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms import scale_by_torch_sgd
    >>> tx = scale_by_torch_sgd(momentum=0.9)
    >>> g = {'w': jnp.ones(2)}
    >>> d, state = tx.update(g, tx.init(g))
    >>> d, state = tx.update(g, state)
    >>> d['w'].tolist()
    [1.899999976158142, 1.899999976158142]
    """

    def init_fn(params):
        buffer = None if momentum == 0 else _zeros_like(params)
        return TorchSGDState(jnp.zeros([], jnp.int32), buffer)

    def update_fn(updates, state, params=None):
        del params
        if state.momentum_buffer is None:
            return updates, state
        first = state.count == 0
        off = momentum == 0

        def buffer_of(g, b):
            return jnp.where(off, b, jnp.where(first, g, momentum * b + (1 - dampening) * g))

        buffer = jax.tree.map(buffer_of, updates, state.momentum_buffer)
        if nesterov:
            direction = jax.tree.map(lambda g, b: g + momentum * b, updates, buffer)
        else:
            direction = jax.tree.map(lambda g, b: jnp.where(off, g, b), updates, buffer)
        count = jnp.where(off, state.count, optax.safe_increment(state.count))
        return direction, TorchSGDState(count, buffer)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchAdamState(NamedTuple):
    """State of :func:`scale_by_torch_adam`."""

    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any  # None unless amsgrad


def scale_by_torch_adam(
    b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, amsgrad: bool = False
) -> optax.GradientTransformation:
    """torch's Adam rule (with its AMSGrad) as a direction.

    With ``t`` the step, ``m`` and ``v`` the moments::

        m_t = m_{t-1} + (1 - b1) (g_t - m_{t-1})       v_t = b2 v_{t-1} + (1 - b2) g_t^2
        v̂_t = max(v̂_{t-1}, v_t) if amsgrad else v_t
        d_t = m_t / (1 - b1^t) / (sqrt(v̂_t) / sqrt(1 - b2^t) + eps)

    torch's AMSGrad keeps the maximum of the raw second moment and bias-corrects it
    afterwards (optax's ``scale_by_amsgrad`` takes the maximum of the corrected one).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms import scale_by_torch_adam
    >>> tx = scale_by_torch_adam()
    >>> g = {'w': jnp.array([0.5, -2.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> [round(x, 6) for x in d['w'].tolist()]
    [1.0, -1.0]
    """

    def init_fn(params):
        return TorchAdamState(
            jnp.zeros([], jnp.int32),
            _zeros_like(params),
            _zeros_like(params),
            _zeros_like(params) if amsgrad else None,
        )

    def update_fn(updates, state, params=None):
        del params
        beta1, beta2 = jnp.asarray(b1, jnp.float32), jnp.asarray(b2, jnp.float32)
        count = optax.safe_increment(state.count)
        step = count.astype(jnp.float32)
        exp_avg = jax.tree.map(lambda m, g: m + (1 - beta1) * (g - m), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * g * g, state.exp_avg_sq, updates)
        if state.max_exp_avg_sq is None:
            max_sq, second = None, exp_avg_sq
        else:
            max_sq = jax.tree.map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq)
            second = max_sq
        bias1 = one_minus_power(beta1, step)
        bias2_sqrt = jnp.sqrt(one_minus_power(beta2, step))
        direction = jax.tree.map(
            lambda m, v: m / (jnp.sqrt(v) / bias2_sqrt + eps) / bias1, exp_avg, second
        )
        return direction, TorchAdamState(count, exp_avg, exp_avg_sq, max_sq)

    return optax.GradientTransformation(init_fn, update_fn)
