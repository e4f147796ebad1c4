"""Names and signatures of :mod:`stateopt.functional` (written by tests/fixtures/make_functional_stub.py)."""

from typing import Any

from ._optimizer import OptaxOptimizer

__all__: list[str]
OPTIMIZERS: dict[str, type[OptaxOptimizer]]

def init(optimizer: type[OptaxOptimizer], params: Any, **hyperparams: Any) -> Any: ...
def update(optimizer: type[OptaxOptimizer], grads: Any, state: Any, params: Any, *,
           extra_args: dict | None = None, **hyperparams: Any) -> tuple[Any, Any]: ...
def step(optimizer: type[OptaxOptimizer], param: Any, grad: Any, state: Any, *,
         extra_args: dict | None = None, **hyperparams: Any) -> tuple[Any, Any]: ...

# SGD
def sgd_init(params: Any, *, lr: Any = 0.001, momentum: Any = 0.0, weight_decay: Any = 0.0,
             nesterov: Any = False, grad_clip_norm: Any = None, grad_clip_value: Any = None,
             dampening: Any = 0.0, weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def sgd_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001, momentum: Any = 0.0,
               weight_decay: Any = 0.0, nesterov: Any = False, grad_clip_norm: Any = None,
               grad_clip_value: Any = None, dampening: Any = 0.0, weight_decay_mask: Any = None,
               maximize: Any = False, extra_args: dict | None = None) -> tuple[Any, Any]: ...
def sgd_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, momentum: Any = 0.0,
             weight_decay: Any = 0.0, nesterov: Any = False, grad_clip_norm: Any = None,
             grad_clip_value: Any = None, dampening: Any = 0.0, weight_decay_mask: Any = None,
             maximize: Any = False, extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Momentum
def momentum_init(params: Any, *, lr: Any = 0.001, momentum: Any = 0.9, weight_decay: Any = 0.0,
                  grad_clip_norm: Any = None, grad_clip_value: Any = None,
                  weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def momentum_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001, momentum: Any = 0.9,
                    weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                    grad_clip_value: Any = None, weight_decay_mask: Any = None,
                    maximize: Any = False, extra_args: dict | None = None) -> tuple[Any, Any]: ...
def momentum_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, momentum: Any = 0.9,
                  weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
                  weight_decay_mask: Any = None, maximize: Any = False,
                  extra_args: dict | None = None) -> tuple[Any, Any]: ...

# MomentumNesterov
def momentum_nesterov_init(params: Any, *, lr: Any = 0.001, momentum: Any = 0.9,
                           weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                           grad_clip_value: Any = None, weight_decay_mask: Any = None,
                           maximize: Any = False) -> Any: ...
def momentum_nesterov_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001,
                             momentum: Any = 0.9, weight_decay: Any = 0.0,
                             grad_clip_norm: Any = None, grad_clip_value: Any = None,
                             weight_decay_mask: Any = None, maximize: Any = False,
                             extra_args: dict | None = None) -> tuple[Any, Any]: ...
def momentum_nesterov_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001,
                           momentum: Any = 0.9, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                           grad_clip_value: Any = None, weight_decay_mask: Any = None,
                           maximize: Any = False,
                           extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Adam
def adam_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999), eps: Any = 1e-08,
              weight_decay: Any = 0.0, amsgrad: Any = False, grad_clip_norm: Any = None,
              grad_clip_value: Any = None, weight_decay_mask: Any = None,
              maximize: Any = False) -> Any: ...
def adam_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
                eps: Any = 1e-08, weight_decay: Any = 0.0, amsgrad: Any = False,
                grad_clip_norm: Any = None, grad_clip_value: Any = None,
                weight_decay_mask: Any = None, maximize: Any = False,
                extra_args: dict | None = None) -> tuple[Any, Any]: ...
def adam_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
              eps: Any = 1e-08, weight_decay: Any = 0.0, amsgrad: Any = False,
              grad_clip_norm: Any = None, grad_clip_value: Any = None,
              weight_decay_mask: Any = None, maximize: Any = False,
              extra_args: dict | None = None) -> tuple[Any, Any]: ...

