"""The one chain every optimizer runs: clip, maximize, L2 decay, algorithm, decay, lr.

Each optimizer only declares its algorithm (an optax ``GradientTransformation``
giving the update *direction*: descent is ``param - lr * direction``); this module
wraps it the same way for every optimizer, every param group and the functional API::

    g = clip_by_global_norm(g) ; g = clip(g, ±clip_value) ; g = -g if maximize
    g = g + weight_decay * p                       (weight_decay='coupled', L2)
    d, state = algorithm.update(g, state, p)
    p = p * (1 - lr * weight_decay) - lr * d       (weight_decay='decoupled')
    p = p - lr * d                                 (otherwise)
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

__all__ = ['chain_update', 'global_norm', 'clip_factor', 'cast_like']

Decay = Literal['coupled', 'decoupled', None]


def global_norm(grads: Any) -> jax.Array:
    """The L2 norm of all leaves of ``grads`` together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))


def clip_factor(norm: jax.Array, max_norm: Any) -> jax.Array:
    """The factor optax's ``clip_by_global_norm`` scales gradients by: ``max_norm / norm`` above the limit."""
    return jnp.where(norm < max_norm, 1.0, max_norm / norm)


def cast_like(new: Any, old: Any) -> Any:
    """``new`` with every leaf cast to the dtype of the matching leaf of ``old``."""
    return jax.tree.map(lambda n, o: jnp.asarray(n).astype(jnp.result_type(o)), new, old)


def chain_update(
    algorithm: optax.GradientTransformation,
    grads: Any,
    state: Any,
    params: Any,
    *,
    lr: Any,
    weight_decay: Any = 0.0,
    decay: Decay = None,
    maximize: bool = False,
    grad_clip_norm: Any = None,
    grad_clip_value: Any = None,
    norm: Any = None,
    extra_args: dict | None = None,
    scale_by_lr: bool = True,
) -> tuple[Any, Any]:
    """One update of ``params`` by the shared chain around ``algorithm``.

    Parameters
    ----------
    algorithm : optax.GradientTransformation
        The update direction (no learning rate, no sign flip).
    grads, state, params : pytree
        Gradients and parameters of the same structure, and ``algorithm``'s state.
    lr, weight_decay : scalar
        Learning rate and weight-decay coefficient (may be traced).
    decay : {'coupled', 'decoupled', None}
        How ``weight_decay`` enters: added to the gradient (L2, torch's Adam/SGD),
        or multiplied into the parameter (torch's AdamW), or not at all.
    maximize : bool
        Ascend instead of descend (torch's ``maximize``).
    grad_clip_norm, grad_clip_value : scalar or None
        Clip by global norm (``norm`` is that norm when it spans more than ``grads``,
        as with several param groups), then element-wise to ``[-value, value]``.
    extra_args : dict, optional
        Passed to ``algorithm.update`` (for example L-BFGS's ``value``).
    scale_by_lr : bool
        False when the algorithm's direction already includes the learning rate
        (then ``p - d``, and ``lr`` only scales decoupled decay).

    Returns
    -------
    (new_params, new_state), each leaf in the dtype it came in.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> from stateopt._chain import chain_update
    >>> p, s = chain_update(optax.identity(), {'w': jnp.ones(2)}, optax.EmptyState(),
    ...                     {'w': jnp.zeros(2)}, lr=0.5)
    >>> p['w'].tolist()
    [-0.5, -0.5]
    """
    if grad_clip_norm is not None:
        factor = clip_factor(global_norm(grads) if norm is None else norm, grad_clip_norm)
        grads = jax.tree.map(lambda g: g * factor.astype(g.dtype), grads)
    if grad_clip_value is not None:
        grads = jax.tree.map(lambda g: jnp.clip(g, -grad_clip_value, grad_clip_value), grads)
    if maximize:
        grads = jax.tree.map(jnp.negative, grads)
    if decay == 'coupled':
        grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
    algorithm = optax.with_extra_args_support(algorithm)
    direction, new_state = algorithm.update(grads, state, params, **(extra_args or {}))
    step = lr if scale_by_lr else 1.0
    if decay == 'decoupled':
        keep = 1.0 - lr * weight_decay
        new_params = jax.tree.map(lambda p, d: p * keep - step * d, params, direction)
    else:
        new_params = jax.tree.map(lambda p, d: p - step * d, params, direction)
    return cast_like(new_params, params), cast_like(new_state, state)
