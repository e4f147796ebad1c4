"""Optimizers from papers and optax, and the newer ones: each is its hyper-parameters and its algorithm.

Where an algorithm applies weight decay inside its direction (LAMB's trust ratio,
Novograd's normalised moment, Prodigy, schedule-free AdamW), the class sets
``_decay = None`` and its algorithm composes optax's ``add_decayed_weights`` itself.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import brainstate
import optax
from optax import contrib

from ._groups import to_python as _to_python
from ._hyper import (
    Hyper,
    betas,
    check_number,
    flag,
    is_traced,
    non_negative,
    open_unit_interval,
    optional_positive,
    positive,
    positive_int,
    unit_interval,
)
from ._optimizer import _RAW, BASE_HYPERPARAMS, OptaxOptimizer, check_direction
from ._state import UniqueStateManager, unflatten
from ._transforms_more import (
    negated,
    scale_by_adan,
    scale_by_lbfgs_search,
    scale_by_lookahead,
    scale_by_muon_or_adam,
    scale_by_schedule_free,
    schedule_free_eval_params,
)

__all__ = [
    'Lamb', 'Lars', 'Lookahead', 'Yogi', 'LBFGS', 'AdaBelief', 'Lion', 'SM3', 'Novograd', 'Fromage',
    'Muon', 'ScheduleFreeSGD', 'ScheduleFreeAdamW', 'Prodigy', 'ADOPT', 'Adan', 'NAdamW', 'Sophia',
]

#: The shared hyper-parameters of an optimizer without weight decay.
LR = float | Callable[[Any], Any]
FLAG = Hyper(flag, dynamic=False)
NO_DECAY = {name: spec for name, spec in BASE_HYPERPARAMS.items() if name != 'weight_decay'}
BETAS = Hyper(betas)
EPS = Hyper(positive)


def _unit_open_low(name: str, value: Any) -> float:
    """A real number in ``(0, 1]``."""
    return check_number(name, value, low=0.0, low_open=True, high=1.0)


def _optional_unit(name: str, value: Any) -> float | None:
    """``None`` or a real number in ``[0, 1)``."""
    return None if value is None else open_unit_interval(name, value)


def _optional_non_negative(name: str, value: Any) -> float | None:
    """``None`` (off) or a real number ``>= 0``."""
    return None if value is None else non_negative(name, value)


def _three_betas(name: str, value: Any) -> tuple:
    """Three real numbers, each in ``[0, 1)``."""
    if is_traced(value):
        return tuple(value)
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f'{name} must be a triple (beta1, beta2, beta3), got {value!r}')
    return tuple(open_unit_interval(f'{name}[{i}]', beta) for i, beta in enumerate(value))


class Lamb(OptaxOptimizer):
    r"""LAMB (You et al., 2020): Adam's direction rescaled per parameter by a trust ratio.

    With ``m̂, v̂`` Adam's bias-corrected moments of ``g`` (``optax.lamb``)::

        r = m̂ / (sqrt(v̂) + eps) + weight_decay * p
        p -= lr * ||p|| / ||r|| * r          (the ratio is 1 where a norm is 0)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([3.0, 4.0]))
    >>> opt = stateopt.Lamb(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([1.0, 1.0])})   # r = (1, 1): a step of lr * ||p|| along it
    >>> [round(x, 4) for x in w.value.tolist()]
    [2.6464, 3.6464]
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': BETAS, 'eps': EPS, 'maximize': FLAG}
    _decay = None

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.chain(optax.scale_by_adam(beta1, beta2, hp['eps']),
                           optax.add_decayed_weights(hp['weight_decay']),
                           optax.scale_by_trust_ratio())