# AdamW
def adamw_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999), eps: Any = 1e-08,
               weight_decay: Any = 0.01, amsgrad: Any = False, grad_clip_norm: Any = None,
               grad_clip_value: Any = None, weight_decay_mask: Any = None,
               maximize: Any = False) -> Any: ...
def adamw_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
                 eps: Any = 1e-08, weight_decay: Any = 0.01, amsgrad: Any = False,
                 grad_clip_norm: Any = None, grad_clip_value: Any = None,
                 weight_decay_mask: Any = None, maximize: Any = False,
                 extra_args: dict | None = None) -> tuple[Any, Any]: ...
def adamw_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
               eps: Any = 1e-08, weight_decay: Any = 0.01, amsgrad: Any = False,
               grad_clip_norm: Any = None, grad_clip_value: Any = None,
               weight_decay_mask: Any = None, maximize: Any = False,
               extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Adagrad
def adagrad_init(params: Any, *, lr: Any = 0.01, lr_decay: Any = 0.0, weight_decay: Any = 0.0,
                 initial_accumulator_value: Any = 0.0, eps: Any = 1e-10, grad_clip_norm: Any = None,
                 grad_clip_value: Any = None, weight_decay_mask: Any = None,
                 maximize: Any = False) -> Any: ...
def adagrad_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.01, lr_decay: Any = 0.0,
                   weight_decay: Any = 0.0, initial_accumulator_value: Any = 0.0, eps: Any = 1e-10,
                   grad_clip_norm: Any = None, grad_clip_value: Any = None,
                   weight_decay_mask: Any = None, maximize: Any = False,
                   extra_args: dict | None = None) -> tuple[Any, Any]: ...
def adagrad_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.01, lr_decay: Any = 0.0,
                 weight_decay: Any = 0.0, initial_accumulator_value: Any = 0.0, eps: Any = 1e-10,
                 grad_clip_norm: Any = None, grad_clip_value: Any = None,
                 weight_decay_mask: Any = None, maximize: Any = False,
                 extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Adadelta
def adadelta_init(params: Any, *, lr: Any = 1.0, rho: Any = 0.9, eps: Any = 1e-06,
                  weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
                  weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def adadelta_update(grads: Any, state: Any, params: Any, *, lr: Any = 1.0, rho: Any = 0.9,
                    eps: Any = 1e-06, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                    grad_clip_value: Any = None, weight_decay_mask: Any = None,
                    maximize: Any = False, extra_args: dict | None = None) -> tuple[Any, Any]: ...
def adadelta_step(param: Any, grad: Any, state: Any, *, lr: Any = 1.0, rho: Any = 0.9,
                  eps: Any = 1e-06, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                  grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
                  extra_args: dict | None = None) -> tuple[Any, Any]: ...

# RMSprop
def rmsprop_init(params: Any, *, lr: Any = 0.01, alpha: Any = 0.99, eps: Any = 1e-08,
                 weight_decay: Any = 0.0, momentum: Any = 0.0, centered: Any = False,
                 grad_clip_norm: Any = None, grad_clip_value: Any = None,
                 weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def rmsprop_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.01, alpha: Any = 0.99,
                   eps: Any = 1e-08, weight_decay: Any = 0.0, momentum: Any = 0.0,
                   centered: Any = False, grad_clip_norm: Any = None, grad_clip_value: Any = None,
                   weight_decay_mask: Any = None, maximize: Any = False,
                   extra_args: dict | None = None) -> tuple[Any, Any]: ...
def rmsprop_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.01, alpha: Any = 0.99,
                 eps: Any = 1e-08, weight_decay: Any = 0.0, momentum: Any = 0.0,
                 centered: Any = False, grad_clip_norm: Any = None, grad_clip_value: Any = None,
                 weight_decay_mask: Any = None, maximize: Any = False,
                 extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Adamax
def adamax_init(params: Any, *, lr: Any = 0.002, betas: Any = (0.9, 0.999), eps: Any = 1e-08,
                weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
                weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def adamax_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.002,
                  betas: Any = (0.9, 0.999), eps: Any = 1e-08, weight_decay: Any = 0.0,
                  grad_clip_norm: Any = None, grad_clip_value: Any = None,
                  weight_decay_mask: Any = None, maximize: Any = False,
                  extra_args: dict | None = None) -> tuple[Any, Any]: ...
def adamax_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.002, betas: Any = (0.9, 0.999),
                eps: Any = 1e-08, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
                extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Nadam
def nadam_init(params: Any, *, lr: Any = 0.002, betas: Any = (0.9, 0.999), eps: Any = 1e-08,
               weight_decay: Any = 0.0, momentum_decay: Any = 0.004, grad_clip_norm: Any = None,
               grad_clip_value: Any = None, decoupled_weight_decay: Any = False,
               weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def nadam_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.002, betas: Any = (0.9, 0.999),
                 eps: Any = 1e-08, weight_decay: Any = 0.0, momentum_decay: Any = 0.004,
                 grad_clip_norm: Any = None, grad_clip_value: Any = None,
                 decoupled_weight_decay: Any = False, weight_decay_mask: Any = None,
                 maximize: Any = False, extra_args: dict | None = None) -> tuple[Any, Any]: ...
def nadam_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.002, betas: Any = (0.9, 0.999),
               eps: Any = 1e-08, weight_decay: Any = 0.0, momentum_decay: Any = 0.004,
               grad_clip_norm: Any = None, grad_clip_value: Any = None,
               decoupled_weight_decay: Any = False, weight_decay_mask: Any = None,
               maximize: Any = False, extra_args: dict | None = None) -> tuple[Any, Any]: ...

