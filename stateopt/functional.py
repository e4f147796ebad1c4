"""Pure, stateless versions of every optimizer in the catalogue.

For each optimizer ``X`` (named in snake case: ``sgd``, ``adam``, ``adamw``, ...) there are

- ``X_init(params, **hyperparams) -> state``: the optimizer state of a pytree;
- ``X_update(grads, state, params, **hyperparams) -> (new_params, new_state)``: one step on
  a pytree;
- ``X_step(param, grad, state, **hyperparams) -> (new_param, new_state)``: one step on one
  array (its state from ``X_init(param)``).

Hyper-parameters default to the optimizer class's constructor defaults and are checked the
same way. They run the same chain and algorithm as the classes (clipping, ``maximize``,
weight decay, learning rate), so a class's step and its functional step agree bit for bit
when the hyper-parameters reach a jitted call as arguments, as the classes pass them (as
compile-time constants XLA may round one operation differently). They are plain jax
functions: ``jax.jit``, ``jax.vmap`` and ``jax.lax.scan`` apply.

Examples
--------
>>> import jax.numpy as jnp
>>> from stateopt import functional as F
>>> params = {'w': jnp.array([1.0, -1.0])}
>>> state = F.adamw_init(params)
>>> params, state = F.adamw_update({'w': jnp.array([0.5, 0.5])}, state, params, lr=0.1)
>>> [round(x, 4) for x in params['w'].tolist()]
[0.899, -1.099]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from . import optimizers
from ._groups import as_dynamic as _as_dynamic
from ._optimizer import OptaxOptimizer
from ._step import chain_update

__all__ = ['init', 'update', 'step', 'OPTIMIZERS']


def _snake(name: str) -> str:
    """``MomentumNesterov`` -> ``momentum_nesterov``; ``AdamW`` -> ``adamw``; ``SGD`` -> ``sgd``."""
    special = {'AdamW': 'adamw', 'NAdamW': 'nadamw', 'RMSprop': 'rmsprop', 'LBFGS': 'lbfgs',
               'AdaBelief': 'adabelief', 'ScheduleFreeAdamW': 'schedule_free_adamw',
               'ScheduleFreeSGD': 'schedule_free_sgd', 'ADOPT': 'adopt', 'SM3': 'sm3',
               'SGD': 'sgd'}
    if name in special:
        return special[name]
    out = ''
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out += '_'
        out += ch.lower()
    return out


#: Hyper-parameters only the optimizer classes have: where they keep their state.
STATEFUL_ONLY = ('state_sharding',)


def _hyperparams(optimizer: type[OptaxOptimizer], given: dict) -> dict:
    """The constructor's defaults updated with ``given``, validated."""
    for name in STATEFUL_ONLY:
        if name in given:
            raise TypeError(f'the functional API keeps no state, so it takes no {name}; place the state '
                            f'you pass in (jax.device_put), or use stateopt.{optimizer.__name__}')
    hp = optimizer._validated(given, base=optimizer._validated(optimizer.hyperparameters.defaults()))
    hp = optimizer._resolve(hp)
    if callable(hp['lr']):
        raise ValueError('the functional API takes a number as lr; evaluate the schedule first')
    # dynamic values in float32, exactly as the classes feed them to their compiled step
    return {name: _as_dynamic(value) if optimizer._hyperparams[name].dynamic and value is not None
            else value for name, value in hp.items()}


def init(optimizer: type[OptaxOptimizer], params: Any, **hyperparams: Any) -> Any:
    """The state of ``optimizer``'s algorithm for the pytree ``params``.

    Examples
    --------
    >>> import jax.numpy as jnp, stateopt
    >>> from stateopt import functional as F
    >>> state = F.init(stateopt.SGD, {'w': jnp.zeros(2)}, momentum=0.9)
    >>> state.momentum_buffer['w'].tolist()
    [0.0, 0.0]
    """
    return optimizer._algorithm(_hyperparams(optimizer, hyperparams)).init(params)