class Lars(OptaxOptimizer):
    r"""LARS (You et al., 2017): momentum SGD with a layer-wise trust ratio (``optax.lars``).

    With ``g`` the gradient plus ``weight_decay * p``, per parameter::

        b = momentum * b + lr * trust_coefficient * ||p|| / (||g|| + eps) * g
        p -= b                               (the ratio is 1 where a norm is 0)

    The learning rate sits inside the momentum buffer, as in the paper.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([3.0, 4.0]))
    >>> opt = stateopt.Lars(lr=1.0, trust_coefficient=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([0.0, 2.0])})   # step 0.1 * ||p|| / ||g|| * g
    >>> [round(x, 4) for x in w.value.tolist()]
    [3.0, 3.5]
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'momentum': Hyper(open_unit_interval),
                    'trust_coefficient': Hyper(positive), 'eps': EPS, 'maximize': FLAG}
    _lr_in_algorithm = True

    def __init__(self, lr: LR = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 maximize: bool = False):
        self._setup(lr=lr, momentum=momentum, weight_decay=weight_decay,
                    trust_coefficient=trust_coefficient, eps=eps, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        return optax.chain(
            optax.scale_by_trust_ratio(trust_coefficient=hp['trust_coefficient'], eps=hp['eps']),
            optax.scale(hp['lr']), optax.trace(decay=hp['momentum']))


_CHAIN_SETTINGS = {'weight_decay': 0.0, 'grad_clip_norm': None, 'grad_clip_value': None,
                   'maximize': False, 'decoupled_weight_decay': False}


def _fast_direction(name: str, value: Any) -> Any:
    """An optax direction transform, or a stateopt optimizer whose direction Lookahead can scale."""
    if isinstance(value, OptaxOptimizer):
        kind = type(value).__name__
        if type(value)._lr_in_algorithm or isinstance(value, _EvaluatesLoss):
            raise ValueError(f'{name}: {kind} applies the learning rate (or a line search) itself, '
                             f'so Lookahead cannot scale its steps; use an optimizer lr scales, '
                             f'e.g. stateopt.Adam()')
        signature = inspect.signature(type(value).__init__).parameters
        default_lr = signature['lr'].default if 'lr' in signature else None
        unused = [f'{key}={_to_python(value.defaults[key])!r}' for key, off in _CHAIN_SETTINGS.items()
                  if value.defaults.get(key, off) != off]
        if value.lr_scheduler is not None or value.defaults['lr'] != default_lr:
            unused.append(f'lr={value.lr!r}')
        if unused:
            raise ValueError(f'{name}: Lookahead takes only the update direction of {kind}, so its '
                             f'{", ".join(unused)} would not be used; build it without them (its '
                             f'default lr, weight_decay=0, no clipping) and give them to Lookahead')
        return value
    if not isinstance(value, optax.GradientTransformation):
        raise ValueError(f'{name} must be an optax direction transform (e.g. optax.scale_by_adam()) '
                         f'or a stateopt optimizer (e.g. stateopt.Adam()), got {type(value).__name__}')
    try:
        check_direction(value)
    except ValueError:
        raise ValueError(f'{name} looks like a complete optimizer (its updates point downhill, so it '
                         f'applies a learning rate); pass its direction instead, e.g. '
                         f'optax.scale_by_adam(), and give lr to Lookahead') from None
    return value


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
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'base_optimizer': Hyper(_fast_direction, dynamic=False),
                    'sync_period': Hyper(positive_int, dynamic=False), 'alpha': Hyper(unit_interval),
                    'maximize': FLAG}
    _lr_in_algorithm = True

    def __init__(self, base_optimizer: optax.GradientTransformation | OptaxOptimizer,
                 sync_period: int = 5, alpha: float = 0.5, lr: LR = 1e-3, weight_decay: float = 0.0,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 maximize: bool = False):
        self._setup(base_optimizer=base_optimizer, sync_period=sync_period, alpha=alpha, lr=lr,
                    weight_decay=weight_decay, maximize=maximize, grad_clip_norm=grad_clip_norm,
                    grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        fast = hp['base_optimizer']
        if isinstance(fast, OptaxOptimizer):
            fast = type(fast)._algorithm({**fast.defaults, 'lr': hp['lr']})
        return scale_by_lookahead(fast, hp['lr'], hp['sync_period'], hp['alpha'])


class Yogi(OptaxOptimizer):
    r"""Yogi (Zaheer et al., 2018): Adam with an additive second-moment update (``optax.yogi``).

    With ``g`` the gradient plus ``weight_decay * p`` and ``m_0 = v_0 = 1e-6``::

        m = b1 m + (1 - b1) g ;  v = v - (1 - b2) sign(v - g²) g²
        p -= lr * m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Yogi(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # about lr * sign(g) on the first step
    0.9001
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': BETAS, 'eps': EPS, 'maximize': FLAG}

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-3,
                 weight_decay: float = 0.0, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.scale_by_yogi(beta1, beta2, hp['eps'])


class _EvaluatesLoss(OptaxOptimizer):
    """Base of the optimizers whose algorithm evaluates the loss away from the current params.

    ``step`` accepts the loss as ``closure`` (re-evaluates it from the States, torch
    style) or as ``value_fn`` (a function of every registered param, keyed as
    registered), and hands the algorithm the loss as a function of its group's params.
    """

    #: the keyword the algorithm's update receives that function under
    _objective_keyword = 'value_fn'

    def _needs_objective(self) -> bool:
        """Whether some group's algorithm cannot step without the loss function."""
        return False

    def _objective_args(self, objective: _Objective, loss: Any, extra_args: dict) -> dict:
        """The extra arguments that give the algorithm the loss."""
        return {self._objective_keyword: objective}

    def step(self, grads: Any = None, closure: Callable | None = None, *,
             value_fn: Callable | None = None, **extra_args: Any) -> Any:
        """One step; ``closure`` or ``value_fn`` gives the algorithm the loss.

        Parameters
        ----------
        grads : dict, optional
            Gradients keyed as the States were registered; computed from ``closure``
            when it is given instead.
        closure : callable, optional
            ``closure() -> loss`` or ``-> (grads, loss)`` (``brainstate.transform.grad(...,
            return_value=True)``), reading the model's States. It is also evaluated at
            other params, with the States holding them meanwhile.
        value_fn : callable, optional
            ``value_fn(params) -> loss`` of every registered param, keyed as registered
            (for example ``{('l1', 'weight'): array, ...}``).

        Returns
        -------
        The closure's loss at the params before the step, or ``None``.
        """
        grads, closure = self._closure_first(grads, closure)
        if closure is None and value_fn is None:
            if self._needs_objective():
                raise ValueError(f'{type(self).__name__} needs the loss here: pass value_fn=(a '
                                 f'function of the params keyed as registered) or closure=(a '
                                 f'function of no arguments reading the States)')
            return super().step(grads, **extra_args)
        if grads is None and closure is None:
            raise ValueError('step needs grads, or a closure')
        if is_traced(self.step_count.value):
            return self._objective_step(grads, extra_args, closure=closure, value_fn=value_fn)
        return self._compiled_objective_step(closure, value_fn)(grads, extra_args)

    def _objective_step(self, grads: Any, extra_args: dict, *, closure: Callable | None,
                        value_fn: Callable | None) -> Any:
        loss = None
        if closure is not None:
            result = closure()
            closure_grads, loss = result if _is_pair(result) else (None, result)
            if grads is None:
                grads = closure_grads if closure_grads is not None else brainstate.transform.grad(
                    lambda: _loss_of(closure()), grad_states=self._registry.to_pytree())()
        objective = _Objective(self._registry, closure=closure if value_fn is None else None,
                               value_fn=value_fn)
        super().step(grads, **{**extra_args, **self._objective_args(objective, loss, extra_args)})
        return loss

    def _compiled_objective_step(self, closure: Callable | None, value_fn: Callable | None) -> Callable:
        """The step for this closure / value_fn under ``brainstate.transform.jit``, cached by identity."""
        cache = vars(self).setdefault('_objective_steps', {})
        key = (id(closure), id(value_fn))
        if key not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            step = functools.partial(self._objective_step, closure=closure, value_fn=value_fn)
            cache[key] = (closure, value_fn, brainstate.transform.jit(step))
        return cache[key][2]

    def _invalidate(self) -> None:
        super()._invalidate()
        vars(self).pop('_objective_steps', None)


def _is_pair(result: Any) -> bool:
    return isinstance(result, tuple) and len(result) == 2


def _loss_of(result: Any) -> Any:
    """The loss of a closure's result (``loss`` or ``(grads, loss)``)."""
    return result[1] if _is_pair(result) else result


class _Objective:
    """The loss as a function of one param group's params (a dict keyed by parameter names).

    From a closure: evaluated while the group's States hold the given values. From a
    ``value_fn`` of every registered param keyed as registered: the other params
    enter at their current values.
    """

    def __init__(self, registry: UniqueStateManager, closure: Callable | None,
                 value_fn: Callable | None):
        self._paths = registry.paths
        self._states = dict(zip(registry.names, registry.states))
        self._closure = closure
        self._value_fn = value_fn

    def __call__(self, params: Mapping[str, Any]) -> Any:
        if self._value_fn is not None:
            values = [params[name] if name in params else state.value
                      for name, state in self._states.items()]
            return self._value_fn(unflatten(self._paths, values))
        states = [self._states[name] for name in params]
        saved = [_RAW(state) for state in states]
        for state, name in zip(states, params):
            vars(state)['_value'] = params[name]
        try:
            return _loss_of(self._closure())
        finally:
            for state, value in zip(states, saved):
                vars(state)['_value'] = value


def _linesearch(name: str, value: Any) -> Any:
    if value is None or value in ('zoom', 'backtracking') or isinstance(value, optax.GradientTransformation):
        return value
    raise ValueError(f"{name} must be None, 'zoom', 'backtracking' or an optax line search "
                     f"(e.g. optax.scale_by_zoom_linesearch(15)), got {value!r}")


_LINESEARCHES = {
    'zoom': lambda: optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy='one'),
    'backtracking': lambda: optax.scale_by_backtracking_linesearch(20, decrease_factor=0.5),
}