# RAdam
def radam_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999), eps: Any = 1e-08,
               weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
               decoupled_weight_decay: Any = False, weight_decay_mask: Any = None,
               maximize: Any = False) -> Any: ...
def radam_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
                 eps: Any = 1e-08, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                 grad_clip_value: Any = None, decoupled_weight_decay: Any = False,
                 weight_decay_mask: Any = None, maximize: Any = False,
                 extra_args: dict | None = None) -> tuple[Any, Any]: ...
def radam_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
               eps: Any = 1e-08, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
               grad_clip_value: Any = None, decoupled_weight_decay: Any = False,
               weight_decay_mask: Any = None, maximize: Any = False,
               extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Rprop
def rprop_init(params: Any, *, lr: Any = 0.01, etas: Any = (0.5, 1.2),
               step_sizes: Any = (1e-06, 50.0), grad_clip_norm: Any = None,
               grad_clip_value: Any = None, maximize: Any = False) -> Any: ...
def rprop_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.01, etas: Any = (0.5, 1.2),
                 step_sizes: Any = (1e-06, 50.0), grad_clip_norm: Any = None,
                 grad_clip_value: Any = None, maximize: Any = False,
                 extra_args: dict | None = None) -> tuple[Any, Any]: ...
def rprop_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.01, etas: Any = (0.5, 1.2),
               step_sizes: Any = (1e-06, 50.0), grad_clip_norm: Any = None,
               grad_clip_value: Any = None, maximize: Any = False,
               extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Adafactor
def adafactor_init(params: Any, *, lr: Any = None, eps: Any = (1e-30, 0.001),
                   clip_threshold: Any = 1.0, decay_rate: Any = 0.8, beta1: Any = None,
                   weight_decay: Any = 0.0, factored: Any = True, grad_clip_norm: Any = None,
                   grad_clip_value: Any = None, weight_decay_mask: Any = None,
                   maximize: Any = False) -> Any: ...
def adafactor_update(grads: Any, state: Any, params: Any, *, lr: Any = None,
                     eps: Any = (1e-30, 0.001), clip_threshold: Any = 1.0, decay_rate: Any = 0.8,
                     beta1: Any = None, weight_decay: Any = 0.0, factored: Any = True,
                     grad_clip_norm: Any = None, grad_clip_value: Any = None,
                     weight_decay_mask: Any = None, maximize: Any = False,
                     extra_args: dict | None = None) -> tuple[Any, Any]: ...
