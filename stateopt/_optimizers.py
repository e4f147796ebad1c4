"""The optimizer catalogue: each optimizer is its hyper-parameters and its algorithm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ._hyper import Hyper, betas, flag, non_negative, positive, unit_interval
from ._optimizer import _RAW, BASE_HYPERPARAMS, OptaxOptimizer, ParamGroup
from ._transforms import scale_by_torch_adam, scale_by_torch_sgd

__all__ = ['SGD', 'Momentum', 'MomentumNesterov', 'Adam', 'AdamW']

LR = float | Callable[[Any], Any]
FLAG = Hyper(flag, dynamic=False)


class SGD(OptaxOptimizer):
    r"""Stochastic gradient descent with torch's momentum, dampening and Nesterov.

    With ``g`` the gradient (negated if ``maximize``) plus ``weight_decay * p``::

        b_1 = g_1 ;  b_t = momentum * b_{t-1} + (1 - dampening) * g_t
        p  -= lr * (g_t + momentum * b_t  if nesterov  else  b_t)

    and ``p -= lr * g`` at a step with ``momentum == 0`` (torch.optim.SGD). A group
    created with ``momentum=0`` keeps no momentum buffer, unless an attached scheduler
    cycles the momentum (OneCycleLR, CyclicLR): then it has one, started, as torch's,
    at the first step with ``momentum != 0``.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.SGD(lr=0.1, momentum=0.9).register_trainable_weights({'w': w})
    >>> for _ in range(2):
    ...     opt.update({'w': jnp.array([1.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 0.1 - 0.19
    0.71
    """

    __module__ = 'stateopt'
    _hyperparams = {
        **BASE_HYPERPARAMS,
        'momentum': Hyper(non_negative),
        'dampening': Hyper(unit_interval),
        'nesterov': FLAG,
        'maximize': FLAG,
    }

    def __init__(self, lr: LR = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, dampening: float = 0.0,
                 maximize: bool = False):
        self._setup(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                    nesterov=nesterov, maximize=maximize, grad_clip_norm=grad_clip_norm,
                    grad_clip_value=grad_clip_value)

    @classmethod
    def _check(cls, hp: dict) -> None:
        if hp.get('nesterov') and (hp['momentum'] <= 0 or hp.get('dampening', 0.0) != 0):
            raise ValueError('nesterov=True needs momentum > 0 and dampening == 0, got '
                             f'momentum={hp["momentum"]!r}, dampening={hp.get("dampening", 0.0)!r}')

    def _check_assignment(self, group: ParamGroup, name: str, value: Any) -> None:
        state = _RAW(self.opt_state)[group.index]
        if name == 'momentum' and value != 0 and state.momentum_buffer is None:
            raise ValueError(f'param group {group.index} was created with momentum=0 and keeps no '
                             f'momentum buffer; create the group with momentum > 0 to vary it')

    def _momentum_cycled(self) -> bool:
        return getattr(self._scheduler, '_momentum_key', None) == 'momentum'

    def _init_group_state(self, group: ParamGroup, values: dict) -> Any:
        """torch's SGD state, with a momentum buffer whenever the scheduler cycles the momentum."""
        state = super()._init_group_state(group, values)
        if state.momentum_buffer is None and self._momentum_cycled():
            state = state._replace(momentum_buffer=jax.tree.map(jnp.zeros_like, values))
        return state

    def _add_momentum_buffers(self) -> None:
        """Give every group a momentum buffer: the attached scheduler now cycles the momentum.

        Called by the scheduler when it attaches. A new buffer has not been used yet
        (count 0), so its first step with momentum != 0 sets it to the gradient, as
        torch's does.
        """
        names, states = self._registry.names, self._registry.states
        groups = []
        for group, state in zip(self._groups, _RAW(self.opt_state)):
            if state.momentum_buffer is None:
                values = {names[i]: _RAW(states[i]) for i in group._positions}
                state = state._replace(count=jnp.zeros_like(state.count),
                                       momentum_buffer=jax.tree.map(jnp.zeros_like, values))
            groups.append(state)
        self.opt_state.value = tuple(groups)
        self._invalidate()

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_sgd(hp['momentum'], hp['dampening'], hp['nesterov'])


class Momentum(SGD):
    r"""Heavy-ball momentum: SGD with ``momentum=0.9`` by default.

    ``b_t = momentum * b_{t-1} + g_t`` and ``p -= lr * b_t`` (with ``b_0 = 0``).

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Momentum(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([1.0])}); opt.update({'w': jnp.array([1.0])})
    >>> round(float(w.value[0]), 4)
    0.71
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'momentum': Hyper(non_negative), 'maximize': FLAG}
    _nesterov = False

    def __init__(self, lr: LR = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 maximize: bool = False):
        self._setup(lr=lr, momentum=momentum, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _check(cls, hp: dict) -> None:
        if cls._nesterov and hp['momentum'] <= 0:
            raise ValueError(f'Nesterov momentum needs momentum > 0, got {hp["momentum"]!r}')

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_sgd(hp['momentum'], 0.0, cls._nesterov)


class MomentumNesterov(Momentum):
    r"""Nesterov momentum: ``b_t = momentum * b_{t-1} + g_t``, ``p -= lr * (g_t + momentum * b_t)``.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.MomentumNesterov(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([1.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 0.1 * (1 + 0.9)
    0.81
    """

    __module__ = 'stateopt'
    _nesterov = True


class Adam(OptaxOptimizer):
    r"""Adam with torch's update rule, AMSGrad and coupled (L2) weight decay.

    With ``g`` the gradient plus ``weight_decay * p``::

        m_t = b1 m + (1 - b1) g      v_t = b2 v + (1 - b2) g^2      (v̂ = max v if amsgrad)
        p  -= lr / (1 - b1^t) * m_t / (sqrt(v̂_t) / sqrt(1 - b2^t) + eps)

    ``beta1`` / ``beta2`` override the entries of ``betas`` (braintools' spelling).

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> opt = stateopt.Adam(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0, -0.5])})
    >>> [round(x, 4) for x in w.value.tolist()]  # the first step moves each weight by lr
    [0.9, 1.1]
    """

    __module__ = 'stateopt'
    _hyperparams = {
        **BASE_HYPERPARAMS,
        'betas': Hyper(betas),
        'eps': Hyper(positive),
        'amsgrad': FLAG,
        'maximize': FLAG,
    }

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 beta1: float | None = None, beta2: float | None = None, eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 maximize: bool = False):
        betas = _merge_betas(betas, beta1, beta2)
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                    maximize=maximize, grad_clip_norm=grad_clip_norm,
                    grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        return scale_by_torch_adam(beta1, beta2, hp['eps'], hp['amsgrad'])


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay (torch.optim.AdamW).

    The Adam direction ``d`` of :class:`Adam` (without L2 on the gradient), then
    ``p = p * (1 - lr * weight_decay) - lr * d``.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.AdamW(lr=0.1, weight_decay=0.5).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # 1 * (1 - 0.05) - 0.1
    0.85
    """

    __module__ = 'stateopt'
    _decay = 'decoupled'

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, amsgrad: bool = False,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                    maximize=maximize, grad_clip_norm=grad_clip_norm,
                    grad_clip_value=grad_clip_value)


def _merge_betas(pair: Any, beta1: float | None, beta2: float | None) -> Any:
    """``betas`` with braintools' ``beta1`` / ``beta2`` spelling applied."""
    if beta1 is None and beta2 is None:
        return pair
    first, second = betas('betas', pair)
    return (first if beta1 is None else beta1, second if beta2 is None else beta2)

