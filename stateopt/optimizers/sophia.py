"""Sophia: momentum over a clipped diagonal Hessian estimate."""

from __future__ import annotations

from typing import Any

import optax
from optax import contrib

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, optional_positive, positive, positive_int
from ._common import BETAS, EPS, negated
from ._loss import EvaluatesLoss

__all__ = ['Sophia']


def _hessian(name: str, value: Any) -> Any:
    if value == 'hutchinson' or isinstance(value, optax.GradientTransformation):
        return value
    raise ValueError(f"{name} must be 'hutchinson' or an optax transform returning a diagonal "
                     f"Hessian estimate, got {value!r}")


class Sophia(EvaluatesLoss):
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
    >>> [round(v, 4) for v in opt.state_dict()['state']['x']['hessian'].tolist()]  # 0.01 diag(∇²L)
    [0.02, 2.0]
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR,
        BETAS.but(default=(0.965, 0.99), doc='The decay rates ``(b1, b2)`` of the momentum and of the '
                                             'Hessian average ``h``.'),
        EPS.but(doc='The least denominator ``max(gamma * h, eps)``.'),
        WEIGHT_DECAY.but(default=1e-4),
        Param('gamma', 0.01, positive, 'Scales the Hessian average ``h`` in the denominator.'),
        Param('clip_threshold', 1.0, optional_positive, 'Clip each element of the step to '
              '``[-clip_threshold, clip_threshold]`` (``None``: no clipping).', type='float or None'),
        Param('update_interval', 10, positive_int, 'The steps between two Hessian estimates ``k``.',
              type='int', dynamic=False),
        Param('hessian', 'hutchinson', _hessian, "The diagonal Hessian estimate: ``'hutchinson'`` or an "
              'optax transform, as above.', type='str or optax.GradientTransformation', dynamic=False),
        maximize=False)
    _decay = 'decoupled'
    slots = {'count': '0.count', 'rng_key': '0.hessian_fn_state.key', 'exp_avg': '0.mu', 'hessian': '0.nu'}
    _objective_keyword = 'obj_fn'

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