def adafactor_step(param: Any, grad: Any, state: Any, *, lr: Any = None, eps: Any = (1e-30, 0.001),
                   clip_threshold: Any = 1.0, decay_rate: Any = 0.8, beta1: Any = None,
                   weight_decay: Any = 0.0, factored: Any = True, grad_clip_norm: Any = None,
                   grad_clip_value: Any = None, weight_decay_mask: Any = None,
                   maximize: Any = False, extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Lamb
def lamb_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999), eps: Any = 1e-06,
              weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
              weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def lamb_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
                eps: Any = 1e-06, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
                extra_args: dict | None = None) -> tuple[Any, Any]: ...
def lamb_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
              eps: Any = 1e-06, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
              grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
              extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Lars
def lars_init(params: Any, *, lr: Any = 1.0, momentum: Any = 0.9, weight_decay: Any = 0.0,
              trust_coefficient: Any = 0.001, eps: Any = 1e-08, grad_clip_norm: Any = None,
              grad_clip_value: Any = None, weight_decay_mask: Any = None,
              maximize: Any = False) -> Any: ...
def lars_update(grads: Any, state: Any, params: Any, *, lr: Any = 1.0, momentum: Any = 0.9,
                weight_decay: Any = 0.0, trust_coefficient: Any = 0.001, eps: Any = 1e-08,
                grad_clip_norm: Any = None, grad_clip_value: Any = None,
                weight_decay_mask: Any = None, maximize: Any = False,
                extra_args: dict | None = None) -> tuple[Any, Any]: ...
def lars_step(param: Any, grad: Any, state: Any, *, lr: Any = 1.0, momentum: Any = 0.9,
              weight_decay: Any = 0.0, trust_coefficient: Any = 0.001, eps: Any = 1e-08,
              grad_clip_norm: Any = None, grad_clip_value: Any = None,
              weight_decay_mask: Any = None, maximize: Any = False,
              extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Lookahead
def lookahead_init(params: Any, *, base_optimizer: Any, sync_period: Any = 5, alpha: Any = 0.5,
                   lr: Any = None, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                   grad_clip_value: Any = None, weight_decay_mask: Any = None,
                   maximize: Any = False) -> Any: ...
def lookahead_update(grads: Any, state: Any, params: Any, *, base_optimizer: Any,
                     sync_period: Any = 5, alpha: Any = 0.5, lr: Any = None,
                     weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                     grad_clip_value: Any = None, weight_decay_mask: Any = None,
                     maximize: Any = False, extra_args: dict | None = None) -> tuple[Any, Any]: ...
def lookahead_step(param: Any, grad: Any, state: Any, *, base_optimizer: Any, sync_period: Any = 5,
                   alpha: Any = 0.5, lr: Any = None, weight_decay: Any = 0.0,
                   grad_clip_norm: Any = None, grad_clip_value: Any = None,
                   weight_decay_mask: Any = None, maximize: Any = False,
                   extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Yogi
def yogi_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999), eps: Any = 0.001,
              weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
              weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def yogi_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
                eps: Any = 0.001, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
                extra_args: dict | None = None) -> tuple[Any, Any]: ...
def yogi_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
              eps: Any = 0.001, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
              grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
              extra_args: dict | None = None) -> tuple[Any, Any]: ...

# LBFGS
def lbfgs_init(params: Any, *, lr: Any = 1.0, memory_size: Any = 10, scale_init_precond: Any = True,
               linesearch: Any = None, grad_clip_norm: Any = None,
               grad_clip_value: Any = None) -> Any: ...
def lbfgs_update(grads: Any, state: Any, params: Any, *, lr: Any = 1.0, memory_size: Any = 10,
                 scale_init_precond: Any = True, linesearch: Any = None, grad_clip_norm: Any = None,
                 grad_clip_value: Any = None,
                 extra_args: dict | None = None) -> tuple[Any, Any]: ...
def lbfgs_step(param: Any, grad: Any, state: Any, *, lr: Any = 1.0, memory_size: Any = 10,
               scale_init_precond: Any = True, linesearch: Any = None, grad_clip_norm: Any = None,
               grad_clip_value: Any = None, extra_args: dict | None = None) -> tuple[Any, Any]: ...

