"""The optimizer table every generic test runs over (torch's OptimizerInfo idea).

Adding an optimizer to the test suite is adding rows here: its constructor
configurations, the independent reference rule they must match, the per-group
overrides to try, and the invalid constructor arguments it must refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import reference

import stateopt


@dataclass
class Case:
    id: str
    cls: type
    kwargs: dict
    rule: Callable
    ref: dict                      # the reference rule's hyper-parameters
    group: dict = field(default_factory=dict)  # overrides for a second param group
    # hyper-parameter -> another value that must change the trajectory of this configuration
    effects: dict = field(default_factory=dict)
    # overrides under which a second group must not move at all
    frozen: dict = field(default_factory=lambda: dict(lr=1e-28))

    def make(self, **overrides: Any):
        return self.cls(**{**self.kwargs, **overrides})

    def ref_with(self, **overrides: Any) -> dict:
        return {**self.ref, **overrides}


BASE_CASES = [
    Case('sgd', stateopt.SGD, dict(lr=0.1), reference.sgd, dict(lr=0.1),
         group=dict(lr=0.03, weight_decay=0.2)),
    Case('sgd-momentum-dampening-decay', stateopt.SGD,
         dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01), reference.sgd,
         dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
         group=dict(lr=0.02, momentum=0.5, dampening=0.3, weight_decay=0.0),
         effects=dict(lr=0.02, momentum=0.5, dampening=0.3, weight_decay=0.2, maximize=True,
                      grad_clip_norm=0.1, grad_clip_value=0.01)),
    Case('sgd-nesterov-maximize', stateopt.SGD,
         dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True, weight_decay=0.1), reference.sgd,
         dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True, weight_decay=0.1),
         group=dict(momentum=0.6, maximize=False), effects=dict(nesterov=False)),
    Case('momentum', stateopt.Momentum, dict(lr=0.05), reference.sgd, dict(lr=0.05, momentum=0.9),
         group=dict(lr=0.01, momentum=0.5, weight_decay=0.1),
         effects=dict(lr=0.01, momentum=0.5, weight_decay=0.1, maximize=True, grad_clip_norm=0.1,
                      grad_clip_value=0.01)),
    Case('momentum-nesterov', stateopt.MomentumNesterov, dict(lr=0.05, momentum=0.8, weight_decay=0.05),
         reference.sgd, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05),
         group=dict(momentum=0.95, maximize=True),
         effects=dict(lr=0.01, momentum=0.5, weight_decay=0.2, maximize=True, grad_clip_norm=0.1,
                      grad_clip_value=0.01)),
    Case('adam', stateopt.Adam, dict(lr=0.01), reference.adam, dict(lr=0.01),
         group=dict(lr=0.002, betas=(0.8, 0.9), eps=1e-4),
         effects=dict(lr=0.002, betas=(0.8, 0.9), eps=1e-2, weight_decay=0.5, amsgrad=True,
                      maximize=True, grad_clip_norm=0.1, grad_clip_value=0.01)),
    Case('adam-amsgrad-decay', stateopt.Adam,
         dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True), reference.adam,
         dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True),
         group=dict(weight_decay=0.0, amsgrad=False, maximize=True)),
    Case('adam-beta-aliases', stateopt.Adam, dict(lr=0.02, beta1=0.7, beta2=0.95), reference.adam,
         dict(lr=0.02, betas=(0.7, 0.95))),
    Case('adamw', stateopt.AdamW, dict(lr=0.01), reference.adam,
         dict(lr=0.01, weight_decay=0.01, decoupled=True),
         group=dict(lr=0.03, weight_decay=0.3, betas=(0.5, 0.6)),
         effects=dict(lr=0.002, betas=(0.8, 0.9), eps=1e-2, weight_decay=0.5, amsgrad=True,
                      maximize=True, grad_clip_norm=0.1, grad_clip_value=0.01)),
    Case('adamw-amsgrad-maximize', stateopt.AdamW,
         dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True, betas=(0.85, 0.95)),
         reference.adam,
         dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True, betas=(0.85, 0.95),
              decoupled=True),
         group=dict(eps=1e-3, amsgrad=False)),
]

#: Constructor arguments each optimizer class must refuse with a ValueError naming the parameter.
BASE_INVALID = [
    (stateopt.SGD, dict(lr=-0.1), 'lr'),
    (stateopt.SGD, dict(lr=float('nan')), 'lr'),
    (stateopt.SGD, dict(momentum=-0.5), 'momentum'),
    (stateopt.SGD, dict(weight_decay=-1e-3), 'weight_decay'),
    (stateopt.SGD, dict(nesterov=True), 'nesterov'),
    (stateopt.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), 'nesterov'),
    (stateopt.SGD, dict(nesterov='yes', momentum=0.9), 'nesterov'),
    (stateopt.SGD, dict(dampening=1.5), 'dampening'),
    (stateopt.SGD, dict(grad_clip_norm=0.0), 'grad_clip_norm'),
    (stateopt.SGD, dict(grad_clip_value=-1.0), 'grad_clip_value'),
    (stateopt.Momentum, dict(momentum=-0.1), 'momentum'),
    (stateopt.MomentumNesterov, dict(momentum=0.0), 'momentum'),
    (stateopt.Adam, dict(betas=(1.0, 0.999)), 'betas'),
    (stateopt.Adam, dict(betas=(0.9, -0.1)), 'betas'),
    (stateopt.Adam, dict(betas=(0.9,)), 'betas'),
    (stateopt.Adam, dict(beta1=1.2), 'beta1'),
    (stateopt.Adam, dict(eps=0.0), 'eps'),
    (stateopt.Adam, dict(eps=-1e-8), 'eps'),
    (stateopt.Adam, dict(lr=float('inf')), 'lr'),
    (stateopt.Adam, dict(amsgrad=1), 'amsgrad'),
    (stateopt.AdamW, dict(weight_decay=-0.01), 'weight_decay'),
    (stateopt.AdamW, dict(lr='0.1'), 'lr'),
    (stateopt.OptaxOptimizer, dict(weight_decay=-1.0), 'weight_decay'),
]


#: (class, constructor kwargs, steps): each must minimise the quadratic and Rosenbrock tests.
BASE_CONVERGE = [
    (stateopt.SGD, dict(lr=1e-3, momentum=0.9), 6000),
    (stateopt.Momentum, dict(lr=1e-3), 6000),
    (stateopt.MomentumNesterov, dict(lr=1e-3), 6000),
    (stateopt.Adam, dict(lr=2e-2), 4000),
    (stateopt.AdamW, dict(lr=2e-2, weight_decay=0.0), 4000),
    (stateopt.OptaxOptimizer, dict(lr=2e-2), 4000),
]

import catalogue_more  # noqa: E402  (their rows use Case)
import catalogue_torch  # noqa: E402

CASES = BASE_CASES + catalogue_torch.CASES + catalogue_more.CASES
INVALID = BASE_INVALID + catalogue_torch.INVALID + catalogue_more.INVALID
CONVERGE = BASE_CONVERGE + catalogue_torch.CONVERGE + catalogue_more.CONVERGE


def grad_sequence(shapes: dict, steps: int, seed: int = 0) -> list[dict]:
    """Varying gradients: normal draws whose scale cycles through 1, 1e-5 (where eps
    placement matters), 0.1 and 3."""
    rng = np.random.default_rng(seed)
    scales = [1.0, 1e-5, 0.1, 3.0]
    return [{k: (rng.standard_normal(s) * scales[t % len(scales)]).astype(np.float32)
             for k, s in shapes.items()} for t in range(steps)]
