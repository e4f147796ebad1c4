"""What the optimizers that evaluate the loss away from the current params share (L-BFGS, Sophia).

Their ``step`` accepts the loss as ``closure`` (re-evaluated from the States, torch
style) or as ``value_fn`` (a function of every registered param, keyed as registered),
and hands the algorithm the loss as a function of its group's params: an
:class:`Objective`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import brainstate

from .._donation import RAW, store_raw
from .._optimizer import OptaxOptimizer
from .._state import UniqueStateManager, unflatten
from .._trace import is_traced

__all__ = ['EvaluatesLoss', 'Objective']


class EvaluatesLoss(OptaxOptimizer):
    """Base of the optimizers whose algorithm evaluates the loss away from the current params.

    ``step`` accepts the loss as ``closure`` (re-evaluates it from the States, torch
    style) or as ``value_fn`` (a function of every registered param, keyed as
    registered), and hands the algorithm the loss as a function of its group's params.
    """

    _caches = (*OptaxOptimizer._caches, '_objective_steps')
    #: the keyword the algorithm's update receives that function under
    _objective_keyword = 'value_fn'

    def _needs_objective(self) -> bool:
        """Whether some group's algorithm cannot step without the loss function."""
        return False

    def _objective_args(self, objective: Objective, loss: Any, extra_args: dict) -> dict:
        """The extra arguments that give the algorithm the loss."""
        return {self._objective_keyword: objective}

    def step(self, grads: Any = None, closure: Callable | None = None, *,
             value_fn: Callable | None = None, **extra_args: Any) -> Any:
        """One step; ``closure`` or ``value_fn`` gives the algorithm the loss.

        Parameters
        ----------
        grads : dict, optional
            Gradients keyed as the States were registered; computed from ``closure``
            when it is given instead.
        closure : callable, optional
            ``closure() -> loss`` or ``-> (grads, loss)`` (``brainstate.transform.grad(...,
            return_value=True)``), reading the model's States. It is also evaluated at
            other params, with the States holding them meanwhile.
        value_fn : callable, optional
            ``value_fn(params) -> loss`` of every registered param, keyed as registered
            (for example ``{('l1', 'weight'): array, ...}``).

        Returns
        -------
        The closure's loss at the params before the step, or ``None``.
        """
        grads, closure = self._closure_first(grads, closure)
        if closure is None and value_fn is None:
            if self._needs_objective():
                raise ValueError(f'{type(self).__name__} needs the loss here: pass value_fn=(a '
                                 f'function of the params keyed as registered) or closure=(a '
                                 f'function of no arguments reading the States)')
            return super().step(grads, **extra_args)
        if grads is None and closure is None:
            raise ValueError('step needs grads, or a closure')
        if is_traced(self.step_count.value):
            return self._objective_step(grads, extra_args, closure=closure, value_fn=value_fn)
        return self._compiled_objective_step(closure, value_fn)(grads, extra_args)

    def _objective_step(self, grads: Any, extra_args: dict, *, closure: Callable | None,
                        value_fn: Callable | None) -> Any:
        loss = None
        if closure is not None:
            result = closure()
            closure_grads, loss = result if _is_pair(result) else (None, result)
            if grads is None:
                if closure_grads is None:   # by position, then keyed as registered (any key types)
                    by_position = brainstate.transform.grad(
                        lambda: _loss_of(closure()), grad_states=list(self._registry.states))()
                    closure_grads = unflatten(self._registry.paths, list(by_position))
                grads = closure_grads
        objective = Objective(self._registry, closure=closure if value_fn is None else None,
                              value_fn=value_fn)
        super().step(grads, **{**extra_args, **self._objective_args(objective, loss, extra_args)})
        return loss

    def _compiled_objective_step(self, closure: Callable | None, value_fn: Callable | None) -> Callable:
        """The step for this closure / value_fn under ``brainstate.transform.jit``, cached by identity."""
        cache = self._objective_steps = vars(self).get('_objective_steps') or {}
        key = (id(closure), id(value_fn))
        if key not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            step = functools.partial(self._objective_step, closure=closure, value_fn=value_fn)
            cache[key] = (closure, value_fn, brainstate.transform.jit(step))
        return cache[key][2]

    def _invalidate(self) -> None:
        super()._invalidate()
        vars(self).pop('_objective_steps', None)


def _is_pair(result: Any) -> bool:
    return isinstance(result, tuple) and len(result) == 2


def _loss_of(result: Any) -> Any:
    """The loss of a closure's result (``loss`` or ``(grads, loss)``)."""
    return result[1] if _is_pair(result) else result


class Objective:
    """The loss as a function of one param group's params (a dict keyed by parameter names).

    From a closure: evaluated while the group's States hold the given values. From a
    ``value_fn`` of every registered param keyed as registered: the other params
    enter at their current values.
    """

    def __init__(self, registry: UniqueStateManager, closure: Callable | None,
                 value_fn: Callable | None):
        self._paths = registry.paths
        self._states = dict(zip(registry.names, registry.states))
        self._closure = closure
        self._value_fn = value_fn

    def __call__(self, params: Mapping[str, Any]) -> Any:
        if self._value_fn is not None:
            values = [params[name] if name in params else state.value
                      for name, state in self._states.items()]
            return self._value_fn(unflatten(self._paths, values))
        states = [self._states[name] for name in params]
        saved = [RAW(state) for state in states]
        # stored directly, as RAW reads: the States hold the probed values only while the closure
        # runs, which must not be recorded as writes of the trace around the step
        for state, name in zip(states, params):
            store_raw(state, params[name])
        try:
            return _loss_of(self._closure())
        finally:
            for state, value in zip(states, saved):
                store_raw(state, value)