# AdaBelief
def adabelief_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999), eps: Any = 1e-16,
                   weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
                   weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def adabelief_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001,
                     betas: Any = (0.9, 0.999), eps: Any = 1e-16, weight_decay: Any = 0.0,
                     grad_clip_norm: Any = None, grad_clip_value: Any = None,
                     weight_decay_mask: Any = None, maximize: Any = False,
                     extra_args: dict | None = None) -> tuple[Any, Any]: ...
def adabelief_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
                   eps: Any = 1e-16, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                   grad_clip_value: Any = None, weight_decay_mask: Any = None,
                   maximize: Any = False, extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Lion
def lion_init(params: Any, *, lr: Any = 0.0001, betas: Any = (0.9, 0.99), weight_decay: Any = 0.0,
              grad_clip_norm: Any = None, grad_clip_value: Any = None,
              weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def lion_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.0001, betas: Any = (0.9, 0.99),
                weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
                weight_decay_mask: Any = None, maximize: Any = False,
                extra_args: dict | None = None) -> tuple[Any, Any]: ...
def lion_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.0001, betas: Any = (0.9, 0.99),
              weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
              weight_decay_mask: Any = None, maximize: Any = False,
              extra_args: dict | None = None) -> tuple[Any, Any]: ...

# SM3
def sm3_init(params: Any, *, lr: Any = 1.0, momentum: Any = 0.9, eps: Any = 1e-08,
             weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
             weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def sm3_update(grads: Any, state: Any, params: Any, *, lr: Any = 1.0, momentum: Any = 0.9,
               eps: Any = 1e-08, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
               grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
               extra_args: dict | None = None) -> tuple[Any, Any]: ...
def sm3_step(param: Any, grad: Any, state: Any, *, lr: Any = 1.0, momentum: Any = 0.9,
             eps: Any = 1e-08, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
             grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
             extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Novograd
def novograd_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999), eps: Any = 1e-08,
                  weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
                  maximize: Any = False) -> Any: ...
def novograd_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001,
                    betas: Any = (0.9, 0.999), eps: Any = 1e-08, weight_decay: Any = 0.0,
                    grad_clip_norm: Any = None, grad_clip_value: Any = None, maximize: Any = False,
                    extra_args: dict | None = None) -> tuple[Any, Any]: ...
def novograd_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
                  eps: Any = 1e-08, weight_decay: Any = 0.0, grad_clip_norm: Any = None,
                  grad_clip_value: Any = None, maximize: Any = False,
                  extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Fromage
def fromage_init(params: Any, *, lr: Any = 1.0, momentum: Any = 0.0, grad_clip_norm: Any = None,
                 grad_clip_value: Any = None, maximize: Any = False) -> Any: ...
def fromage_update(grads: Any, state: Any, params: Any, *, lr: Any = 1.0, momentum: Any = 0.0,
                   grad_clip_norm: Any = None, grad_clip_value: Any = None, maximize: Any = False,
                   extra_args: dict | None = None) -> tuple[Any, Any]: ...
def fromage_step(param: Any, grad: Any, state: Any, *, lr: Any = 1.0, momentum: Any = 0.0,
                 grad_clip_norm: Any = None, grad_clip_value: Any = None, maximize: Any = False,
                 extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Muon
def muon_init(params: Any, *, lr: Any = 0.02, momentum: Any = 0.95, nesterov: Any = True,
              ns_steps: Any = 5, eps: Any = 1e-08, weight_decay: Any = 0.0,
              adam_betas: Any = (0.9, 0.999), grad_clip_norm: Any = None,
              grad_clip_value: Any = None, weight_decay_mask: Any = None,
              maximize: Any = False) -> Any: ...
def muon_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.02, momentum: Any = 0.95,
                nesterov: Any = True, ns_steps: Any = 5, eps: Any = 1e-08, weight_decay: Any = 0.0,
                adam_betas: Any = (0.9, 0.999), grad_clip_norm: Any = None,
                grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
                extra_args: dict | None = None) -> tuple[Any, Any]: ...
def muon_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.02, momentum: Any = 0.95,
              nesterov: Any = True, ns_steps: Any = 5, eps: Any = 1e-08, weight_decay: Any = 0.0,
              adam_betas: Any = (0.9, 0.999), grad_clip_norm: Any = None,
              grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
              extra_args: dict | None = None) -> tuple[Any, Any]: ...

