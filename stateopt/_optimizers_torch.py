"""The catalogue's torch-named adaptive optimizers: each is its hyper-parameters and its algorithm.

Each follows the update rule torch.optim documents for the class of the same name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._hyper import (
    Hyper,
    betas,
    check_number,
    flag,
    is_traced,
    non_negative,
    open_unit_interval,
    positive,
    unit_interval,
)
from ._optimizer import _RAW, BASE_HYPERPARAMS, OptaxOptimizer, ParamGroup
from ._transforms_torch import (
    scale_by_torch_adadelta,
    scale_by_torch_adafactor,
    scale_by_torch_adagrad,
    scale_by_torch_adamax,
    scale_by_torch_nadam,
    scale_by_torch_radam,
    scale_by_torch_rmsprop,
    scale_by_torch_rprop,
)

__all__ = ['Adagrad', 'Adadelta', 'RMSprop', 'Adamax', 'Nadam', 'NAdam', 'RAdam', 'Rprop', 'Adafactor']

LR = float | Callable[[Any], Any]
FLAG = Hyper(flag, dynamic=False)

#: Adafactor's learning rate when none is given: torch's default, the paper's cap on 1 / sqrt(t).
ADAFACTOR_DEFAULT_LR = 1e-2


# -- validators of the pairs these optimizers take -------------------------------------------

def _pair(name: str, value: Any, labels: tuple[str, str]) -> tuple[float, float]:
    """Two real numbers, as a tuple of floats."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f'{name} must be a pair ({labels[0]}, {labels[1]}), got {value!r}')
    return tuple(check_number(f'{name}[{i}]', item) for i, item in enumerate(value))


def _etas(name: str, value: Any) -> tuple:
    """``(etaminus, etaplus)`` with ``0 < etaminus < 1 < etaplus``."""
    if is_traced(value):
        return tuple(value)
    minus, plus = _pair(name, value, ('etaminus', 'etaplus'))
    if not 0 < minus < 1 < plus:
        raise ValueError(f'{name} must be (etaminus, etaplus) with 0 < etaminus < 1 < etaplus, '
                         f'got {value!r}')
    return minus, plus


def _step_sizes(name: str, value: Any) -> tuple:
    """``(step_size_min, step_size_max)`` with ``0 <= min <= max`` and ``max > 0``."""
    if is_traced(value):
        return tuple(value)
    low, high = _pair(name, value, ('step_size_min', 'step_size_max'))
    if not 0 <= low <= high or high <= 0:
        raise ValueError(f'{name} must be (step_size_min, step_size_max) with 0 <= step_size_min '
                         f'<= step_size_max and step_size_max > 0, got {value!r}')
    return low, high


def _adafactor_eps(name: str, value: Any) -> tuple:
    """``(eps1, eps2)`` with ``eps1 > 0`` and ``eps2 >= 0``."""
    if is_traced(value):
        return tuple(value)
    _pair(name, value, ('eps1', 'eps2'))
    return positive(f'{name}[0]', value[0]), non_negative(f'{name}[1]', value[1])


def _optional_beta(name: str, value: Any) -> float | None:
    """``None`` (no first moment) or a real number in ``[0, 1)``."""
    return None if value is None else open_unit_interval(name, value)


def _adafactor_lr(name: str, value: Any) -> Any:
    """A learning rate, ``None`` meaning :data:`ADAFACTOR_DEFAULT_LR`."""
    return BASE_HYPERPARAMS['lr'].check(name, ADAFACTOR_DEFAULT_LR if value is None else value)


def _refuse_momentum_without_buffer(group: ParamGroup, name: str, value: Any, state: Any) -> None:
    if name == 'momentum' and value != 0 and state.momentum_buffer is None:
        raise ValueError(f'param group {group.index} was created with momentum=0 and keeps no '
                         f'momentum buffer; create the group with momentum > 0 to vary it')


# -- the optimizers ----------------------------------------------------------------------------