class LBFGS(_EvaluatesLoss):
    r"""L-BFGS (Nocedal & Wright, Alg. 7.4) with optax's memory and line searches.

    With ``s_i = p_{i+1} - p_i``, ``y_i = g_{i+1} - g_i`` over the last ``memory_size``
    steps of the param group, ``H`` the two-loop product of the inverse-Hessian
    estimate (initial scale ``s·y / y·y``, or ``min(1, 1 / ||g||)`` on the first step,
    when ``scale_init_precond``; 1 otherwise)::

        d = H g ;  p -= η * lr * d

    where ``η = 1`` without a line search; ``linesearch='zoom'`` (strong Wolfe
    conditions, ``optax.scale_by_zoom_linesearch(20)``) or ``'backtracking'`` (Armijo,
    halving ``η`` from at most 1 up to 20 times), or an optax line search transform,
    picks ``η`` along ``lr * d`` by evaluating the loss. Give it the loss with
    ``opt.update(grads, value_fn=f)`` (``f`` of the params keyed as registered; ``value=``
    the loss at the params, optional) or ``opt.step(closure=loss_fn)`` (``loss_fn()`` reads
    the States, or returns ``(grads, loss)``), eagerly or inside ``brainstate.transform.jit``.
    A new closure or ``value_fn`` object recompiles an eager step: reuse one.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> x = brainstate.ParamState(jnp.array([3.0, -1.0]))
    >>> loss = lambda: jnp.sum(jnp.array([1.0, 10.0]) * x.value ** 2)
    >>> opt = stateopt.LBFGS(linesearch='zoom').register_trainable_weights({'x': x})
    >>> for _ in range(8):
    ...     _ = opt.step(closure=loss)
    >>> float(loss()) < 1e-10
    True
    """

    __module__ = 'stateopt'
    _hyperparams = {**NO_DECAY, 'memory_size': Hyper(positive_int, dynamic=False),
                    'scale_init_precond': FLAG, 'linesearch': Hyper(_linesearch, dynamic=False)}
    _lr_in_algorithm = True

    def __init__(self, lr: LR = 1.0, memory_size: int = 10, scale_init_precond: bool = True,
                 linesearch: str | optax.GradientTransformation | None = None,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None):
        self._setup(lr=lr, memory_size=memory_size, scale_init_precond=scale_init_precond,
                    linesearch=linesearch, grad_clip_norm=grad_clip_norm,
                    grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        search = hp['linesearch']
        search = _LINESEARCHES[search]() if isinstance(search, str) else search
        return scale_by_lbfgs_search(hp['lr'], hp['memory_size'], hp['scale_init_precond'], search)

    def _needs_objective(self) -> bool:
        return any(group['linesearch'] is not None for group in self.param_groups)

    def _objective_args(self, objective, loss, extra_args):
        value = loss if loss is not None else extra_args.get('value')
        return {'value': objective({}) if value is None else value, 'value_fn': objective}

    def step(self, grads: Any = None, closure: Callable | None = None, *, value: Any = None,
             value_fn: Callable | None = None) -> Any:
        """One L-BFGS step; ``closure`` or ``value_fn`` give the line search the loss.

        Parameters
        ----------
        grads : dict, optional
            Gradients keyed as registered; computed from ``closure`` if not given.
        closure : callable, optional
            ``closure() -> loss`` or ``-> (grads, loss)``, reading the model's States.
        value : scalar, optional
            The loss at the current params (computed when not given).
        value_fn : callable, optional
            ``value_fn(params) -> loss``, params keyed as registered.

        Returns
        -------
        The closure's loss at the params before the step, or ``None``.
        """
        extra = {} if value is None else {'value': value}
        return super().step(grads, closure, value_fn=value_fn, **extra)


class AdaBelief(OptaxOptimizer):
    r"""AdaBelief (Zhuang et al., 2020): Adam with the spread of ``g`` around its mean (``optax.adabelief``).

    With ``g`` the gradient plus ``weight_decay * p``::

        m = b1 m + (1 - b1) g ;  s = b2 s + (1 - b2) (g - m)² + eps
        p -= lr * m / (1 - b1^t) / (sqrt(s / (1 - b2^t)) + eps)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.AdaBelief(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # m̂ = 2, ŝ = (2 - 0.2)²: a step of 0.1 * 2 / 1.8
    0.8889
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': BETAS, 'eps': EPS, 'maximize': FLAG}

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-16,
                 weight_decay: float = 0.0, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.scale_by_belief(beta1, beta2, eps=hp['eps'], eps_root=hp['eps'])


class Lion(OptaxOptimizer):
    r"""Lion (Chen et al., 2023): the sign of an interpolated momentum, decoupled weight decay.

    ::

        p = p * (1 - lr * weight_decay) - lr * sign(b1 m + (1 - b1) g)
        m = b2 m + (1 - b2) g

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> opt = stateopt.Lion(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0, -1e-3])})
    >>> w.value.tolist()
    [0.8999999761581421, 1.100000023841858]
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': BETAS, 'maximize': FLAG}
    _decay = 'decoupled'

    def __init__(self, lr: LR = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 maximize: bool = False):
        self._setup(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.scale_by_lion(beta1, beta2)


class SM3(OptaxOptimizer):
    r"""SM3-II (Anil et al., 2019): Adagrad with one accumulator per row and per column (``optax.sm3``).

    With ``g`` the gradient plus ``weight_decay * p``; for a matrix, ``r`` and ``c`` hold
    a row and a column maximum (a vector keeps one accumulator per element)::

        ν = min(r_i, c_j) + g_ij² ;  r_i = max_j ν_ij ;  c_j = max_i ν_ij
        m = momentum * m + (1 - momentum) * g / sqrt(ν + eps)     (0 where ν = 0)
        p -= lr * m

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.SM3(lr=1.0, momentum=0.0).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # an Adagrad step of sign(g)
    0.0
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'momentum': Hyper(open_unit_interval), 'eps': EPS,
                    'maximize': FLAG}

    def __init__(self, lr: LR = 1.0, momentum: float = 0.9, eps: float = 1e-8,
                 weight_decay: float = 0.0, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, momentum=momentum, eps=eps, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        return optax.scale_by_sm3(b1=hp['momentum'], b2=1.0, eps=hp['eps'])


class Novograd(OptaxOptimizer):
    r"""NovoGrad (Ginsburg et al., 2019): per-parameter normalised gradients (``optax.novograd``).

    With ``v_1 = ||g_1||²`` and ``m_1 = g_1 / (sqrt(v_1) + eps) + weight_decay * p``::

        v = b2 v + (1 - b2) ||g||²
        m = b1 m + g / (sqrt(v) + eps) + weight_decay * p
        p -= lr * m

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> opt = stateopt.Novograd(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0, 4.0])})   # g / ||g||
    >>> [round(x, 4) for x in w.value.tolist()]
    [0.94, 0.92]
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': BETAS, 'eps': EPS, 'maximize': FLAG}
    _decay = None

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.scale_by_novograd(beta1, beta2, hp['eps'], weight_decay=hp['weight_decay'])


