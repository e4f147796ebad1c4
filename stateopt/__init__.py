"""stateopt: a state-managed optimizer layer for brainstate, built on jax and optax."""

from . import functional, optimizers, schedulers, search
from ._base import Optimizer
from ._decay import decay_matrices_only
from ._ema import EMA
from ._jit import donating_jit
from ._optimizer import OptaxOptimizer, ParamGroup, ParamGroups
from ._packed import PackedBuffer, PackedParams
from ._state import OptimState, UniqueStateManager, param_name
from ._state_dict import StateDict
from ._version import __version__
from .checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointSave,
    LoadResult,
    OrbaxCheckpointManager,
    load_checkpoint,
    save_checkpoint,
    save_checkpoint_async,
)
from .optimizers import (
    ADOPT,
    LBFGS,
    SGD,
    SM3,
    AdaBelief,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Adan,
    Fromage,
    Lamb,
    Lars,
    Lion,
    Lookahead,
    Momentum,
    MomentumNesterov,
    Muon,
    NAdam,
    Nadam,
    NAdamW,
    Novograd,
    Prodigy,
    RAdam,
    RMSprop,
    Rprop,
    ScheduleFreeAdamW,
    ScheduleFreeSGD,
    Sophia,
    Yogi,
)
from .optimizers.sofo import SOFO, SOFODirection, SOFOScan, sample_tangents, sofo_direction
from .schedulers import (
    SCHEDULERS,
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CurrentLRs,
    CyclicLR,
    ExponentialDecayLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiplicativeLR,
    MultiStepLR,
    OneCycleLR,
    PiecewiseConstantSchedule,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
    WarmupCosineSchedule,
    WarmupScheduler,
    plot_schedule,
)
from .search import NevergradOptimizer, ScipyOptimizer

#: Every optimizer class of the catalogue, in documentation order.
OPTIMIZERS = list(optimizers.__all__)

__all__ = [
    '__version__',
    'OptimState', 'UniqueStateManager', 'param_name', 'decay_matrices_only',
    'Optimizer', 'ScipyOptimizer', 'NevergradOptimizer',
    'SOFO', 'SOFOScan', 'SOFODirection', 'sample_tangents', 'sofo_direction',
    'OptaxOptimizer', 'ParamGroup', 'ParamGroups', 'StateDict', 'OPTIMIZERS', 'donating_jit', 'functional',
    'PackedParams', 'PackedBuffer',
    'EMA',
    *OPTIMIZERS,
    'save_checkpoint', 'save_checkpoint_async', 'load_checkpoint', 'CheckpointSave', 'LoadResult',
    'CheckpointError', 'CheckpointMismatchError', 'OrbaxCheckpointManager',
    'SCHEDULERS', 'LRScheduler', 'CurrentLRs', *SCHEDULERS, 'plot_schedule',
]
