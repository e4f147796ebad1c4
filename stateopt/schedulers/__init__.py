"""Learning-rate schedulers: jit-safe, per param group, checkpointable.

A scheduler keeps its step counter (and any other counter) in OptimStates.
Attached to an optimizer (``lr=scheduler``) it reads
and writes each param group's ``lr`` hyper-parameter State, the one place a group's lr
lives; on its own it keeps one lr State per ``base_lr`` entry. Every rule is a pure
``jnp`` function of those States: ``step()`` traces inside ``brainstate.transform.jit``
and, outside it, runs one cached compiled function, so stepping never recompiles.

Each scheduler states its rule through two pure methods, for a group with base lr
``base`` (torch's ``initial_lr``): ``_closed(base, epoch, group)``, the lr at
``epoch``, and ``_recursive(lr, base, epoch, group)``, the lr after a step to
``epoch`` from the current ``lr`` (torch's chainable form; ``epoch == 0`` is the
initial step). Schedulers with other counters also override ``_fresh`` and
``_advance``.
"""

from ._base import LRScheduler
from ._composite import ChainedScheduler, SequentialLR
from ._cosine import CosineAnnealingLR, CosineAnnealingWarmRestarts, WarmupCosineSchedule
from ._cyclic import CyclicLR, OneCycleLR
from ._decay import (
    ExponentialDecayLR,
    ExponentialLR,
    MultiStepLR,
    PiecewiseConstantSchedule,
    PolynomialLR,
    StepLR,
)
from ._lambdas import LambdaLR, MultiplicativeLR
from ._linear import ConstantLR, LinearLR, WarmupScheduler
from ._plateau import ReduceLROnPlateau
from ._plot import plot_schedule

#: Every scheduler class of the catalogue, in documentation order.
SCHEDULERS = [
    'StepLR', 'MultiStepLR', 'ExponentialLR', 'ExponentialDecayLR', 'CosineAnnealingLR',
    'CosineAnnealingWarmRestarts', 'PolynomialLR', 'LinearLR', 'ConstantLR', 'LambdaLR',
    'MultiplicativeLR', 'OneCycleLR', 'CyclicLR', 'ReduceLROnPlateau', 'WarmupScheduler',
    'WarmupCosineSchedule', 'PiecewiseConstantSchedule', 'SequentialLR', 'ChainedScheduler',
]

__all__ = ['LRScheduler', *SCHEDULERS, 'plot_schedule', 'SCHEDULERS']
