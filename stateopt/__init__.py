"""stateopt: a state-managed optimizer layer for brainstate, built on jax and optax."""

from ._optimizer import OptaxOptimizer, ParamGroup
from ._optimizers import SGD, Adam, AdamW, Momentum, MomentumNesterov
from ._state import OptimState, UniqueStateManager, param_name
from ._version import __version__

__all__ = [
    '__version__',
    # states
    'OptimState', 'UniqueStateManager', 'param_name',
    # optimizers
    'OptaxOptimizer', 'ParamGroup', 'SGD', 'Momentum', 'MomentumNesterov', 'Adam', 'AdamW',
]
