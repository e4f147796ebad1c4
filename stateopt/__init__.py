"""stateopt: a state-managed optimizer layer for brainstate, built on jax and optax."""

from . import _optimizers, _optimizers_more, _optimizers_torch
from ._optimizer import OptaxOptimizer, ParamGroup
from ._optimizers import *  # noqa: F403
from ._optimizers_more import *  # noqa: F403
from ._optimizers_torch import *  # noqa: F403
from ._state import OptimState, UniqueStateManager, param_name
from ._version import __version__

#: Every optimizer class of the catalogue, in documentation order.
OPTIMIZERS = _optimizers.__all__ + _optimizers_torch.__all__ + _optimizers_more.__all__

__all__ = [
    '__version__',
    'OptimState', 'UniqueStateManager', 'param_name',
    'OptaxOptimizer', 'ParamGroup', 'OPTIMIZERS',
    *OPTIMIZERS,
]
