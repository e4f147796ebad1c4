"""Learning-rate schedulers: jit-safe, per param group, checkpointable.

A scheduler keeps its step counter (and any other counter) in OptimStates.
Attached to an optimizer (``lr=scheduler``) it reads
and writes each param group's ``lr`` hyper-parameter State, the one place a group's lr
lives; on its own it keeps one lr State per ``base_lr`` entry. Every rule is a pure
``jnp`` function of those States: ``step()`` traces inside ``brainstate.transform.jit``
and, outside it, runs one cached compiled function, so stepping never recompiles.

A schedule is its rule: two pure methods, for a group with base lr ``base`` (torch's
``initial_lr``): :meth:`LRScheduler.lr_at` ``(base, epoch, group)``, the lr at ``epoch``,
and :meth:`LRScheduler.next_lr` ``(lr, base, epoch, group)``, the lr after a step to
``epoch`` from the current ``lr`` (torch's chainable form; ``epoch == 0`` is the initial
step; by default the closed form). The modules hold the rules by family: ``_decay``,
``_linear`` (ramps and warm-ups), ``_cosine``, ``_cyclic``, ``_plateau``, ``_lambdas``,
``_composite``. Schedulers with counters beyond the step (warm restarts, the plateau, the
composites) keep that machinery in their own module. The base (``_base``) holds the rule,
the counters and the compiled step; its other jobs have a module each: the optimizer
protocol (``_protocol``), torch's form (``_torch``), state dicts (``_saved``) and the
Parameters sections (``_docs``), with the shared helpers in ``_common``.

The protocol with an optimizer, all public, one direction each:

- the scheduler reads ``optimizer.param_groups`` (``group['lr']``, ``group.initial_lr``,
  ``group.lr_schedule``, the cycled ``'momentum'`` or ``'betas'``), sets a value with
  ``group.assign(key, value)`` (jit-safe, unchecked; ``group.check(key, value)`` checks
  one), and announces itself with ``optimizer.scheduler_attached(scheduler, cycles,
  first)``, which refuses a second scheduler or a group that cannot follow ``cycles``;
- the optimizer asks ``scheduler.check_new_group(hyperparams)`` before ``add_param_group``
  commits and calls ``scheduler.group_added(group)`` after.

:class:`Driven` names the optimizer's side; this package imports no optimizer module, so
any object with that side (not only a stateopt optimizer) can be driven.
"""

from ._base import CurrentLRs, LRScheduler
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
from ._protocol import Driven

#: Every scheduler class of the catalogue, in documentation order.
SCHEDULERS = [
    'StepLR', 'MultiStepLR', 'ExponentialLR', 'ExponentialDecayLR', 'CosineAnnealingLR',
    'CosineAnnealingWarmRestarts', 'PolynomialLR', 'LinearLR', 'ConstantLR', 'LambdaLR',
    'MultiplicativeLR', 'OneCycleLR', 'CyclicLR', 'ReduceLROnPlateau', 'WarmupScheduler',
    'WarmupCosineSchedule', 'PiecewiseConstantSchedule', 'SequentialLR', 'ChainedScheduler',
]

__all__ = ['LRScheduler', 'CurrentLRs', 'Driven', *SCHEDULERS, 'plot_schedule', 'SCHEDULERS']
