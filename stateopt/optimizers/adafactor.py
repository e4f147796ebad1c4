"""Adafactor with torch's update rule and the paper's optional first moment."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import (
    LR,
    WEIGHT_DECAY,
    Hyperparameters,
    Param,
    check_number,
    is_traced,
    non_negative,
    open_unit_interval,
    positive,
)
from .._optimizer import OptaxOptimizer
from ._common import f32, lerp, map_unzip, pair, rms, static_flag, zeros_like

__all__ = ['Adafactor', 'FactoredVariance', 'TorchAdafactorState', 'scale_by_torch_adafactor']

#: The learning rate when none is given: torch's default, the paper's cap on 1 / sqrt(t).
_DEFAULT_LR = 1e-2


def _lr(name: str, value: Any) -> Any:
    """A learning rate, ``None`` meaning :data:`_DEFAULT_LR`."""
    return LR.check(name, _DEFAULT_LR if value is None else value)


def _eps(name: str, value: Any) -> tuple:
    """``(eps1, eps2)`` with ``eps1 > 0`` and ``eps2 >= 0``."""
    if is_traced(value):
        return tuple(value)
    pair(name, value, ('eps1', 'eps2'))
    return positive(f'{name}[0]', value[0]), non_negative(f'{name}[1]', value[1])


def _decay_exponent(name: str, value: Any) -> Any:
    """The exponent of ``c_t = t^(-decay_rate)``, either sign accepted.

    A negative value is the same exponent in the sign convention of torch's ``beta2_decay``
    and HF transformers' Adafactor: no other reading of it exists.
    """
    if is_traced(value):
        return value
    non_negative(name, abs(check_number(name, value)))
    return float(value)   # kept as given (braintools reads it back); the rule takes its magnitude


def _optional_beta(name: str, value: Any) -> float | None:
    """``None`` (no first moment) or a real number in ``[0, 1)``."""
    return None if value is None else open_unit_interval(name, value)


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
    max(mean(R_t), eps1)``. ``decay_rate`` is torch's ``-beta2_decay`` (either sign is read
    as that exponent) and ``clip_threshold`` its ``d``; ``beta1`` adds the first moment of
    the paper and optax, which torch lacks. ``lr=None`` is torch's default ``lr=1e-2``, for which ``rho_t`` is
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
    hyperparameters = Hyperparameters(
        LR.but(default=None, check=_lr, type='float, scheduler, callable or None',
               doc=f'The learning rate, capping the relative step size ``rho_t`` (``None``: {_DEFAULT_LR}, '
                   'torch\'s default): a number, a stateopt scheduler (it drives every param group), or a '
                   'schedule ``count -> lr`` evaluated at the step count.'),
        Param('eps', (1e-30, 1e-3), _eps, 'The floors ``(eps1, eps2)`` of ``sqrt(V)`` and of ``RMS(p)``.',
              type='tuple of float'),
        Param('clip_threshold', 1.0, positive, 'The threshold ``d`` of the RMS of ``U`` above which the '
              'step is scaled down.'),
        Param('decay_rate', 0.8, _decay_exponent, 'The exponent of the second-moment decay ``c_t = '
              't^(-decay_rate)``; ``-0.8`` (torch\'s ``beta2_decay``, HF transformers\' sign) means the '
              'same as ``0.8``.'),
        Param('beta1', None, _optional_beta, 'The decay rate of the first moment (``None``: no first '
              'moment, as torch).', type='float or None'),
        WEIGHT_DECAY,
        static_flag('factored', True, 'Keep the second moment of each matrix as its row and column means.'))
    _decay = 'decoupled'
    _lr_in_algorithm = True
    slots = {'count': 'count', 'exp_avg': 'exp_avg', 'variance': 'variance'}
    never_negative = ('variance',)

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_adafactor(hp['lr'], hp['decay_rate'], hp['eps'], hp['clip_threshold'],
                                        hp['beta1'], hp['factored'])


class FactoredVariance(NamedTuple):
    """Adafactor's second moment of a matrix kept as row and column means (last two axes)."""

    row: jax.Array
    col: jax.Array


