"""Muon: orthogonalised momentum for matrices, AdamW for the other parameters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from optax import contrib

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, open_unit_interval, positive_int
from .._optimizer import OptaxOptimizer
from ._common import BETAS, EPS, static_flag

__all__ = ['Muon', 'scale_by_muon_or_adam']


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
    hyperparameters = Hyperparameters(
        LR.but(default=0.02),
        Param('momentum', 0.95, open_unit_interval, 'The decay of the momentum of the matrices.'),
        static_flag('nesterov', True, 'Orthogonalise the Nesterov momentum ``u`` (else ``m̂``).'),
        Param('ns_steps', 5, positive_int, 'The Newton-Schulz iterations.', type='int', dynamic=False),
        EPS.but(doc='Added to ``||u||_F``, and to the denominator of the Adam steps.'),
        WEIGHT_DECAY,
        BETAS.but(name='adam_betas', doc='The ``betas`` of the Adam steps of the parameters that are not '
                                         'matrices.'))
    _decay = 'decoupled'
    slots = {
        'muon_count': 'inner_states.muon.inner_state.0.count',
        'ns_coeffs': 'inner_states.muon.inner_state.0.ns_coeffs',
        'momentum_buffer': 'inner_states.muon.inner_state.0.mu',
        'adam_count': 'inner_states.adam.inner_state.count',
        'exp_avg': 'inner_states.adam.inner_state.mu',
        'exp_avg_sq': 'inner_states.adam.inner_state.nu',
    }
    never_negative = ('exp_avg_sq',)

    @classmethod
    def _algorithm(cls, hp):
        beta1, beta2 = hp['adam_betas']
        return scale_by_muon_or_adam(hp['momentum'], hp['nesterov'], hp['ns_steps'], hp['eps'],
                                     beta1, beta2)


def _width_scaled(update: jax.Array) -> jax.Array:
    fan_in, fan_out = update.shape
    return update * max(1.0, fan_out / fan_in) ** 0.5


def scale_by_muon_or_adam(
    momentum: Any, nesterov: bool, ns_steps: int, eps: Any, adam_b1: Any, adam_b2: Any
) -> optax.GradientTransformation:
    """Muon's direction for matrices (2-D parameters), Adam's for every other parameter.

    Matrices: ``optax.contrib.scale_by_muon`` (momentum, then ``ns_steps`` Newton-Schulz
    iterations towards the nearest semi-orthogonal matrix) times
    ``sqrt(max(1, fan_out / fan_in))``; others: ``optax.scale_by_adam``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.muon import scale_by_muon_or_adam
    >>> tx = scale_by_muon_or_adam(0.95, True, 5, 1e-8, 0.9, 0.999)
    >>> g = {'matrix': jnp.eye(2) * 3.0, 'bias': jnp.array([3.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> round(float(d['bias'][0]), 4), d['matrix'].shape  # Adam's first step is sign(g)
    (1.0, (2, 2))
    """

    def dimension_numbers(tree):
        return jax.tree.map(lambda _: contrib.MuonDimensionNumbers(), tree)

    def labels(params):
        return jax.tree.map(lambda p: 'muon' if jnp.ndim(p) == 2 else 'adam', params)

    muon = optax.chain(
        contrib.scale_by_muon(ns_steps=ns_steps, beta=momentum, eps=eps, nesterov=nesterov,
                              weight_dimension_numbers=dimension_numbers),
        optax.stateless(lambda updates, params: jax.tree.map(_width_scaled, updates)),
    )
    return optax.partition({'muon': muon, 'adam': optax.scale_by_adam(adam_b1, adam_b2, eps)}, labels)
