"""What the algorithms of several families share: state helpers, bias corrections, checks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from .._hyper import WEIGHT_DECAY, Param, betas, check_number, flag, positive

__all__ = ['zeros_like', 'one_minus_power', 'f32', 'lerp', 'rms', 'map_unzip', 'pair', 'BETAS', 'EPS',
           'static_flag', 'copy_tree', 'negated', 'DECOUPLED_WEIGHT_DECAY', 'SWITCHED_WEIGHT_DECAY']


def zeros_like(tree: Any) -> Any:
    """A tree of zeros shaped like ``tree``."""
    return jax.tree.map(jnp.zeros_like, tree)


def one_minus_power(beta: Any, step: Any) -> jax.Array:
    """``1 - beta ** step`` accurately in float32 (bias corrections with beta near 1).

    Computed as ``-expm1(step * log(beta))``: the direct form loses most digits of
    ``1 - 0.999 ** t`` to cancellation and to ``pow``'s rounding.

    Examples
    --------
    >>> from stateopt.optimizers._common import one_minus_power
    >>> round(float(one_minus_power(0.999, 1)), 6)
    0.001
    """
    return -jnp.expm1(step * jnp.log(jnp.asarray(beta, jnp.float32)))


def copy_tree(tree: Any) -> Any:
    """``tree`` in fresh buffers, so that a state never shares an array with the params."""
    return jax.tree.map(jnp.copy, tree)


def negated(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """The step of a complete optax optimizer as a direction: ``d = -u`` for its update ``u``.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> from stateopt.optimizers._common import negated
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


def f32(value: Any) -> jax.Array:
    """``value`` as a float32 array."""
    return jnp.asarray(value, jnp.float32)


def lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """``start + weight * (end - start)``, as torch's ``lerp_`` computes it."""
    return start + weight * (end - start)


def rms(x: jax.Array) -> jax.Array:
    """The root mean square of ``x``."""
    return jnp.sqrt(jnp.mean(jnp.square(x)))


def map_unzip(function: Any, outputs: int, tree: Any, *rest: Any) -> tuple:
    """``jax.tree.map`` of a ``function`` returning ``outputs`` values: that many trees.

    ``rest`` may hold subtrees (a NamedTuple, say) where ``tree`` has leaves.
    """
    treedef = jax.tree.structure(tree)
    leaves = [treedef.flatten_up_to(t) for t in (tree, *rest)]
    results = [function(*args) for args in zip(*leaves)]
    return tuple(treedef.unflatten([result[i] for result in results]) for i in range(outputs))


def pair(name: str, value: Any, labels: tuple[str, str]) -> tuple[float, float]:
    """Two real numbers, as a tuple of floats."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f'{name} must be a pair ({labels[0]}, {labels[1]}), got {value!r}')
    return tuple(check_number(f'{name}[{i}]', item) for i, item in enumerate(value))


def static_flag(name: str, default: bool, doc: str) -> Param:
    """A flag fixed when a param group is created."""
    return Param(name, default, flag, doc, type='bool', dynamic=False)


#: The usual ``betas`` and ``eps`` declarations; optimizers give their own defaults.
BETAS = Param('betas', (0.9, 0.999), betas, 'The decay rates ``(beta1, beta2)`` of the running averages of '
              'the gradient and of its square.', type='tuple of float')
EPS = Param('eps', 1e-8, positive, 'Added to the denominator for numerical stability.')

#: torch's ``decoupled_weight_decay`` flag, and the ``weight_decay`` it switches (NAdam, RAdam).
DECOUPLED_WEIGHT_DECAY = static_flag(
    'decoupled_weight_decay', False,
    'Multiply ``p`` by ``1 - lr * weight_decay`` at each step instead of adding the L2 penalty.')
SWITCHED_WEIGHT_DECAY = WEIGHT_DECAY.but(
    doc='The weight-decay coefficient: an L2 penalty ``weight_decay * p`` added to the gradient, or '
        'decoupled (see ``decoupled_weight_decay``).')