# ScheduleFreeSGD
def schedule_free_sgd_init(params: Any, *, lr: Any = 1.0, momentum: Any = 0.9,
                           weight_decay: Any = 0.0, weight_lr_power: Any = 2.0,
                           grad_clip_norm: Any = None, grad_clip_value: Any = None,
                           weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def schedule_free_sgd_update(grads: Any, state: Any, params: Any, *, lr: Any = 1.0,
                             momentum: Any = 0.9, weight_decay: Any = 0.0,
                             weight_lr_power: Any = 2.0, grad_clip_norm: Any = None,
                             grad_clip_value: Any = None, weight_decay_mask: Any = None,
                             maximize: Any = False,
                             extra_args: dict | None = None) -> tuple[Any, Any]: ...
def schedule_free_sgd_step(param: Any, grad: Any, state: Any, *, lr: Any = 1.0, momentum: Any = 0.9,
                           weight_decay: Any = 0.0, weight_lr_power: Any = 2.0,
                           grad_clip_norm: Any = None, grad_clip_value: Any = None,
                           weight_decay_mask: Any = None, maximize: Any = False,
                           extra_args: dict | None = None) -> tuple[Any, Any]: ...

# ScheduleFreeAdamW
def schedule_free_adamw_init(params: Any, *, lr: Any = 0.0025, betas: Any = (0.9, 0.999),
                             eps: Any = 1e-08, weight_decay: Any = 0.0, weight_lr_power: Any = 2.0,
                             grad_clip_norm: Any = None, grad_clip_value: Any = None,
                             weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def schedule_free_adamw_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.0025,
                               betas: Any = (0.9, 0.999), eps: Any = 1e-08, weight_decay: Any = 0.0,
                               weight_lr_power: Any = 2.0, grad_clip_norm: Any = None,
                               grad_clip_value: Any = None, weight_decay_mask: Any = None,
                               maximize: Any = False,
                               extra_args: dict | None = None) -> tuple[Any, Any]: ...
def schedule_free_adamw_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.0025,
                             betas: Any = (0.9, 0.999), eps: Any = 1e-08, weight_decay: Any = 0.0,
                             weight_lr_power: Any = 2.0, grad_clip_norm: Any = None,
                             grad_clip_value: Any = None, weight_decay_mask: Any = None,
                             maximize: Any = False,
                             extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Prodigy
def prodigy_init(params: Any, *, lr: Any = 1.0, betas: Any = (0.9, 0.999), beta3: Any = None,
                 eps: Any = 1e-08, weight_decay: Any = 0.0, d0: Any = 1e-06, d_coef: Any = 1.0,
                 safeguard_warmup: Any = False, grad_clip_norm: Any = None,
                 grad_clip_value: Any = None, maximize: Any = False) -> Any: ...
def prodigy_update(grads: Any, state: Any, params: Any, *, lr: Any = 1.0, betas: Any = (0.9, 0.999),
                   beta3: Any = None, eps: Any = 1e-08, weight_decay: Any = 0.0, d0: Any = 1e-06,
                   d_coef: Any = 1.0, safeguard_warmup: Any = False, grad_clip_norm: Any = None,
                   grad_clip_value: Any = None, maximize: Any = False,
                   extra_args: dict | None = None) -> tuple[Any, Any]: ...
def prodigy_step(param: Any, grad: Any, state: Any, *, lr: Any = 1.0, betas: Any = (0.9, 0.999),
                 beta3: Any = None, eps: Any = 1e-08, weight_decay: Any = 0.0, d0: Any = 1e-06,
                 d_coef: Any = 1.0, safeguard_warmup: Any = False, grad_clip_norm: Any = None,
                 grad_clip_value: Any = None, maximize: Any = False,
                 extra_args: dict | None = None) -> tuple[Any, Any]: ...

# ADOPT
def adopt_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.9999), eps: Any = 1e-06,
               weight_decay: Any = 0.0, decoupled_weight_decay: Any = False,
               clip_exponent: Any = 0.25, grad_clip_norm: Any = None, grad_clip_value: Any = None,
               weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def adopt_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001,
                 betas: Any = (0.9, 0.9999), eps: Any = 1e-06, weight_decay: Any = 0.0,
                 decoupled_weight_decay: Any = False, clip_exponent: Any = 0.25,
                 grad_clip_norm: Any = None, grad_clip_value: Any = None,
                 weight_decay_mask: Any = None, maximize: Any = False,
                 extra_args: dict | None = None) -> tuple[Any, Any]: ...
