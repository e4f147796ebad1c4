"""The optimizer table every generic test runs over (torch's OptimizerInfo idea).

Adding an optimizer to the test suite is adding rows here, in its algorithm family's section:
its constructor configurations, the independent reference rule they must match (reference.py),
the per-group overrides to try, the invalid constructor arguments it must refuse, and the
settings under which it must converge.

``CASES`` are the rows whose reference works on one array. ``GROUP_CASES`` are the rows whose
algorithm couples the parameters of a param group (L-BFGS's memory, Prodigy's step-size
estimate): their references work on the group as one flat vector, so test_group_coupled.py runs
them instead of the per-array generic tests. ``SHOWN_ELSEWHERE`` names the hyper-parameters whose
effect other test modules show.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import optax
import reference as ref

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
    # the algorithm couples the parameters of a group: the reference runs on the group as one vector
    couples_group: bool = False

    def make(self, **overrides: Any):
        return self.cls(**{**self.kwargs, **overrides})

    def ref_with(self, **overrides: Any) -> dict:
        return {**self.ref, **overrides}


def squared_gradient_estimator(scale: float = 1.0) -> optax.GradientTransformation:
    """Sophia's Hessian estimate ``scale * g ⊙ g`` (reference.squared_gradient for scale 1)."""
    return optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda grads, state, params=None: (jax.tree.map(lambda g: scale * g * g, grads), state))


SQUARED = squared_gradient_estimator()
ADAM_DIRECTION = optax.scale_by_adam()
BASE_ADAM = stateopt.Adam(betas=(0.8, 0.99), eps=1e-6)
CLIPS = dict(grad_clip_norm=0.1, grad_clip_value=0.01)
#: Rprop never steps below step_size_min, whatever its lr: a group that must not move needs a tiny one
RPROP_FROZEN = dict(lr=1e-28, step_sizes=(1e-30, 50.0))

