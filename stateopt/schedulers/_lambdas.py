"""Schedules given as functions: LambdaLR, MultiplicativeLR."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from ._base import LRScheduler
from ._common import I32, LRs, _f32, _pick


class LambdaLR(LRScheduler):
    r"""The base lr times a function of the step (torch.optim.lr_scheduler.LambdaLR).

    ``lr_t = b_g * lr_lambda(t)``. ``lr_lambda`` receives ``t`` as an int32 array and
    is traced, so write it with ``jnp`` operations (``jnp.where``, not ``if``; ``jnp.exp``,
    not ``math.exp``); a function written for torch's Python ints is refused when the
    scheduler is built. A list gives one function per param group.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.LambdaLR(base_lr=0.1, lr_lambda=lambda t: 1 / (1 + t))
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [0.1, 0.05, 0.033333, 0.025]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, lr_lambda: Callable | Sequence[Callable] | None = None,
                 last_epoch: int = 0):
        if lr_lambda is None:
            raise ValueError('lr_lambda is required: a function of the step giving the lr factor')
        functions = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda]
        for i, function in enumerate(functions):
            if not callable(function):
                raise ValueError(f'lr_lambda must be a function of the step (or a list of them), '
                                 f'got {function!r} at position {i}')
        if not functions:
            raise ValueError('lr_lambda must be a function of the step, got an empty list')
        for i, function in enumerate(functions):
            _check_traceable(f'lr_lambda[{i}]' if isinstance(lr_lambda, (list, tuple)) else 'lr_lambda',
                             function)
        self.lr_lambdas = functions
        if isinstance(lr_lambda, (list, tuple)):
            self._listed = {**self._listed, 'lr_lambda': len(functions)}
        super().__init__(base_lr, last_epoch)

    def _factor(self, epoch, group):
        return _f32(_pick(self.lr_lambdas, group)(epoch))

    def lr_at(self, base, epoch, group):
        return base * self._factor(epoch, group)


def _check_traceable(name: str, function: Callable) -> None:
    """Refuse a function of the step that needs it as a Python number (torch passes an int)."""
    try:
        jax.eval_shape(function, jax.ShapeDtypeStruct((), I32))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError) as err:
        raise ValueError(
            f'{name} uses the step as a Python number (an `if` on it, math.* or indexing with it), but '
            f'it receives a traced int32 array so that stepping works inside jit; write it with jnp '
            f'operations, e.g. lambda t: jnp.where(t < 10, 1.0, 0.1) or lambda t: jnp.exp(-0.1 * t)') from err


class MultiplicativeLR(LambdaLR):
    r"""Multiply the lr by a function of the step at every step (torch's MultiplicativeLR).

    ``lr_t = lr_{t-1} * lr_lambda(t)``, so ``lr_t = b_g * prod_{i=1..t} lr_lambda(i)``.
    ``lr_lambda`` is traced, as for :class:`LambdaLR`.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.MultiplicativeLR(base_lr=1.0, lr_lambda=lambda t: 0.5)
    >>> for _ in range(3):
    ...     sched.step()
    >>> sched.get_last_lr()
    [0.125]
    """

    __module__ = 'stateopt'

    def lr_at(self, base, epoch, group):
        return jax.lax.fori_loop(1, jnp.asarray(epoch, I32) + 1,
                                 lambda i, lr: lr * self._factor(i, group), _f32(base))

    def next_lr(self, lr, base, epoch, group):
        return jnp.where(epoch == 0, lr, lr * self._factor(epoch, group))

    def _values_on_switch(self, values, bases, groups):
        zero = jnp.asarray(0, I32)
        return {**values, 'lr': tuple(lr * self._factor(zero, g) for lr, g in zip(values['lr'], groups))}