class Fromage(OptaxOptimizer):
    r"""Fromage (Bernstein et al., 2020): steps of relative size ``lr`` per parameter (``optax.fromage``).

    With ``b`` the heavy-ball buffer of ``g`` (``b = g`` when ``momentum == 0``)::

        b = momentum * b + g
        p = (p - lr * ||p|| / ||b|| * b) / sqrt(1 + lr²)      (norms at least 1e-6)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([3.0, 4.0]))
    >>> opt = stateopt.Fromage(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([0.0, 1.0])})
    >>> [round(x, 4) for x in w.value.tolist()]  # (3, 4 - 0.5) / sqrt(1.01)
    [2.9851, 3.4826]
    """

    __module__ = 'stateopt'
    _hyperparams = {**NO_DECAY, 'momentum': Hyper(open_unit_interval), 'maximize': FLAG}
    _lr_in_algorithm = True

    def __init__(self, lr: LR = 1.0, momentum: float = 0.0, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, momentum=momentum, maximize=maximize, grad_clip_norm=grad_clip_norm,
                    grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        return negated(optax.chain(optax.trace(decay=hp['momentum']), optax.fromage(hp['lr'])))


class Muon(OptaxOptimizer):
    r"""Muon (Jordan et al., 2024): orthogonalised momentum for matrices, AdamW for the rest.

    For a 2-D parameter (``optax.contrib.muon``), with ``t`` the step::

        m = momentum * m + (1 - momentum) * g ;  m̂ = m / (1 - momentum^t)
        u = momentum * m / (1 - momentum^(t+1)) + (1 - momentum) * g / (1 - momentum^t)  (nesterov)
        O = NS_ns_steps(u / (||u||_F + eps))                 (quintic Newton-Schulz, u = m̂ if not nesterov)
        p = p * (1 - lr * weight_decay) - lr * sqrt(max(1, fan_out / fan_in)) * O

    Every other parameter takes AdamW's step with ``adam_betas``, ``eps`` and the same
    ``lr`` and ``weight_decay``; give it its own param group to change them.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.zeros((2, 2)))
    >>> opt = stateopt.Muon(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([[1.0, 0.0], [0.0, 1e-3]])})
    >>> bool(abs(w.value[0, 0] - w.value[1, 1]) < 0.05)   # both directions move alike
    True
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'momentum': Hyper(open_unit_interval), 'nesterov': FLAG,
                    'ns_steps': Hyper(positive_int, dynamic=False), 'eps': EPS,
                    'adam_betas': BETAS, 'maximize': FLAG}
    _decay = 'decoupled'

    def __init__(self, lr: LR = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 adam_betas: tuple[float, float] = (0.9, 0.999), grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, eps=eps,
                    weight_decay=weight_decay, adam_betas=adam_betas, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['adam_betas']
        return scale_by_muon_or_adam(hp['momentum'], hp['nesterov'], hp['ns_steps'], hp['eps'],
                                     beta1, beta2)


class _ScheduleFree(OptaxOptimizer):
    """Schedule-free optimizers: the params are ``y``, the point to evaluate at is ``x``."""

    _lr_in_algorithm = True

    @classmethod
    def _b1(cls, hp: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def _eval_values(self) -> list:
        """The evaluation point ``x`` of every registered State, in registration order."""
        names = self._registry.names
        values = [state.value for state in self._registry.states]
        for group, state in zip(self._groups, self.opt_state.value):
            params = {names[i]: values[i] for i in group._positions}
            averaged = schedule_free_eval_params(state, params, self._b1(group))
            for i in group._positions:
                values[i] = averaged[names[i]]
        return values

    def eval_params(self) -> dict:
        """The evaluation point ``x`` of every registered State, keyed as registered."""
        return unflatten(self._registry.paths, self._eval_values())

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Give the States the evaluation point ``x`` inside the block, and ``y`` back after it.

        Works eagerly and inside ``brainstate.transform.jit``; do not step inside the block.
        """
        states = self._registry.states
        saved = [state.value for state in states]
        for state, value in zip(states, self._eval_values()):
            state.value = value
        try:
            yield
        finally:
            for state, value in zip(states, saved):
                state.value = value


class ScheduleFreeSGD(_ScheduleFree):
    r"""Schedule-free SGD (Defazio et al., 2024): no schedule, evaluate at the average ``x``.

    The params are ``y``; with ``g`` the gradient at ``y`` plus ``weight_decay * y``::

        z ← z - lr * g ;  c = w_t / Σ_{i<=t} w_i,  w_t = max_{i<=t} lr_i ** weight_lr_power
        x ← (1 - c) x + c z ;  y = (1 - momentum) z + momentum x

    Evaluate the model at ``x``: ``with opt.evaluation(): ...`` gives the States ``x``
    for the block (and ``y`` back after it); ``opt.eval_params()`` returns ``x``. Warm-up
    comes from a scheduler on ``lr``, which the weights ``w_t`` follow.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.ScheduleFreeSGD(lr=0.5).register_trainable_weights({'w': w})
    >>> for _ in range(2):
    ...     opt.update({'w': jnp.array([1.0])})
    >>> with opt.evaluation():   # x = z averaged with weights 1/1, 1/2: (0.5 + 0) / 2
    ...     print(round(float(w.value[0]), 4))
    0.25
    >>> round(float(w.value[0]), 4)  # y = 0.1 z + 0.9 x, with z = 0
    0.225
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'momentum': Hyper(_unit_open_low),
                    'weight_lr_power': Hyper(non_negative), 'maximize': FLAG}

    def __init__(self, lr: LR = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 weight_lr_power: float = 2.0, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, momentum=momentum, weight_decay=weight_decay,
                    weight_lr_power=weight_lr_power, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _b1(cls, hp):
        return hp['momentum']

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_schedule_free(optax.identity(), hp['lr'], hp['momentum'], hp['weight_lr_power'])


class ScheduleFreeAdamW(_ScheduleFree):
    r"""Schedule-free AdamW (Defazio et al., 2024; ``optax.contrib.schedule_free_adamw``).

    As :class:`ScheduleFreeSGD` with ``b1 = betas[0]`` in place of ``momentum``, and the
    base step taken with Adam's second moment (no first moment) and decay at ``y``::

        v = b2 v + (1 - b2) g² ;  z ← z - lr * (g / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * y)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.ScheduleFreeAdamW(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([5.0])})
    >>> round(float(w.value[0]), 4), {k: round(float(v[0]), 4) for k, v in opt.eval_params().items()}
    (0.9, {'w': 0.9})
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': BETAS, 'eps': EPS,
                    'weight_lr_power': Hyper(non_negative), 'maximize': FLAG}
    _decay = None

    def __init__(self, lr: LR = 0.0025, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, weight_lr_power: float = 2.0,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                    weight_lr_power=weight_lr_power, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _check(cls, hp: dict) -> None:
        if hp['betas'][0] == 0:
            raise ValueError('betas[0] must be > 0 for schedule-free averaging, got 0')

    @classmethod
    def _b1(cls, hp):
        return hp['betas'][0]

    @classmethod
    def _algorithm(cls, hp):
        _, beta2 = hp['betas']
        base = optax.chain(
            optax.scale_by_rms(decay=beta2, eps=hp['eps'], eps_in_sqrt=False, bias_correction=True),
            optax.add_decayed_weights(hp['weight_decay']))
        return scale_by_schedule_free(base, hp['lr'], hp['betas'][0], hp['weight_lr_power'])


class Prodigy(OptaxOptimizer):
    r"""Prodigy (Mishchenko & Defazio, 2023): AdamW with an estimated step size ``d`` (optax.contrib).

    Per param group, with ``p_0`` the initial params, ``d_0 = d0``, ``β3 = beta3`` (default
    ``sqrt(b2)``) and ``η_t = d_t * lr * sqrt(1 - b2^t) / (1 - b1^t)``::

        m = b1 m + (1 - b1) d_t g ;  v = b2 v + (1 - b2) d_t² g²
        r = β3 r + (d_t / d0) η_t <g, p_0 - p> ;  s = β3 s + (η_t / d0) d_t g
        d_{t+1} = max(d_t, d_coef * r / ||s||_1)
        p -= η_t * (m / (sqrt(v) + d_{t+1} * eps) + weight_decay * p)

    (``safeguard_warmup``: ``d_t`` in place of ``η_t`` in ``s``). ``lr`` scales the estimated
    step: keep it at 1 and schedule it from there.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Prodigy(d0=1e-2).register_trainable_weights({'w': w})
    >>> for _ in range(20):
    ...     opt.update({'w': 2 * w.value})
    >>> bool(opt.opt_state.value[0].estim_lr > 1e-2)   # d grew from d0
    True
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': BETAS, 'beta3': Hyper(_optional_unit), 'eps': EPS,
                    'd0': Hyper(positive), 'd_coef': Hyper(positive), 'safeguard_warmup': FLAG,
                    'maximize': FLAG}
    _decay = None
    _lr_in_algorithm = True

    def __init__(self, lr: LR = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 beta3: float | None = None, eps: float = 1e-8, weight_decay: float = 0.0,
                 d0: float = 1e-6, d_coef: float = 1.0, safeguard_warmup: bool = False,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 maximize: bool = False):
        self._setup(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay, d0=d0,
                    d_coef=d_coef, safeguard_warmup=safeguard_warmup, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        return negated(contrib.prodigy(
            hp['lr'], hp['betas'], hp['beta3'], hp['eps'], estim_lr0=hp['d0'],
            estim_lr_coef=hp['d_coef'], weight_decay=hp['weight_decay'],
            safeguard_warmup=hp['safeguard_warmup']))


class ADOPT(OptaxOptimizer):
    r"""ADOPT (Taniguchi et al., 2024): Adam normalising by the previous second moment (optax.contrib).

    With ``g`` the gradient (plus ``weight_decay * p`` unless ``decoupled_weight_decay``),
    ``v_0 = g_0²`` and no step at ``t = 0``; then for ``t >= 1``::

        m = b1 m + (1 - b1) clip(g / max(sqrt(v), eps), t ** clip_exponent)
        p -= lr * m ;  v = b2 v + (1 - b2) g²

    (no clipping when ``clip_exponent`` is ``None``; with ``decoupled_weight_decay``,
    ``p`` is first multiplied by ``1 - lr * weight_decay``).

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.ADOPT(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])}); w.value.tolist()   # initialises v only
    [1.0]
    >>> opt.update({'w': jnp.array([2.0])}); round(float(w.value[0]), 4)  # m = 0.1 * 2 / 2
    0.99
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': BETAS, 'eps': EPS,
                    'clip_exponent': Hyper(_optional_non_negative), 'decoupled_weight_decay': FLAG,
                    'maximize': FLAG}

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.9999), eps: float = 1e-6,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 clip_exponent: float | None = 0.25, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                    decoupled_weight_decay=decoupled_weight_decay, clip_exponent=clip_exponent,
                    maximize=maximize, grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        exponent = hp['clip_exponent']
        return contrib.scale_by_adopt(beta1, beta2, hp['eps'], use_clipping=exponent is not None,
                                      clip_value_fn=lambda step: step ** exponent)