def adopt_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.9999),
               eps: Any = 1e-06, weight_decay: Any = 0.0, decoupled_weight_decay: Any = False,
               clip_exponent: Any = 0.25, grad_clip_norm: Any = None, grad_clip_value: Any = None,
               weight_decay_mask: Any = None, maximize: Any = False,
               extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Adan
def adan_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.98, 0.92, 0.99), eps: Any = 1e-08,
              weight_decay: Any = 0.0, grad_clip_norm: Any = None, grad_clip_value: Any = None,
              weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def adan_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001,
                betas: Any = (0.98, 0.92, 0.99), eps: Any = 1e-08, weight_decay: Any = 0.0,
                grad_clip_norm: Any = None, grad_clip_value: Any = None,
                weight_decay_mask: Any = None, maximize: Any = False,
                extra_args: dict | None = None) -> tuple[Any, Any]: ...
def adan_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001,
              betas: Any = (0.98, 0.92, 0.99), eps: Any = 1e-08, weight_decay: Any = 0.0,
              grad_clip_norm: Any = None, grad_clip_value: Any = None,
              weight_decay_mask: Any = None, maximize: Any = False,
              extra_args: dict | None = None) -> tuple[Any, Any]: ...

# NAdamW
def nadamw_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999), eps: Any = 1e-08,
                weight_decay: Any = 0.0001, grad_clip_norm: Any = None, grad_clip_value: Any = None,
                weight_decay_mask: Any = None, maximize: Any = False) -> Any: ...
def nadamw_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001,
                  betas: Any = (0.9, 0.999), eps: Any = 1e-08, weight_decay: Any = 0.0001,
                  grad_clip_norm: Any = None, grad_clip_value: Any = None,
                  weight_decay_mask: Any = None, maximize: Any = False,
                  extra_args: dict | None = None) -> tuple[Any, Any]: ...
def nadamw_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, betas: Any = (0.9, 0.999),
                eps: Any = 1e-08, weight_decay: Any = 0.0001, grad_clip_norm: Any = None,
                grad_clip_value: Any = None, weight_decay_mask: Any = None, maximize: Any = False,
                extra_args: dict | None = None) -> tuple[Any, Any]: ...

# Sophia
def sophia_init(params: Any, *, lr: Any = 0.001, betas: Any = (0.965, 0.99), eps: Any = 1e-08,
                weight_decay: Any = 0.0001, gamma: Any = 0.01, clip_threshold: Any = 1.0,
                update_interval: Any = 10, hessian: Any = 'hutchinson', grad_clip_norm: Any = None,
                grad_clip_value: Any = None, weight_decay_mask: Any = None) -> Any: ...
def sophia_update(grads: Any, state: Any, params: Any, *, lr: Any = 0.001,
                  betas: Any = (0.965, 0.99), eps: Any = 1e-08, weight_decay: Any = 0.0001,
                  gamma: Any = 0.01, clip_threshold: Any = 1.0, update_interval: Any = 10,
                  hessian: Any = 'hutchinson', grad_clip_norm: Any = None,
                  grad_clip_value: Any = None, weight_decay_mask: Any = None,
                  extra_args: dict | None = None) -> tuple[Any, Any]: ...
def sophia_step(param: Any, grad: Any, state: Any, *, lr: Any = 0.001, betas: Any = (0.965, 0.99),
                eps: Any = 1e-08, weight_decay: Any = 0.0001, gamma: Any = 0.01,
                clip_threshold: Any = 1.0, update_interval: Any = 10, hessian: Any = 'hutchinson',
                grad_clip_norm: Any = None, grad_clip_value: Any = None,
                weight_decay_mask: Any = None,
                extra_args: dict | None = None) -> tuple[Any, Any]: ...