class TorchAdafactorState(NamedTuple):
    """State of :func:`scale_by_torch_adafactor`."""

    count: jax.Array
    variance: Any  # per parameter array: FactoredVariance, or the full second moment
    exp_avg: Any   # None unless the group was created with a beta1


def scale_by_torch_adafactor(
    lr: Any,
    decay_rate: Any = 0.8,
    eps: Any = (1e-30, 1e-3),
    clip_threshold: Any = 1.0,
    beta1: Any = None,
    factored: bool = True,
) -> optax.GradientTransformation:
    """torch's Adafactor rule, step size included, with an optional first moment.

    With ``t`` the step, ``(eps1, eps2) = eps`` and ``d = clip_threshold``, per array ``p``::

        c_t = t^(-decay_rate) ;  rho_t = min(lr, 1 / sqrt(t)) ;  a_t = max(eps2, RMS(p)) rho_t
        R_t = R + c_t (mean_cols(g^2) - R) ;  C_t = C + c_t (mean_rows(g^2) - C)
        V_t = R_t C_t / max(mean(R_t), eps1)            (factored: ndim >= 2 and factored)
        V_t = V + c_t (g^2 - V)                         (otherwise)
        U_t = g / max(sqrt(V_t), eps1) ;  step_t = a_t U_t / max(1, RMS(U_t) / d)
        m_t = beta1 m_{t-1} + (1 - beta1) step_t ;  direction = m_t  (step_t without beta1)

    Matrices are factored over their last two axes. The first moment follows the
    Adafactor paper and optax (torch has none); ``factored`` and whether there is a
    first moment are fixed by ``init``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.adafactor import scale_by_torch_adafactor
    >>> tx = scale_by_torch_adafactor(lr=0.01)
    >>> p = {'w': jnp.full((2, 2), 2.0)}
    >>> d, _ = tx.update({'w': jnp.ones((2, 2))}, tx.init(p), p)
    >>> d['w'].tolist()  # RMS(p) * min(lr, 1) * sign(g)
    [[0.019999999552965164, 0.019999999552965164], [0.019999999552965164, 0.019999999552965164]]
    """
    eps1, eps2 = eps

    def init_fn(params):
        def variance_of(p):
            if factored and jnp.ndim(p) >= 2:
                shape = jnp.shape(p)
                return FactoredVariance(jnp.zeros(shape[:-1] + (1,), jnp.result_type(p)),
                                        jnp.zeros(shape[:-2] + (1,) + shape[-1:], jnp.result_type(p)))
            return jnp.zeros_like(p)

        exp_avg = None if beta1 is None else zeros_like(params)
        return TorchAdafactorState(jnp.zeros([], jnp.int32), jax.tree.map(variance_of, params), exp_avg)

    def update_fn(updates, state, params):
        count = optax.safe_increment(state.count)
        step_number = count.astype(jnp.float32)
        complement = jnp.exp(-jnp.abs(f32(decay_rate)) * jnp.log(step_number))
        relative_step = jnp.minimum(f32(lr), jax.lax.rsqrt(step_number))

        def step_of(g, p, variance):
            scale = jnp.maximum(eps2, rms(p)) * relative_step
            square = g * g
            if isinstance(variance, FactoredVariance):
                row = lerp(variance.row, jnp.mean(square, axis=-1, keepdims=True), complement)
                col = lerp(variance.col, jnp.mean(square, axis=-2, keepdims=True), complement)
                estimate = row * col / jnp.maximum(jnp.mean(row, axis=-2, keepdims=True), eps1)
                variance = FactoredVariance(row, col)
            else:
                variance = estimate = lerp(variance, square, complement)
            scaled = g / jnp.maximum(jnp.sqrt(estimate), eps1)
            clipped = scaled / jnp.maximum(1.0, rms(scaled) / clip_threshold)
            return scale * clipped, variance

        steps, variance = map_unzip(step_of, 2, updates, params, state.variance)
        if state.exp_avg is None:
            return steps, TorchAdafactorState(count, variance, None)
        exp_avg = jax.tree.map(lambda m, s: beta1 * m + (1 - beta1) * s, state.exp_avg, steps)
        return exp_avg, TorchAdafactorState(count, variance, exp_avg)

    return optax.GradientTransformation(init_fn, update_fn)