class Adagrad(OptaxOptimizer):
    r"""Adagrad with torch's update rule (eps outside the square root) and coupled weight decay.

    With ``g`` the gradient (negated if ``maximize``) plus ``weight_decay * p`` and ``t`` the step::

        s_t = s_{t-1} + g_t^2      (s_0 = initial_accumulator_value)
        p  -= lr / (1 + (t - 1) lr_decay) * g_t / (sqrt(s_t) + eps)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> opt = stateopt.Adagrad(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0, -0.5])})
    >>> [round(x, 4) for x in w.value.tolist()]  # the first step moves each weight by lr
    [0.9, 1.1]
    """

    __module__ = 'stateopt'
    _hyperparams = {
        **BASE_HYPERPARAMS,
        'lr_decay': Hyper(non_negative),
        'initial_accumulator_value': Hyper(non_negative, dynamic=False),
        'eps': Hyper(positive),
        'maximize': FLAG,
    }

    def __init__(self, lr: LR = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 maximize: bool = False):
        self._setup(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                    initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_adagrad(hp['lr_decay'], hp['initial_accumulator_value'], hp['eps'])


class Adadelta(OptaxOptimizer):
    r"""Adadelta with torch's update rule and coupled weight decay.

    With ``g`` the gradient (negated if ``maximize``) plus ``weight_decay * p``::

        v_t = rho v_{t-1} + (1 - rho) g_t^2
        Δ_t = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g_t ;  u_t = rho u_{t-1} + (1 - rho) Δ_t^2
        p  -= lr * Δ_t

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Adadelta(rho=0.0, eps=1.0).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 1.0 * sqrt(1) / sqrt(9 + 1) * 3
    0.0513
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'rho': Hyper(unit_interval), 'eps': Hyper(positive), 'maximize': FLAG}

    def __init__(self, lr: LR = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 maximize: bool = False):
        self._setup(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_adadelta(hp['rho'], hp['eps'])


class RMSprop(OptaxOptimizer):
    r"""RMSprop with torch's update rule (eps outside the square root), centering and momentum.

    With ``g`` the gradient (negated if ``maximize``) plus ``weight_decay * p``::

        v_t = alpha v_{t-1} + (1 - alpha) g_t^2 ;  a_t = alpha a_{t-1} + (1 - alpha) g_t
        q_t = g_t / (sqrt(v_t - a_t^2 if centered else v_t) + eps)
        b_t = momentum b_{t-1} + q_t ;  p -= lr * b_t        (p -= lr * q_t when momentum == 0)

    A group created with ``momentum=0`` keeps no buffer, so its momentum cannot be
    raised later.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.RMSprop(lr=0.01, alpha=0.75).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 0.01 * 2 / sqrt(0.25 * 2 ** 2)
    0.98
    """

    __module__ = 'stateopt'
    _hyperparams = {
        **BASE_HYPERPARAMS,
        'alpha': Hyper(open_unit_interval),
        'eps': Hyper(positive),
        'momentum': Hyper(non_negative),
        'centered': FLAG,
        'maximize': FLAG,
    }

    def __init__(self, lr: LR = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                    centered=centered, maximize=maximize, grad_clip_norm=grad_clip_norm,
                    grad_clip_value=grad_clip_value)

    def _check_assignment(self, group: ParamGroup, name: str, value: Any) -> None:
        _refuse_momentum_without_buffer(group, name, value, _RAW(self.opt_state)[group.index])

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_rmsprop(hp['alpha'], hp['eps'], hp['momentum'], hp['centered'])


class Adamax(OptaxOptimizer):
    r"""Adamax (Adam with the infinity norm) with torch's update rule and coupled weight decay.

    With ``g`` the gradient (negated if ``maximize``) plus ``weight_decay * p``::

        m_t = b1 m_{t-1} + (1 - b1) g_t ;  u_t = max(b2 u_{t-1}, |g_t| + eps)
        p  -= lr / (1 - b1^t) * m_t / u_t

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, 1.0]))
    >>> opt = stateopt.Adamax(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([3.0, -0.5])})
    >>> [round(x, 4) for x in w.value.tolist()]  # the first step moves each weight by lr
    [0.9, 1.1]
    """

    __module__ = 'stateopt'
    _hyperparams = {**BASE_HYPERPARAMS, 'betas': Hyper(betas), 'eps': Hyper(positive), 'maximize': FLAG}

    def __init__(self, lr: LR = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_adamax(*hp['betas'], hp['eps'])


class Nadam(OptaxOptimizer):
    r"""NAdam (Adam with Nesterov momentum) with torch's update rule and momentum schedule.

    With ``g`` the gradient (negated if ``maximize``), plus ``weight_decay * p`` unless
    ``decoupled_weight_decay`` (then ``p *= 1 - lr * weight_decay`` first)::

        mu_t = b1 (1 - 0.96^(t * momentum_decay) / 2) ;  P_t = mu_1 ... mu_t
        m_t = b1 m_{t-1} + (1 - b1) g_t ;  v_t = b2 v_{t-1} + (1 - b2) g_t^2
        D_t = sqrt(v_t / (1 - b2^t)) + eps
        p  -= lr ((1 - mu_t) / (1 - P_t) g_t + mu_{t+1} / (1 - P_t mu_{t+1}) m_t) / D_t

    ``NAdam`` (torch's spelling) is the same class.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.NAdam(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 0.1 * (1 + 0.1 * mu_2 / (1 - mu_1 mu_2)), mu_1 ≈ mu_2 ≈ 0.45
    0.8944
    """

    __module__ = 'stateopt'
    _hyperparams = {
        **BASE_HYPERPARAMS,
        'betas': Hyper(betas),
        'eps': Hyper(positive),
        'momentum_decay': Hyper(non_negative),
        'decoupled_weight_decay': FLAG,
        'maximize': FLAG,
    }

    def __init__(self, lr: LR = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None, *,
                 decoupled_weight_decay: bool = False, maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                    momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                    maximize=maximize, grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_nadam(*hp['betas'], hp['eps'], hp['momentum_decay'])


NAdam = Nadam


class RAdam(OptaxOptimizer):
    r"""RAdam (rectified Adam) with torch's update rule and rectification threshold.

    With ``g`` the gradient (negated if ``maximize``), plus ``weight_decay * p`` unless
    ``decoupled_weight_decay`` (then ``p *= 1 - lr * weight_decay`` first)::

        m_t = b1 m_{t-1} + (1 - b1) g_t ;  v_t = b2 v_{t-1} + (1 - b2) g_t^2 ;  m^_t = m_t / (1 - b1^t)
        rho_inf = 2 / (1 - b2) - 1 ;  rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        p  -= lr m^_t r_t sqrt(1 - b2^t) / (sqrt(v_t) + eps)   if rho_t > 5,   else  p -= lr m^_t

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.RAdam(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([2.0])})
    >>> round(float(w.value[0]), 4)  # unrectified first step: 1 - 0.1 * 2
    0.8
    """

    __module__ = 'stateopt'
    _hyperparams = {
        **BASE_HYPERPARAMS,
        'betas': Hyper(betas),
        'eps': Hyper(positive),
        'decoupled_weight_decay': FLAG,
        'maximize': FLAG,
    }

    def __init__(self, lr: LR = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, decoupled_weight_decay: bool = False,
                 maximize: bool = False):
        self._setup(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                    decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_radam(*hp['betas'], hp['eps'])


class Rprop(OptaxOptimizer):
    r"""Rprop (resilient backpropagation) with torch's update rule; the lr scales every step.

    With ``g`` the gradient (negated if ``maximize``), ``g_prev`` the last one kept and
    per-element step sizes ``η`` starting at ``lr``::

        η_t = clip(η_{t-1} * (etaplus if g_t g_prev > 0, etaminus if < 0, else 1), *step_sizes)
        g_t = 0 where g_t g_prev < 0 ;  p -= η_t sign(g_t) ;  g_prev = g_t

    With a constant lr this is torch.optim.Rprop. A new lr (assigned, or from a
    schedule or scheduler) rescales the step sizes by ``lr_t / lr_{t-1}``, so ``η``
    is kept in units of lr; a step with ``lr == 0`` changes nothing. Rprop uses only
    the signs of the gradients, so it has no weight decay (as torch), and its
    ``grad_clip_norm`` / ``grad_clip_value`` (kept for braintools' signature) must stay
    None: clipping changes no sign.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Rprop(lr=0.1).register_trainable_weights({'w': w})
    >>> for _ in range(2):
    ...     opt.update({'w': jnp.array([5.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 0.1 - 0.1 * 1.2
    0.78
    """

    __module__ = 'stateopt'
    _hyperparams = {
        'lr': BASE_HYPERPARAMS['lr'],
        'etas': Hyper(_etas),
        'step_sizes': Hyper(_step_sizes),
        'maximize': FLAG,
    }
    _lr_in_algorithm = True

    def __init__(self, lr: LR = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50.0), grad_clip_norm: None = None,
                 grad_clip_value: None = None, *, maximize: bool = False):
        for name, value in (('grad_clip_norm', grad_clip_norm), ('grad_clip_value', grad_clip_value)):
            if value is not None:
                raise ValueError(f'{name}={value!r}: Rprop uses only the signs of the gradients, which '
                                 f'clipping never changes; leave {name} as None')
        self._setup(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_rprop(hp['lr'], hp['etas'], hp['step_sizes'])


class Adafactor(OptaxOptimizer):
    r"""Adafactor with torch's update rule, an optional first moment, and decoupled weight decay.

    With ``g`` the gradient (negated if ``maximize``), ``t`` the step, ``(eps1, eps2) = eps``,
    and for each parameter array ``p``::

        c_t = t^(-decay_rate) ;  rho_t = min(lr, 1 / sqrt(t)) ;  a_t = max(eps2, RMS(p)) rho_t
        V_t = V_{t-1} + c_t (g^2 - V_{t-1})
        U_t = g / max(sqrt(V_t), eps1) ;  S_t = a_t U_t / max(1, RMS(U_t) / clip_threshold)
        m_t = beta1 m_{t-1} + (1 - beta1) S_t      (m_t = S_t when beta1 is None)
        p   = p (1 - lr weight_decay) - m_t

    When ``factored`` and ``p.ndim >= 2``, ``V`` is kept as its row and column means ``R``
    and ``C`` over the last two axes, each updated as ``V`` is, and ``V_t = R_t C_t /
    max(mean(R_t), eps1)``. ``decay_rate`` is torch's ``-beta2_decay`` and
    ``clip_threshold`` its ``d``; ``beta1`` adds the first moment of the paper and optax,
    which torch lacks. ``lr=None`` is torch's default ``lr=1e-2``, for which ``rho_t`` is
    the paper's relative step size ``min(1e-2, 1 / sqrt(t))``; a schedule or scheduler
    acts through ``rho_t`` and the decay. Torch's ``eps=(None, 1e-3)`` is
    ``eps=(1.1920929e-07, 1e-3)`` for float32 parameters.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.full((2, 2), 2.0))
    >>> opt = stateopt.Adafactor().register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.ones((2, 2))})
    >>> round(float(w.value[0, 0]), 4)  # 2 - RMS(w) * 1e-2
    1.98
    """

    __module__ = 'stateopt'
    _hyperparams = {
        **BASE_HYPERPARAMS,
        'lr': Hyper(_adafactor_lr),
        'eps': Hyper(_adafactor_eps),
        'clip_threshold': Hyper(positive),
        'decay_rate': Hyper(non_negative),
        'beta1': Hyper(_optional_beta),
        'factored': FLAG,
        'maximize': FLAG,
    }
    _decay = 'decoupled'
    _lr_in_algorithm = True

    def __init__(self, lr: LR | None = None, eps: tuple[float, float] = (1e-30, 1e-3),
                 clip_threshold: float = 1.0, decay_rate: float = 0.8, beta1: float | None = None,
                 weight_decay: float = 0.0, factored: bool = True, grad_clip_norm: float | None = None,
                 grad_clip_value: float | None = None, *, maximize: bool = False):
        self._setup(lr=lr, eps=eps, clip_threshold=clip_threshold, decay_rate=decay_rate, beta1=beta1,
                    weight_decay=weight_decay, factored=factored, maximize=maximize,
                    grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_adafactor(hp['lr'], hp['decay_rate'], hp['eps'], hp['clip_threshold'],
                                        hp['beta1'], hp['factored'])