class Adan(OptaxOptimizer):
    r"""Adan (Xie et al., 2022): Nesterov momentum from gradient differences.

    With ``(b1, b2, b3) = betas`` (``1 - β`` of the paper), ``Δ_t = g_t - g_{t-1}``
    (``Δ_1 = 0``) and bias corrections ``^``::

        m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) Δ ;  n = b3 n + (1 - b3) (g + b2 Δ)²
        p = p * (1 - lr * weight_decay) - lr * (m̂ + b2 v̂) / (sqrt(n̂) + eps)

    as the paper's Algorithm 1 and its reference code (``optax.scale_by_adan`` weighs
    ``Δ`` by ``1 - b2``), with optax's form of the decoupled decay.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Adan(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)   # m̂ / sqrt(n̂) = 1
    0.9
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': Hyper(_three_betas), 'eps': EPS, 'maximize': FLAG}
    _decay = 'decoupled'

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2, beta3 = hp['betas']
        return scale_by_adan(beta1, beta2, beta3, hp['eps'])


class NAdamW(OptaxOptimizer):
    r"""NAdamW (Dozat, 2016; Loshchilov & Hutter, 2019): Nesterov Adam, decoupled decay (``optax.nadamw``).

    With Adam's moments ``m, v`` of ``g``::

        m̂ = b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t) ;  v̂ = v / (1 - b2^t)
        p = p * (1 - lr * weight_decay) - lr * m̂ / (sqrt(v̂) + eps)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.NAdamW(lr=0.1, weight_decay=0.0).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)   # m̂ = 0.9 * 0.2 / 0.19 + 0.1 * 2 / 0.1, v̂ = 4
    0.8526
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': BETAS, 'eps': EPS, 'maximize': FLAG}
    _decay = 'decoupled'

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-4, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return optax.scale_by_adam(beta1, beta2, hp['eps'], nesterov=True)


