"""Lookahead: fast steps of a base direction, pulled back to slow weights every few steps."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._groups import to_python
from .._hyper import (
    LR,
    REQUIRED,
    WEIGHT_DECAY,
    Hyperparameters,
    Param,
    is_traced,
    positive_int,
    unit_interval,
)
from .._optimizer import OPTIMIZER_SETTINGS, OptaxOptimizer, check_direction
from ._common import copy_tree
from ._loss import EvaluatesLoss

__all__ = ['Lookahead', 'LookaheadState', 'CompleteBase', 'scale_by_lookahead']

#: The settings of a stateopt base optimizer that Lookahead's own chain takes over, and their "off".
_CHAIN_SETTINGS = {'weight_decay': 0.0, 'weight_decay_mask': None, 'grad_clip_norm': None,
                   'grad_clip_value': None, 'maximize': False, 'decoupled_weight_decay': False}
#: The settings of the whole optimizer (loop and precision) Lookahead takes itself, and their "off".
_OWN_SETTINGS = {param.name: param.default for param in OPTIMIZER_SETTINGS}


def _fast_direction(name: str, value: Any) -> Any:
    """An optax direction transform, or a stateopt optimizer whose direction Lookahead can scale."""
    if isinstance(value, OptaxOptimizer):
        kind = type(value).__name__
        if type(value)._lr_in_algorithm or isinstance(value, EvaluatesLoss):
            raise ValueError(f'{name}: {kind} applies the learning rate (or a line search) itself, '
                             f'so Lookahead cannot scale its steps; use an optimizer lr scales, '
                             f'e.g. stateopt.Adam()')
        unused = [f'{key}={to_python(value.defaults[key])!r}' for key, off in _CHAIN_SETTINGS.items()
                  if value.defaults.get(key, off) != off]
        unused += [f'{key}={getattr(value, key)!r}' for key, off in _OWN_SETTINGS.items()
                   if key in type(value).hyperparameters.settings() and getattr(value, key) != off]
        default_lr = type(value).hyperparameters['lr'].default
        if value.schedulers or value.defaults['lr'] != default_lr:
            unused.append(f'lr={(value.schedulers or [to_python(value.defaults["lr"])])[0]!r}')
        if unused:
            raise ValueError(f'{name}: Lookahead takes only the update direction of {kind}, so its '
                             f'{", ".join(unused)} would not be used; build it without them (its '
                             f'default lr, weight_decay=0, no clipping) and give them to Lookahead')
        return value
    if not isinstance(value, optax.GradientTransformation):
        raise ValueError(f'{name} must be an optax direction transform (e.g. optax.scale_by_adam()), '
                         f'a complete optax optimizer (e.g. optax.adam(1e-3)) or a stateopt optimizer '
                         f'(e.g. stateopt.Adam()), got {type(value).__name__}')
    if isinstance(value, CompleteBase):
        return value
    try:
        check_direction(value)
    except ValueError:
        return CompleteBase(*value)
    return value


class CompleteBase(optax.GradientTransformationExtraArgs):
    """A complete optax optimizer given as Lookahead's base: its updates carry their own learning rate.

    Lookahead marks such a base (one whose updates point downhill, as ``optax.adam(1e-3)``'s
    do) with this type; it is the same ``init`` and ``update``.

    Examples
    --------
    >>> import optax
    >>> from stateopt.optimizers.lookahead import CompleteBase
    >>> isinstance(CompleteBase(*optax.sgd(0.1)), optax.GradientTransformation)
    True
    """

    __slots__ = ()


class Lookahead(OptaxOptimizer):
    r"""Lookahead (Zhang et al., 2019): fast steps, pulled back to slow weights every ``sync_period``.

    The params are the fast weights ``θ``, the slow weights ``φ`` start at ``θ``. With
    ``d`` the direction of ``base_optimizer`` for the gradient ``g`` (plus
    ``weight_decay * p``)::

        θ ← θ - lr * d                                         every step
        φ ← φ + alpha * (θ - φ) ;  θ ← φ                       every sync_period-th step

    ``base_optimizer`` is a direction, which ``lr`` (and a scheduler) scales: an optax
    transform such as ``optax.scale_by_adam()``, or a stateopt optimizer such as
    ``stateopt.Adam(betas=(0.9, 0.99))`` whose hyper-parameters shape the direction.
    Lookahead's own ``lr``, ``weight_decay``, clipping and ``maximize`` act on the fast
    steps; a stateopt optimizer carrying other values for them is refused.

    ``base_optimizer`` may also be a complete optax optimizer (``optax.adam(1e-3)``,
    whose updates point downhill), as in braintools: it then carries its own learning
    rate, the fast step is ``θ ← θ + u`` with ``u`` its update, and Lookahead takes no
    ``lr`` (nor a scheduler): the two would compound, so giving one is refused.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, optax, stateopt
    >>> w = brainstate.ParamState(jnp.array([0.0]))
    >>> opt = stateopt.Lookahead(optax.identity(), sync_period=2, alpha=0.5, lr=1.0)
    >>> opt = opt.register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([1.0])}); w.value.tolist()
    [-1.0]
    >>> opt.update({'w': jnp.array([1.0])}); w.value.tolist()  # -2, pulled half-way back to 0
    [-1.0]
    >>> v = brainstate.ParamState(jnp.array([0.0]))
    >>> opt = stateopt.Lookahead(base_optimizer=optax.sgd(0.5), sync_period=2, alpha=0.5)
    >>> opt = opt.register_trainable_weights({'v': v})
    >>> opt.update({'v': jnp.array([1.0])}); v.value.tolist()  # optax.sgd's own lr: -0.5
    [-0.5]
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        Param('base_optimizer', REQUIRED, _fast_direction, 'The fast direction: an optax direction '
              'transform (``optax.scale_by_adam()``) or a stateopt optimizer built with its default lr, '
              'no weight decay and no clipping.', type='optax.GradientTransformation or OptaxOptimizer',
              dynamic=False),
        Param('sync_period', 5, positive_int, 'The fast steps between two synchronisations.', type='int',
              dynamic=False),
        Param('alpha', 0.5, unit_interval, 'How far the slow weights move towards the fast ones.'),
        LR.but(default=None, check=lambda name, value: value if value is None else LR.check(name, value),
               doc='The learning rate of the fast steps (a number, scheduler or schedule); ``None`` is '
                   f'{LR.default} for a direction base, and for a complete optax base the base\'s own '
                   'learning rate (then no lr may be given).',
               type='float, scheduler, callable or None'),
        WEIGHT_DECAY)
    _lr_in_algorithm = True
    slots = {'count': 'count', 'slow': 'slow', 'fast': 'fast_state'}
    _no_state_dtype = ('its state holds the slow weights, a copy of the parameters, which a narrower dtype '
                       'would round; train in low precision with master_dtype instead')

    @classmethod
    def _resolve(cls, defaults):
        """Resolve ``lr=None``: the default lr, or for a complete optax base, its own (the scale 1)."""
        defaults['base_optimizer'] = _fast_direction('base_optimizer', defaults['base_optimizer'])
        if not isinstance(defaults['base_optimizer'], CompleteBase):
            defaults['lr'] = LR.default if defaults['lr'] is None else defaults['lr']
        elif defaults['lr'] is not None:
            raise ValueError(
                f'lr={to_python(defaults["lr"])!r}: base_optimizer is a complete optax optimizer, which '
                f'applies its own learning rate, so a Lookahead lr (or scheduler) would compound with it; '
                f'leave lr unset, or pass the base\'s direction (e.g. optax.scale_by_adam()) with lr=')
        else:
            defaults['lr'] = 1.0
        return defaults

    @classmethod
    def _check(cls, hp):
        lr = hp['lr']
        if isinstance(hp.get('base_optimizer'), CompleteBase) and lr is not None and not callable(lr) \
                and not is_traced(lr) and lr != 1.0:
            raise ValueError(f'lr={to_python(hp["lr"])!r}: this Lookahead\'s base_optimizer is a '
                             f'complete optax optimizer, which applies its own learning rate; a group cannot '
                             f'set another')

    def _declared_slots(self, group):
        """The slots, with a stateopt base optimizer's own names under ``fast``."""
        inner = self._inner(group)
        if inner is None:
            return type(self).slots
        named = inner._declared_slots(inner.param_groups[0])
        return {**{f'fast.{name}': f'fast_state.{path}' for name, path in named.items()}, **type(self).slots}

    def _never_negative(self, group):
        inner = self._inner(group)
        if inner is None:
            return ()
        return tuple(f'fast.{name}' for name in inner._never_negative(inner.param_groups[0]))

    @staticmethod
    def _inner(group):
        """The group's base optimizer when it is a stateopt optimizer, else None."""
        base = group['base_optimizer']
        return base if isinstance(base, OptaxOptimizer) else None

    @classmethod
    def _algorithm(cls, hp):
        fast = hp['base_optimizer']
        if isinstance(fast, OptaxOptimizer):
            fast = type(fast)._algorithm({**fast.defaults, 'lr': hp['lr']})
        elif isinstance(fast, CompleteBase):  # its updates point downhill: the direction is their negative
            fast = optax.chain(fast, optax.scale(-1.0))
        return scale_by_lookahead(fast, hp['lr'], hp['sync_period'], hp['alpha'])


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
    >>> from stateopt.optimizers.lookahead import scale_by_lookahead
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
        return LookaheadState(jnp.zeros([], jnp.int32), copy_tree(params), fast.init(params))

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
