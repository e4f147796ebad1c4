"""ADOPT: Adam normalising by the previous second moment."""

from __future__ import annotations

from typing import Any

from optax import contrib

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, non_negative
from .._optimizer import OptaxOptimizer
from ._common import BETAS, EPS, static_flag

__all__ = ['ADOPT']


def _optional_non_negative(name: str, value: Any) -> float | None:
    """``None`` (off) or a real number ``>= 0``."""
    return None if value is None else non_negative(name, value)


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

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR, BETAS.but(default=(0.9, 0.9999)),
        EPS.but(default=1e-6, doc='The least denominator ``max(sqrt(v), eps)``.'),
        WEIGHT_DECAY.but(doc='The weight-decay coefficient: an L2 penalty ``weight_decay * p`` added to the '
                             'gradient, or decoupled (see ``decoupled_weight_decay``).'),
        static_flag('decoupled_weight_decay', False, 'Multiply ``p`` by ``1 - lr * weight_decay`` at each '
                                                     'step instead of adding the L2 penalty.'),
        Param('clip_exponent', 0.25, _optional_non_negative, 'Clip the normalised gradient to '
              '``t ** clip_exponent`` (``None``: no clipping).', type='float or None'))
    slots = {'count': 'count', 'exp_avg': 'mu', 'exp_avg_sq': 'nu'}
    never_negative = ('exp_avg_sq',)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['betas']
        exponent = hp['clip_exponent']
        return contrib.scale_by_adopt(beta1, beta2, hp['eps'], use_clipping=exponent is not None,
                                      clip_value_fn=lambda step: step ** exponent)