def _hessian(name: str, value: Any) -> Any:
    if value == 'hutchinson' or isinstance(value, optax.GradientTransformation):
        return value
    raise ValueError(f"{name} must be 'hutchinson' or an optax transform returning a diagonal "
                     f"Hessian estimate, got {value!r}")


class Sophia(_EvaluatesLoss):
    r"""Sophia (Liu et al., 2023): momentum over a clipped diagonal Hessian (``optax.contrib.sophia``).

    With ``h`` an exponential average of diagonal Hessian estimates ``ĥ``, refreshed after
    the steps ``t = 1, k + 1, 2k + 1, ...`` (``k = update_interval``) have used it::

        m = b1 m + (1 - b1) g
        p = p * (1 - lr * weight_decay) - lr * clip(m / (1 - b1^t) / max(gamma * h, eps), ±clip_threshold)
        h = b2 h + (1 - b2) ĥ

    ``hessian='hutchinson'`` (Sophia-H) estimates ``ĥ = u ⊙ ∇²L u`` with random signs
    ``u``: it needs the loss, given as ``opt.update(grads, value_fn=f)`` (``f`` of the
    params keyed as registered) or ``opt.step(grads, closure=loss_fn)`` (``loss_fn()``
    reads the States), eagerly or inside ``brainstate.transform.jit``. Any optax
    transform ``update(grads, state, params, obj_fn=..., **extra) -> (ĥ, state)`` may be
    given instead (``optax.contrib.hutchinson_estimator_diag_hessian(key)`` for another
    seed, or a Gauss-Newton estimate); ``obj_fn`` is then the loss of the group's params.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> x = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> loss = lambda: jnp.sum(jnp.array([1.0, 100.0]) * x.value ** 2)
    >>> opt = stateopt.Sophia(lr=0.1, weight_decay=0.0).register_trainable_weights({'x': x})
    >>> grad = brainstate.transform.grad(loss, grad_states={'x': x})
    >>> for _ in range(2):
    ...     _ = opt.step(grad(), closure=loss)
    >>> [round(v, 4) for v in opt.state_dict()['state']['x']['0.nu'].tolist()]  # 0.01 diag(∇²L)
    [0.02, 2.0]
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': BETAS, 'eps': EPS, 'gamma': Hyper(positive),
                    'clip_threshold': Hyper(optional_positive),
                    'update_interval': Hyper(positive_int, dynamic=False),
                    'hessian': Hyper(_hessian, dynamic=False)}
    _decay = 'decoupled'
    _objective_keyword = 'obj_fn'

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.965, 0.99), eps: float = 1e-8,
                 weight_decay: float = 1e-4, gamma: float = 0.01, clip_threshold: float | None = 1.0,
                 update_interval: int = 10, hessian: str | optax.GradientTransformation = 'hutchinson',
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, gamma=gamma,
                    clip_threshold=clip_threshold, update_interval=update_interval, hessian=hessian,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        estimator = hp['hessian']
        if estimator == 'hutchinson':
            estimator = contrib.hutchinson_estimator_diag_hessian()
        return negated(contrib.sophia(1.0, beta1, beta2, hp['eps'], weight_decay=0.0, gamma=hp['gamma'],
                                      clip_threshold=hp['clip_threshold'],
                                      update_interval=hp['update_interval'],
                                      hessian_diagonal_fn=estimator))

    def _needs_objective(self) -> bool:
        return any(group['hessian'] == 'hutchinson' for group in self.param_groups)
