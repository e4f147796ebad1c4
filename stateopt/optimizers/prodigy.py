"""Prodigy: AdamW with an estimated step size."""

from __future__ import annotations

from typing import Any

from optax import contrib

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, open_unit_interval, positive
from .._optimizer import OptaxOptimizer
from ._common import BETAS, EPS, negated, static_flag

__all__ = ['Prodigy']


def _optional_unit(name: str, value: Any) -> float | None:
    """``None`` or a real number in ``[0, 1)``."""
    return None if value is None else open_unit_interval(name, value)


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
    hyperparameters = Hyperparameters(
        LR.but(default=1.0), BETAS,
        Param('beta3', None, _optional_unit, 'The decay ``β3`` of ``r`` and ``s`` (``None``: ``sqrt(b2)``).',
              type='float or None'),
        EPS, WEIGHT_DECAY,
        Param('d0', 1e-6, positive, 'The initial estimate ``d_0`` of the step size.'),
        Param('d_coef', 1.0, positive, 'Scales each new estimate of ``d``.'),
        static_flag('safeguard_warmup', False, 'Use ``d_t`` in place of ``η_t`` in ``s`` (steadier with a '
                                                'warm-up).'))
    _decay = None
    _lr_in_algorithm = True
    slots = {
        'count': 'count', 'estim_lr': 'estim_lr', 'numerator_weighted': 'numerator_weighted',
        'exp_avg': 'exp_avg', 'exp_avg_sq': 'exp_avg_sq', 'grad_sum': 'grad_sum', 'params0': 'params0'}
    never_negative = ('exp_avg_sq', 'estim_lr')

    @classmethod
    def _algorithm(cls, hp):
        return negated(contrib.prodigy(
            hp['lr'], hp['betas'], hp['beta3'], hp['eps'], estim_lr0=hp['d0'],
            estim_lr_coef=hp['d_coef'], weight_decay=hp['weight_decay'],
            safeguard_warmup=hp['safeguard_warmup']))
