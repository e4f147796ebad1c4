"""LARS: momentum SGD with a layer-wise trust ratio."""

from __future__ import annotations

import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, open_unit_interval, positive
from .._optimizer import OptaxOptimizer
from ._common import EPS

__all__ = ['Lars']


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
    hyperparameters = Hyperparameters(
        LR.but(default=1.0),
        Param('momentum', 0.9, open_unit_interval, 'The decay of the momentum buffer.'),
        WEIGHT_DECAY,
        Param('trust_coefficient', 0.001, positive, 'Scales the trust ratio ``||p|| / ||g||``.'),
        EPS.but(doc='Added to ``||g||`` in the trust ratio.'))
    _lr_in_algorithm = True
    slots = {'momentum_buffer': '2.trace'}

    @classmethod
    def _algorithm(cls, hp):
        return optax.chain(
            optax.scale_by_trust_ratio(trust_coefficient=hp['trust_coefficient'], eps=hp['eps']),
            optax.scale(hp['lr']), optax.trace(decay=hp['momentum']))