def update(optimizer: type[OptaxOptimizer], grads: Any, state: Any, params: Any, *,
           extra_args: dict | None = None, **hyperparams: Any) -> tuple[Any, Any]:
    """One step of ``optimizer`` on the pytree ``params``: ``(new_params, new_state)``.

    ``extra_args`` reach the algorithm's update, for the optimizers that take more than
    gradients: Sophia's Hessian estimate needs ``{'obj_fn': loss_of_params}``, L-BFGS's
    line search ``{'value': loss, 'grad': grads, 'value_fn': loss_of_params}``.

    Examples
    --------
    >>> import jax.numpy as jnp, stateopt
    >>> from stateopt import functional as F
    >>> params = {'w': jnp.array([1.0])}
    >>> state = F.init(stateopt.SGD, params)
    >>> params, state = F.update(stateopt.SGD, {'w': jnp.array([2.0])}, state, params, lr=0.25)
    >>> params['w'].tolist()
    [0.5]
    """
    hp = _hyperparams(optimizer, hyperparams)
    return chain_update(optimizer._algorithm(hp), grads, state, params, extra_args=extra_args,
                        **optimizer._chain_options(hp))


def step(optimizer: type[OptaxOptimizer], param: Any, grad: Any, state: Any, *,
         extra_args: dict | None = None, **hyperparams: Any) -> tuple[Any, Any]:
    """One step of ``optimizer`` on one array: ``(new_param, new_state)``.

    Examples
    --------
    >>> import jax.numpy as jnp, stateopt
    >>> from stateopt import functional as F
    >>> p = jnp.array([1.0]); s = F.init(stateopt.Adam, p)
    >>> p, s = F.step(stateopt.Adam, p, jnp.array([4.0]), s, lr=0.1)
    >>> round(float(p[0]), 4)
    0.9
    """
    return update(optimizer, grad, state, param, extra_args=extra_args, **hyperparams)


#: Arguments the generated examples pass, for optimizers that need more than the defaults.
_EXAMPLE_ARGUMENTS = {
    'lookahead': ('base_optimizer=optax.scale_by_adam()', ''),
    'sophia': ('', "extra_args={'obj_fn': lambda q: jnp.sum(q ** 2)}"),
}


def _named(kind: str, optimizer: type[OptaxOptimizer]) -> Callable:
    base = {'init': init, 'update': update, 'step': step}[kind]
    name = f'{_snake(optimizer.__name__)}_{kind}'

    def function(*args: Any, **hyperparams: Any) -> Any:
        return base(optimizer, *args, **hyperparams)

    rule = (inspect.getdoc(optimizer) or '').split('Examples')[0].strip()
    usage = {
        'init': f'{name}(params, **hyperparams) -> state',
        'update': f'{name}(grads, state, params, **hyperparams) -> (new_params, new_state)',
        'step': f'{name}(param, grad, state, **hyperparams) -> (new_param, new_state)',
    }[kind]
    function.__name__ = function.__qualname__ = name
    function.__module__ = __name__
    snake = _snake(optimizer.__name__)
    hyper, extra = _EXAMPLE_ARGUMENTS.get(snake, ('', ''))
    step_call = f'F.{snake}_step(p, jnp.array([0.5, -0.5]), s{", " if hyper else ""}{hyper}' \
                f'{", " if extra else ""}{extra})'
    example = [
        '>>> import jax.numpy as jnp, optax',
        '>>> from stateopt import functional as F',
        f'>>> p = jnp.array([1.0, -1.0]); s = F.{snake}_init(p{", " if hyper else ""}{hyper})',
        *([f'>>> p, s = {step_call}'] if kind != 'init' else []),
        '>>> p.shape', '(2,)',
    ]
    function.__doc__ = (
        f'``{usage}``: the functional form of :class:`stateopt.{optimizer.__name__}`.\n\n'
        f'Hyper-parameters default to the constructor\'s. The rule:\n\n{rule}\n\n'
        'Examples\n--------\n' + '\n'.join(example) + '\n'
    )
    return function


#: Every optimizer class with a functional form, by its snake-case name.
OPTIMIZERS: dict[str, type[OptaxOptimizer]] = {
    _snake(name): getattr(optimizers, name) for name in optimizers.__all__
}

for _name, _optimizer in OPTIMIZERS.items():
    for _kind in ('init', 'update', 'step'):
        _function = _named(_kind, _optimizer)
        globals()[_function.__name__] = _function
        __all__.append(_function.__name__)
del _name, _optimizer, _kind, _function