ROWS = [
    # -- sgd: SGD, Momentum, MomentumNesterov
    Case('sgd', stateopt.SGD, dict(lr=0.1), ref.sgd, dict(lr=0.1),
         group=dict(lr=0.03, weight_decay=0.2)),
    Case('sgd-momentum-dampening-decay', stateopt.SGD,
         dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01), ref.sgd,
         dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
         group=dict(lr=0.02, momentum=0.5, dampening=0.3, weight_decay=0.0),
         effects=dict(lr=0.02, momentum=0.5, dampening=0.3, weight_decay=0.2, maximize=True,
                      grad_clip_norm=0.1, grad_clip_value=0.01)),
    Case('sgd-nesterov-maximize', stateopt.SGD,
         dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True, weight_decay=0.1), ref.sgd,
         dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True, weight_decay=0.1),
         group=dict(momentum=0.6, maximize=False), effects=dict(nesterov=False)),
    Case('momentum', stateopt.Momentum, dict(lr=0.05), ref.sgd, dict(lr=0.05, momentum=0.9),
         group=dict(lr=0.01, momentum=0.5, weight_decay=0.1),
         effects=dict(lr=0.01, momentum=0.5, weight_decay=0.1, maximize=True, grad_clip_norm=0.1,
                      grad_clip_value=0.01)),
    Case('momentum-nesterov', stateopt.MomentumNesterov, dict(lr=0.05, momentum=0.8, weight_decay=0.05),
         ref.sgd, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05),
         group=dict(momentum=0.95, maximize=True),
         effects=dict(lr=0.01, momentum=0.5, weight_decay=0.2, maximize=True, grad_clip_norm=0.1,
                      grad_clip_value=0.01)),
    # -- adam: Adam, AdamW
    Case('adam', stateopt.Adam, dict(lr=0.01), ref.adam, dict(lr=0.01),
         group=dict(lr=0.002, betas=(0.8, 0.9), eps=1e-4),
         effects=dict(lr=0.002, betas=(0.8, 0.9), eps=1e-2, weight_decay=0.5, amsgrad=True,
                      maximize=True, grad_clip_norm=0.1, grad_clip_value=0.01)),
    Case('adam-amsgrad-decay', stateopt.Adam,
         dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True), ref.adam,
         dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True),
         group=dict(weight_decay=0.0, amsgrad=False, maximize=True)),
    Case('adam-beta-aliases', stateopt.Adam, dict(lr=0.02, beta1=0.7, beta2=0.95), ref.adam,
         dict(lr=0.02, betas=(0.7, 0.95))),
    Case('adamw', stateopt.AdamW, dict(lr=0.01), ref.adam,
         dict(lr=0.01, weight_decay=0.01, decoupled=True),
         group=dict(lr=0.03, weight_decay=0.3, betas=(0.5, 0.6)),
         effects=dict(lr=0.002, betas=(0.8, 0.9), eps=1e-2, weight_decay=0.5, amsgrad=True,
                      maximize=True, grad_clip_norm=0.1, grad_clip_value=0.01)),
    Case('adamw-amsgrad-maximize', stateopt.AdamW,
         dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True, betas=(0.85, 0.95)),
         ref.adam,
         dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True, betas=(0.85, 0.95),
              decoupled=True),
         group=dict(eps=1e-3, amsgrad=False)),
    # -- adagrad
    Case('adagrad', stateopt.Adagrad, dict(lr=0.05), ref.adagrad, dict(lr=0.05),
         group=dict(lr=0.02, lr_decay=0.1, initial_accumulator_value=0.5, eps=1e-3, weight_decay=0.1),
         effects=dict(lr=0.02, lr_decay=0.5, weight_decay=0.3, initial_accumulator_value=0.5, eps=0.1,
                      maximize=True, **CLIPS)),
    Case('adagrad-decay-maximize', stateopt.Adagrad,
         dict(lr=0.05, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.1, eps=1e-6,
              maximize=True), ref.adagrad,
         dict(lr=0.05, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.1, eps=1e-6,
              maximize=True),
         group=dict(maximize=False, lr_decay=0.0, initial_accumulator_value=0.0)),
    # -- adadelta
    Case('adadelta', stateopt.Adadelta, dict(), ref.adadelta, dict(lr=1.0),
         group=dict(lr=0.5, rho=0.5, eps=1e-4, weight_decay=0.1),
         effects=dict(lr=0.5, rho=0.5, eps=1e-3, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('adadelta-decay-maximize', stateopt.Adadelta,
         dict(lr=2.0, rho=0.8, eps=1e-5, weight_decay=0.05, maximize=True), ref.adadelta,
         dict(lr=2.0, rho=0.8, eps=1e-5, weight_decay=0.05, maximize=True),
         group=dict(rho=0.95, maximize=False)),
    # -- rmsprop
    Case('rmsprop', stateopt.RMSprop, dict(lr=0.01), ref.rmsprop, dict(lr=0.01),
         group=dict(lr=0.003, alpha=0.9, eps=1e-4, weight_decay=0.1),
         effects=dict(lr=0.003, alpha=0.9, eps=1e-2, weight_decay=0.5, momentum=0.9, centered=True,
                      maximize=True, **CLIPS)),
    Case('rmsprop-centered-momentum', stateopt.RMSprop,
         dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.05, momentum=0.8, centered=True, maximize=True),
         ref.rmsprop,
         dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.05, momentum=0.8, centered=True, maximize=True),
         group=dict(momentum=0.5, centered=False, maximize=False, alpha=0.95)),
    # -- adamax
    Case('adamax', stateopt.Adamax, dict(lr=0.01), ref.adamax, dict(lr=0.01),
         group=dict(lr=0.03, betas=(0.8, 0.9), eps=1e-4),
         effects=dict(lr=0.002, betas=(0.8, 0.9), eps=1e-2, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('adamax-decay-maximize', stateopt.Adamax,
         dict(lr=0.02, betas=(0.85, 0.95), eps=1e-6, weight_decay=0.1, maximize=True), ref.adamax,
         dict(lr=0.02, betas=(0.85, 0.95), eps=1e-6, weight_decay=0.1, maximize=True),
         group=dict(weight_decay=0.0, maximize=False)),
    # -- nadam: Nadam / NAdam, NAdamW
    Case('nadam', stateopt.Nadam, dict(lr=0.01), ref.nadam, dict(lr=0.01),
         group=dict(lr=0.003, betas=(0.8, 0.95), momentum_decay=0.01, eps=1e-4),
         effects=dict(lr=0.003, betas=(0.8, 0.9), eps=1e-2, weight_decay=0.5, momentum_decay=0.1,
                      maximize=True, **CLIPS)),
    Case('nadam-decoupled-maximize', stateopt.NAdam,
         dict(lr=0.01, betas=(0.85, 0.95), weight_decay=0.1, decoupled_weight_decay=True,
              momentum_decay=0.01, maximize=True), ref.nadam,
         dict(lr=0.01, betas=(0.85, 0.95), weight_decay=0.1, decoupled_weight_decay=True,
              momentum_decay=0.01, maximize=True),
         group=dict(decoupled_weight_decay=False, maximize=False),
         effects=dict(decoupled_weight_decay=False)),
    Case('nadamw', stateopt.NAdamW, dict(lr=0.01), ref.nadamw, dict(lr=0.01),
         group=dict(lr=0.03, betas=(0.8, 0.9), weight_decay=0.2),
         effects=dict(lr=0.03, betas=(0.8, 0.9), eps=1e-2, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('nadamw-maximize', stateopt.NAdamW,
         dict(lr=0.02, betas=(0.7, 0.95), eps=1e-6, weight_decay=0.0, maximize=True), ref.nadamw,
         dict(lr=0.02, betas=(0.7, 0.95), eps=1e-6, weight_decay=0.0, maximize=True),
         group=dict(weight_decay=0.1, maximize=False)),
    # -- radam
    Case('radam', stateopt.RAdam, dict(lr=0.01), ref.radam, dict(lr=0.01),
         group=dict(lr=0.003, betas=(0.8, 0.9), eps=1e-4),
         effects=dict(lr=0.003, betas=(0.8, 0.9), eps=0.1, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('radam-decoupled-maximize', stateopt.RAdam,
         dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, decoupled_weight_decay=True,
              maximize=True), ref.radam,
         dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, decoupled_weight_decay=True,
              maximize=True),
         group=dict(decoupled_weight_decay=False, maximize=False, betas=(0.9, 0.99)),
         effects=dict(decoupled_weight_decay=False)),
    # -- rprop
    Case('rprop', stateopt.Rprop, dict(lr=0.01), ref.rprop, dict(lr=0.01),
         group=dict(lr=0.003, etas=(0.3, 1.5), step_sizes=(1e-4, 0.02)),
         effects=dict(lr=0.003, etas=(0.3, 1.5), step_sizes=(1e-6, 0.011), maximize=True),
         frozen=RPROP_FROZEN),
    Case('rprop-maximize', stateopt.Rprop,
         dict(lr=0.02, etas=(0.4, 1.3), step_sizes=(1e-3, 0.05), maximize=True), ref.rprop,
         dict(lr=0.02, etas=(0.4, 1.3), step_sizes=(1e-3, 0.05), maximize=True),
         group=dict(maximize=False, lr=0.005), frozen=RPROP_FROZEN),
    # -- adafactor
    Case('adafactor', stateopt.Adafactor, dict(lr=1e-2), ref.adafactor, dict(lr=1e-2),
         group=dict(lr=0.05, decay_rate=0.5, eps=(1e-3, 1e-2), clip_threshold=2.0, beta1=0.9,
                    weight_decay=0.1),
         effects=dict(lr=0.002, eps=(0.5, 1e-3), clip_threshold=0.5, decay_rate=0.5, beta1=0.9,
                      weight_decay=0.5, factored=False, maximize=True, **CLIPS)),
    Case('adafactor-momentum-unfactored', stateopt.Adafactor,
         dict(lr=0.05, eps=(1e-3, 0.5), clip_threshold=0.8, decay_rate=0.6, beta1=0.8, weight_decay=0.1,
              factored=False, maximize=True), ref.adafactor,
         dict(lr=0.05, eps=(1e-3, 0.5), clip_threshold=0.8, decay_rate=0.6, beta1=0.8, weight_decay=0.1,
              factored=False, maximize=True),
         group=dict(beta1=0.5, maximize=False),
         effects=dict(eps=(1e-3, 3.0))),
    # -- lamb
    Case('lamb', stateopt.Lamb, dict(lr=0.01), ref.lamb, dict(lr=0.01),
         group=dict(lr=0.03, betas=(0.8, 0.9), weight_decay=0.1),
         effects=dict(lr=0.03, betas=(0.8, 0.9), eps=1e-2, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('lamb-decay-maximize', stateopt.Lamb,
         dict(lr=0.02, betas=(0.85, 0.99), eps=1e-4, weight_decay=0.05, maximize=True), ref.lamb,
         dict(lr=0.02, betas=(0.85, 0.99), eps=1e-4, weight_decay=0.05, maximize=True),
         group=dict(eps=1e-2, maximize=False)),
    # -- lars
    Case('lars', stateopt.Lars, dict(lr=1.0), ref.lars, dict(lr=1.0),
         group=dict(lr=0.5, momentum=0.5, trust_coefficient=0.01)),
    Case('lars-decay-maximize', stateopt.Lars,
         dict(lr=0.5, momentum=0.8, weight_decay=0.1, trust_coefficient=0.02, eps=1e-3, maximize=True),
         ref.lars, dict(lr=0.5, momentum=0.8, weight_decay=0.1, trust_coefficient=0.02, eps=1e-3,
                        maximize=True),
         group=dict(weight_decay=0.0, eps=1e-8, maximize=False),
         effects=dict(lr=0.2, momentum=0.3, weight_decay=0.5, trust_coefficient=0.05, eps=0.1,
                      maximize=False, **CLIPS)),
    # -- lookahead
    Case('lookahead-optax-adam', stateopt.Lookahead, dict(base_optimizer=ADAM_DIRECTION, lr=0.01),
         ref.lookahead, dict(lr=0.01, base='adam'),
         group=dict(lr=0.05, sync_period=2, alpha=0.3),
         effects=dict(base_optimizer=optax.identity(), sync_period=2, alpha=0.2, lr=0.03,
                      weight_decay=0.3, maximize=True, **CLIPS)),
    Case('lookahead-stateopt-adam', stateopt.Lookahead,
         dict(base_optimizer=BASE_ADAM, sync_period=3, alpha=0.8, lr=0.05, weight_decay=0.1,
              maximize=True),
         ref.lookahead, dict(lr=0.05, sync_period=3, alpha=0.8, weight_decay=0.1, maximize=True,
                             base='adam', betas=(0.8, 0.99), eps=1e-6),
         group=dict(sync_period=4, alpha=0.5, weight_decay=0.0)),
    # -- yogi
    Case('yogi', stateopt.Yogi, dict(lr=0.01), ref.yogi, dict(lr=0.01),
         group=dict(lr=0.03, betas=(0.8, 0.9), eps=1e-6),
         effects=dict(lr=0.03, betas=(0.8, 0.9), eps=1e-1, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('yogi-decay-maximize', stateopt.Yogi,
         dict(lr=0.02, betas=(0.5, 0.99), eps=1e-5, weight_decay=0.1, maximize=True), ref.yogi,
         dict(lr=0.02, betas=(0.5, 0.99), eps=1e-5, weight_decay=0.1, maximize=True),
         group=dict(weight_decay=0.0, maximize=False)),
    # -- adabelief
    Case('adabelief', stateopt.AdaBelief, dict(lr=0.01), ref.adabelief, dict(lr=0.01),
         group=dict(lr=0.03, betas=(0.8, 0.9), eps=1e-8),
         effects=dict(lr=0.03, betas=(0.8, 0.9), eps=1e-2, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('adabelief-decay-maximize', stateopt.AdaBelief,
         dict(lr=0.02, betas=(0.7, 0.95), eps=1e-6, weight_decay=0.1, maximize=True), ref.adabelief,
         dict(lr=0.02, betas=(0.7, 0.95), eps=1e-6, weight_decay=0.1, maximize=True),
         group=dict(eps=1e-3, maximize=False)),
    # -- lion
    Case('lion', stateopt.Lion, dict(lr=0.01), ref.lion, dict(lr=0.01),
         group=dict(lr=0.003, betas=(0.5, 0.9), weight_decay=0.5),
         effects=dict(lr=0.003, betas=(0.0, 0.5), weight_decay=0.5, maximize=True, **CLIPS)),
    Case('lion-decay-maximize', stateopt.Lion,
         dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.3, maximize=True), ref.lion,
         dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.3, maximize=True),
         group=dict(betas=(0.95, 0.999), maximize=False)),
    # -- sm3
    Case('sm3', stateopt.SM3, dict(lr=0.1), ref.sm3, dict(lr=0.1),
         group=dict(lr=0.3, momentum=0.5, eps=1e-3),
         effects=dict(lr=0.3, momentum=0.5, eps=1e-1, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('sm3-no-momentum-decay', stateopt.SM3,
         dict(lr=0.2, momentum=0.0, eps=1e-6, weight_decay=0.1, maximize=True), ref.sm3,
         dict(lr=0.2, momentum=0.0, eps=1e-6, weight_decay=0.1, maximize=True),
         group=dict(momentum=0.8, maximize=False)),
    # -- novograd
    Case('novograd', stateopt.Novograd, dict(lr=0.01), ref.novograd, dict(lr=0.01),
         group=dict(lr=0.03, betas=(0.8, 0.5), weight_decay=0.1),
         effects=dict(lr=0.03, betas=(0.8, 0.5), eps=1e-1, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('novograd-decay-maximize', stateopt.Novograd,
         dict(lr=0.02, betas=(0.95, 0.25), eps=1e-4, weight_decay=0.05, maximize=True), ref.novograd,
         dict(lr=0.02, betas=(0.95, 0.25), eps=1e-4, weight_decay=0.05, maximize=True),
         group=dict(eps=1e-2, maximize=False)),
    # -- fromage
    Case('fromage', stateopt.Fromage, dict(lr=0.05), ref.fromage, dict(lr=0.05),
         group=dict(lr=0.1, momentum=0.5)),
    Case('fromage-momentum-maximize', stateopt.Fromage, dict(lr=0.1, momentum=0.9, maximize=True),
         ref.fromage, dict(lr=0.1, momentum=0.9, maximize=True),
         group=dict(lr=0.02, momentum=0.3, maximize=False),
         effects=dict(lr=0.02, momentum=0.3, maximize=False, **CLIPS)),
    # -- lbfgs (couples its group)
    Case('lbfgs', stateopt.LBFGS, dict(lr=0.5), ref.lbfgs, dict(lr=0.5),
         group=dict(lr=0.2, memory_size=3),
         effects=dict(lr=0.2, memory_size=2, scale_init_precond=False, **CLIPS), couples_group=True),
    Case('lbfgs-small-memory', stateopt.LBFGS, dict(lr=0.3, memory_size=3, scale_init_precond=False),
         ref.lbfgs, dict(lr=0.3, memory_size=3, scale_init_precond=False),
         group=dict(memory_size=5, scale_init_precond=True), couples_group=True),
    # -- schedule_free: ScheduleFreeSGD, ScheduleFreeAdamW
    Case('schedule-free-sgd', stateopt.ScheduleFreeSGD, dict(lr=0.1), ref.schedule_free,
         dict(lr=0.1, momentum=0.9),
         group=dict(lr=0.05, momentum=0.5, weight_lr_power=1.0),
         effects=dict(lr=0.05, momentum=0.5, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('schedule-free-sgd-decay', stateopt.ScheduleFreeSGD,
         dict(lr=0.05, momentum=0.7, weight_decay=0.1, weight_lr_power=3.0, maximize=True),
         ref.schedule_free,
         dict(lr=0.05, momentum=0.7, weight_decay=0.1, weight_lr_power=3.0, maximize=True),
         group=dict(momentum=1.0, weight_decay=0.0)),
    Case('schedule-free-adamw', stateopt.ScheduleFreeAdamW, dict(lr=0.01), ref.schedule_free,
         dict(lr=0.01, betas=(0.9, 0.999), adam=True),
         group=dict(lr=0.03, betas=(0.5, 0.9), eps=1e-4),
         effects=dict(lr=0.03, betas=(0.5, 0.9), eps=1e-2, weight_decay=0.5, maximize=True, **CLIPS)),
    Case('schedule-free-adamw-decay', stateopt.ScheduleFreeAdamW,
         dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, weight_lr_power=1.0,
              maximize=True),
         ref.schedule_free, dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1,
                                 weight_lr_power=1.0, maximize=True, adam=True),
         group=dict(weight_decay=0.0, maximize=False)),
    # -- muon
    Case('muon', stateopt.Muon, dict(lr=0.02), ref.muon, dict(lr=0.02),
         group=dict(lr=0.05, adam_betas=(0.8, 0.9), eps=1e-4, weight_decay=0.1),
         effects=dict(lr=0.05, adam_betas=(0.8, 0.9), eps=1e-2, weight_decay=0.5, maximize=True,
                      **CLIPS)),
    Case('muon-plain-momentum', stateopt.Muon,
         dict(lr=0.05, momentum=0.9, nesterov=False, ns_steps=3, eps=1e-6, weight_decay=0.1,
              adam_betas=(0.8, 0.99), maximize=True),
         ref.muon, dict(lr=0.05, momentum=0.9, nesterov=False, ns_steps=3, eps=1e-6, weight_decay=0.1,
                        adam_betas=(0.8, 0.99), maximize=True),
         group=dict(adam_betas=(0.9, 0.999), maximize=False)),
    # -- prodigy (couples its group)
    Case('prodigy', stateopt.Prodigy, dict(d0=1e-3), ref.prodigy, dict(d0=1e-3),
         group=dict(lr=0.5, betas=(0.8, 0.99), d_coef=2.0),
         effects=dict(lr=0.5, betas=(0.8, 0.99), beta3=0.5, eps=1e-1, d0=1e-2, d_coef=2.0,
                      safeguard_warmup=True, weight_decay=0.5, maximize=True, **CLIPS),
         couples_group=True),
    Case('prodigy-decay-maximize', stateopt.Prodigy,
         dict(lr=0.8, betas=(0.85, 0.99), beta3=0.9, eps=1e-6, weight_decay=0.1, d0=1e-2, d_coef=0.5,
              safeguard_warmup=True, maximize=True),
         ref.prodigy, dict(lr=0.8, betas=(0.85, 0.99), beta3=0.9, eps=1e-6, weight_decay=0.1, d0=1e-2,
                           d_coef=0.5, safeguard_warmup=True, maximize=True),
         group=dict(safeguard_warmup=False, beta3=0.5, maximize=False), couples_group=True),
    # -- adopt
    Case('adopt', stateopt.ADOPT, dict(lr=0.01), ref.adopt, dict(lr=0.01),
         group=dict(lr=0.03, betas=(0.8, 0.99), clip_exponent=0.5),
         effects=dict(lr=0.03, betas=(0.8, 0.99), eps=1e-1, clip_exponent=None, weight_decay=0.5,
                      maximize=True, **CLIPS)),
    Case('adopt-decoupled-unclipped', stateopt.ADOPT,
         dict(lr=0.02, betas=(0.7, 0.95), eps=1e-4, weight_decay=0.1, decoupled_weight_decay=True,
              clip_exponent=None, maximize=True),
         ref.adopt, dict(lr=0.02, betas=(0.7, 0.95), eps=1e-4, weight_decay=0.1,
                         decoupled_weight_decay=True, clip_exponent=None, maximize=True),
         group=dict(decoupled_weight_decay=False, clip_exponent=0.25, maximize=False),
         effects=dict(decoupled_weight_decay=False)),   # where there is weight decay to couple
    # -- adan
    Case('adan', stateopt.Adan, dict(lr=0.01), ref.adan, dict(lr=0.01),
         group=dict(lr=0.03, betas=(0.9, 0.8, 0.95), weight_decay=0.1),
         effects=dict(lr=0.03, betas=(0.9, 0.8, 0.95), eps=1e-1, weight_decay=0.5, maximize=True,
                      **CLIPS)),
    Case('adan-decay-maximize', stateopt.Adan,
         dict(lr=0.02, betas=(0.9, 0.5, 0.9), eps=1e-6, weight_decay=0.2, maximize=True), ref.adan,
         dict(lr=0.02, betas=(0.9, 0.5, 0.9), eps=1e-6, weight_decay=0.2, maximize=True),
         group=dict(eps=1e-3, maximize=False)),
    # -- sophia
    Case('sophia', stateopt.Sophia, dict(lr=0.01, hessian=SQUARED), ref.sophia, dict(lr=0.01),
         group=dict(lr=0.03, betas=(0.8, 0.9), gamma=0.5, update_interval=3)),
    Case('sophia-unclipped', stateopt.Sophia,
         dict(lr=0.02, betas=(0.9, 0.5), eps=0.5, weight_decay=0.1, gamma=5.0, clip_threshold=None,
              update_interval=2, hessian=SQUARED),
         ref.sophia, dict(lr=0.02, betas=(0.9, 0.5), eps=0.5, weight_decay=0.1, gamma=5.0,
                          clip_threshold=None, update_interval=2),
         group=dict(eps=0.1, gamma=2.0, weight_decay=0.0),
         effects=dict(lr=0.03, betas=(0.8, 0.9), gamma=1.0, eps=2.0, clip_threshold=0.05,
                      update_interval=3, hessian=squared_gradient_estimator(4.0), weight_decay=0.5,
                      **CLIPS)),
]

#: The rows whose reference works on one array: the generic tests run over these.
CASES = [case for case in ROWS if not case.couples_group]
#: The rows whose reference works on a whole param group (see test_group_coupled.py).
GROUP_CASES = [case for case in ROWS if case.couples_group]

#: class -> hyper-parameters whose effect another test module shows: GROUP_CASES' effects
#: (test_group_coupled.py), L-BFGS's line search (test_lbfgs.py), Muon's matrix-only
#: hyper-parameters, on a matrix group (test_muon.py), and the schedule-free weight_lr_power,
#: which changes nothing under a constant lr: it needs a schedule (test_schedule_free.py)
SHOWN_ELSEWHERE = {
    stateopt.LBFGS: {'lr', 'memory_size', 'scale_init_precond', 'linesearch', 'grad_clip_norm',
                     'grad_clip_value'},
    stateopt.Prodigy: set(next(case for case in GROUP_CASES if case.id == 'prodigy').effects),
    stateopt.Muon: {'momentum', 'nesterov', 'ns_steps'},
    stateopt.ScheduleFreeSGD: {'weight_lr_power'},
    stateopt.ScheduleFreeAdamW: {'weight_lr_power'},
    # Clipping keeps every sign, which is all Rprop reads: test_torch_golden shows the clipped run is
    # the unclipped reference (braintools' signature has them).
    stateopt.Rprop: {'grad_clip_norm', 'grad_clip_value'},
}
# test_optimizer.py's decay-mask test runs every row whose class takes a mask and whose reference takes
# weight_decay: the mask is shown to matter for those rows' classes.
for _case in CASES:
    if 'weight_decay_mask' in _case.cls._hyperparams and \
            'weight_decay' in inspect.signature(_case.rule).parameters:
        SHOWN_ELSEWHERE[_case.cls] = SHOWN_ELSEWHERE.get(_case.cls, set()) | {'weight_decay_mask'}

#: Constructor arguments each optimizer class must refuse with a ValueError naming the parameter.
#: This table and CONVERGE keep the documentation order of stateopt.OPTIMIZERS (OptaxOptimizer after
#: AdamW): their test ids number the rows.
INVALID = [
    # -- sgd
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
    # -- adam
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
    # -- OptaxOptimizer
    (stateopt.OptaxOptimizer, dict(weight_decay=-1.0), 'weight_decay'),
    # -- adagrad
    (stateopt.Adagrad, dict(lr=-0.1), 'lr'),
    (stateopt.Adagrad, dict(lr_decay=-1.0), 'lr_decay'),
    (stateopt.Adagrad, dict(initial_accumulator_value=-0.1), 'initial_accumulator_value'),
    (stateopt.Adagrad, dict(eps=0.0), 'eps'),
    (stateopt.Adagrad, dict(weight_decay=-1.0), 'weight_decay'),
    # -- adadelta
    (stateopt.Adadelta, dict(rho=1.5), 'rho'),
    (stateopt.Adadelta, dict(rho=-0.1), 'rho'),
    (stateopt.Adadelta, dict(eps=-1e-6), 'eps'),
    (stateopt.Adadelta, dict(lr=float('nan')), 'lr'),
    # -- rmsprop
    (stateopt.RMSprop, dict(alpha=1.0), 'alpha'),
    (stateopt.RMSprop, dict(alpha=-0.5), 'alpha'),
    (stateopt.RMSprop, dict(momentum=-0.9), 'momentum'),
    (stateopt.RMSprop, dict(eps=0.0), 'eps'),
    (stateopt.RMSprop, dict(centered=1), 'centered'),
    (stateopt.RMSprop, dict(weight_decay=-0.1), 'weight_decay'),
    # -- adamax
    (stateopt.Adamax, dict(betas=(0.9, 1.0)), 'betas'),
    (stateopt.Adamax, dict(betas=0.9), 'betas'),
    (stateopt.Adamax, dict(eps=-1.0), 'eps'),
    (stateopt.Adamax, dict(lr=-2e-3), 'lr'),
    # -- nadam: Nadam / NAdam
    (stateopt.NAdam, dict(momentum_decay=-0.004), 'momentum_decay'),
    (stateopt.NAdam, dict(betas=(-0.1, 0.999)), 'betas'),
    (stateopt.NAdam, dict(decoupled_weight_decay='yes'), 'decoupled_weight_decay'),
    (stateopt.Nadam, dict(eps=0.0), 'eps'),
    # -- radam
    (stateopt.RAdam, dict(betas=(0.9, 1.5)), 'betas'),
    (stateopt.RAdam, dict(weight_decay=-1e-2), 'weight_decay'),
    (stateopt.RAdam, dict(maximize=None), 'maximize'),
    # -- rprop
    (stateopt.Rprop, dict(etas=(1.2, 0.5)), 'etas'),
    (stateopt.Rprop, dict(etas=(0.0, 1.2)), 'etas'),
    (stateopt.Rprop, dict(etas=(0.5, 1.0)), 'etas'),
    (stateopt.Rprop, dict(etas=0.5), 'etas'),
    (stateopt.Rprop, dict(etas=(0.5, 'x')), 'etas'),
    (stateopt.Rprop, dict(step_sizes=(1.0, 0.1)), 'step_sizes'),
    (stateopt.Rprop, dict(step_sizes=(-1e-6, 50.0)), 'step_sizes'),
    (stateopt.Rprop, dict(grad_clip_norm=-1.0), 'grad_clip_norm'),
    (stateopt.Rprop, dict(grad_clip_value=0.0), 'grad_clip_value'),
    (stateopt.Rprop, dict(step_sizes=(0.0, 0.0)), 'step_sizes'),
    (stateopt.Rprop, dict(lr=-0.01), 'lr'),
    # -- adafactor
    (stateopt.Adafactor, dict(eps=(0.0, 1e-3)), 'eps'),
    (stateopt.Adafactor, dict(eps=(1e-30, -1.0)), 'eps'),
    (stateopt.Adafactor, dict(eps=1e-30), 'eps'),
    (stateopt.Adafactor, dict(clip_threshold=0.0), 'clip_threshold'),
    (stateopt.Adafactor, dict(decay_rate=float('nan')), 'decay_rate'),   # -0.8 is 0.8 (torch's sign)
    (stateopt.Adafactor, dict(beta1=1.0), 'beta1'),
    (stateopt.Adafactor, dict(factored='no'), 'factored'),
    (stateopt.Adafactor, dict(lr=-1.0), 'lr'),
    (stateopt.Adafactor, dict(weight_decay=-0.1), 'weight_decay'),
    # -- lamb
    (stateopt.Lamb, dict(lr=-1e-3), 'lr'),
    (stateopt.Lamb, dict(betas=(0.9, 1.0)), 'betas'),
    (stateopt.Lamb, dict(eps=0.0), 'eps'),
    (stateopt.Lamb, dict(weight_decay=-0.1), 'weight_decay'),
    # -- lars
    (stateopt.Lars, dict(momentum=1.0), 'momentum'),
    (stateopt.Lars, dict(trust_coefficient=0.0), 'trust_coefficient'),
    (stateopt.Lars, dict(eps=-1e-8), 'eps'),
    # -- lookahead
    (stateopt.Lookahead, dict(base_optimizer=optax.adam(1e-3), lr=0.01), 'base_optimizer'),
    (stateopt.Lookahead, dict(base_optimizer='adam'), 'base_optimizer'),
    (stateopt.Lookahead, dict(base_optimizer=stateopt.AdamW()), 'base_optimizer'),
    (stateopt.Lookahead, dict(base_optimizer=stateopt.Adam(lr=0.1)), 'base_optimizer'),
    (stateopt.Lookahead, dict(base_optimizer=stateopt.Lars()), 'base_optimizer'),
    (stateopt.Lookahead, dict(base_optimizer=ADAM_DIRECTION, sync_period=0), 'sync_period'),
    (stateopt.Lookahead, dict(base_optimizer=ADAM_DIRECTION, sync_period=2.5), 'sync_period'),
    (stateopt.Lookahead, dict(base_optimizer=ADAM_DIRECTION, alpha=1.5), 'alpha'),
    (stateopt.Lookahead, dict(base_optimizer=ADAM_DIRECTION, lr=-0.1), 'lr'),
    # -- yogi
    (stateopt.Yogi, dict(betas=(-0.1, 0.999)), 'betas'),
    (stateopt.Yogi, dict(eps=0.0), 'eps'),
    # -- lbfgs
    (stateopt.LBFGS, dict(lr=-1.0), 'lr'),
    (stateopt.LBFGS, dict(memory_size=0), 'memory_size'),
    (stateopt.LBFGS, dict(linesearch='wolfe'), 'linesearch'),
    (stateopt.LBFGS, dict(scale_init_precond='yes'), 'scale_init_precond'),
    # -- adabelief
    (stateopt.AdaBelief, dict(betas=(0.9,)), 'betas'),
    (stateopt.AdaBelief, dict(eps=-1e-16), 'eps'),
    # -- lion
    (stateopt.Lion, dict(betas=(1.0, 0.99)), 'betas'),
    (stateopt.Lion, dict(weight_decay=-1.0), 'weight_decay'),
    # -- sm3
    (stateopt.SM3, dict(momentum=-0.1), 'momentum'),
    (stateopt.SM3, dict(eps=0.0), 'eps'),
    # -- novograd
    (stateopt.Novograd, dict(betas=(0.9, 1.5)), 'betas'),
    (stateopt.Novograd, dict(lr=float('nan')), 'lr'),
    # -- fromage
    (stateopt.Fromage, dict(lr=-1.0), 'lr'),
    (stateopt.Fromage, dict(momentum=1.0), 'momentum'),
    # -- muon
    (stateopt.Muon, dict(ns_steps=0), 'ns_steps'),
    (stateopt.Muon, dict(momentum=1.0), 'momentum'),
    (stateopt.Muon, dict(adam_betas=(0.9, 1.0)), 'adam_betas'),
    (stateopt.Muon, dict(eps=0.0), 'eps'),
    # -- schedule_free
    (stateopt.ScheduleFreeSGD, dict(momentum=0.0), 'momentum'),
    (stateopt.ScheduleFreeSGD, dict(weight_lr_power=-1.0), 'weight_lr_power'),
    (stateopt.ScheduleFreeAdamW, dict(betas=(0.0, 0.999)), 'betas'),
    (stateopt.ScheduleFreeAdamW, dict(eps=0.0), 'eps'),
    # -- prodigy
    (stateopt.Prodigy, dict(d0=0.0), 'd0'),
    (stateopt.Prodigy, dict(d_coef=-1.0), 'd_coef'),
    (stateopt.Prodigy, dict(beta3=1.0), 'beta3'),
    (stateopt.Prodigy, dict(betas=(0.9, 1.0)), 'betas'),
    # -- adopt
    (stateopt.ADOPT, dict(clip_exponent=-0.25), 'clip_exponent'),
    (stateopt.ADOPT, dict(betas=(0.9, 1.0)), 'betas'),
    (stateopt.ADOPT, dict(decoupled_weight_decay=1), 'decoupled_weight_decay'),
    # -- adan
    (stateopt.Adan, dict(betas=(0.98, 0.92)), 'betas'),
    (stateopt.Adan, dict(betas=(0.98, 0.92, 1.0)), 'betas'),
    (stateopt.Adan, dict(eps=0.0), 'eps'),
    # -- nadam: NAdamW
    (stateopt.NAdamW, dict(weight_decay=-1e-4), 'weight_decay'),
    (stateopt.NAdamW, dict(betas=(0.9, -0.5)), 'betas'),
    # -- sophia
    (stateopt.Sophia, dict(gamma=0.0), 'gamma'),
    (stateopt.Sophia, dict(clip_threshold=0.0), 'clip_threshold'),
    (stateopt.Sophia, dict(update_interval=0), 'update_interval'),
    (stateopt.Sophia, dict(hessian='gnb'), 'hessian'),
    (stateopt.Sophia, dict(betas=(0.965, 1.0)), 'betas'),
]

#: (class, constructor kwargs, steps): each must minimise the quadratic and Rosenbrock tests.
CONVERGE = [
    # -- sgd
    (stateopt.SGD, dict(lr=1e-3, momentum=0.9), 6000),
    (stateopt.Momentum, dict(lr=1e-3), 6000),
    (stateopt.MomentumNesterov, dict(lr=1e-3), 6000),
    # -- adam
    (stateopt.Adam, dict(lr=2e-2), 4000),
    (stateopt.AdamW, dict(lr=2e-2, weight_decay=0.0), 4000),
    # -- OptaxOptimizer
    (stateopt.OptaxOptimizer, dict(lr=2e-2), 4000),
    # -- adagrad
    (stateopt.Adagrad, dict(lr=0.5), 8000),
    # -- adadelta
    (stateopt.Adadelta, dict(lr=2.0, rho=0.9999), 8000),
    # -- rmsprop
    (stateopt.RMSprop, dict(lr=1e-3), 8000),
    # -- adamax
    (stateopt.Adamax, dict(lr=2e-2), 6000),
    # -- nadam: Nadam / NAdam
    (stateopt.NAdam, dict(lr=5e-3), 8000),
    # -- radam
    (stateopt.RAdam, dict(lr=5e-3, betas=(0.9, 0.99)), 8000),
    # -- rprop
    (stateopt.Rprop, dict(lr=1e-2), 4000),
    # -- adafactor
    # decaying: with a constant lr, float32 rounding decides where the circling last iterate stops
    (stateopt.Adafactor, dict(lr=optax.cosine_decay_schedule(0.1, 8000), beta1=0.9), 8000),
    # -- lamb
    (stateopt.Lamb, dict(lr=optax.cosine_decay_schedule(5e-2, 6000)), 6000),
    # -- lars
    # a decaying lr: with a constant one the last iterate circles the minimum, and float32 rounding
    # (FMA or not, another fusion) decides where it stops
    (stateopt.Lars, dict(lr=optax.cosine_decay_schedule(0.5, 6000), trust_coefficient=0.02), 6000),
    # -- lookahead
    (stateopt.Lookahead, dict(base_optimizer=ADAM_DIRECTION, lr=3e-2), 4000),
    (stateopt.Lookahead, dict(base_optimizer=stateopt.Adam(), lr=3e-2, sync_period=10, alpha=0.8), 4000),
    # -- yogi
    (stateopt.Yogi, dict(lr=2e-2), 4000),
    # -- lbfgs
    (stateopt.LBFGS, dict(lr=0.5), 2000),
    # -- adabelief
    (stateopt.AdaBelief, dict(lr=2e-2, eps=1e-8), 4000),
    # -- lion
    (stateopt.Lion, dict(lr=optax.cosine_decay_schedule(1e-2, 6000)), 6000),
    # -- sm3
    (stateopt.SM3, dict(lr=1.0, momentum=0.5), 6000),
    # -- novograd
    (stateopt.Novograd, dict(lr=2e-2), 4000),
    # -- fromage
    (stateopt.Fromage, dict(lr=optax.cosine_decay_schedule(2e-2, 6000)), 6000),
    # -- muon
    (stateopt.Muon, dict(lr=2e-2), 4000),
    # -- schedule_free
    (stateopt.ScheduleFreeSGD, dict(lr=optax.linear_schedule(1e-4, 2e-3, 8000), weight_lr_power=6.0),
     8000),
    (stateopt.ScheduleFreeAdamW, dict(lr=optax.linear_schedule(1e-3, 2e-2, 6000), weight_lr_power=6.0),
     6000),
    # -- prodigy
    (stateopt.Prodigy, dict(lr=optax.cosine_decay_schedule(1.0, 8000)), 8000),
    # -- adopt
    (stateopt.ADOPT, dict(lr=optax.cosine_decay_schedule(5e-2, 8000), betas=(0.9, 0.99)), 8000),
    # -- adan
    (stateopt.Adan, dict(lr=2e-2), 4000),
    # -- nadam: NAdamW
    (stateopt.NAdamW, dict(lr=optax.cosine_decay_schedule(2e-2, 4000), weight_decay=0.0), 4000),
    # -- sophia
    (stateopt.Sophia, dict(lr=optax.cosine_decay_schedule(2e-2, 6000), weight_decay=0.0, hessian=SQUARED),
     6000),
]


def grad_sequence(shapes: dict, steps: int, seed: int = 0) -> list[dict]:
    """Varying gradients: normal draws whose scale cycles through 1, 1e-5 (where eps
    placement matters), 0.1 and 3."""
    rng = np.random.default_rng(seed)
    scales = [1.0, 1e-5, 0.1, 3.0]
    return [{k: (rng.standard_normal(s) * scales[t % len(scales)]).astype(np.float32)
             for k, s in shapes.items()} for t in range(steps)]
