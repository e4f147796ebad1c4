"""NevergradOptimizer: nevergrad's gradient-free search over a box of bounds or over registered States."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._state import UniqueStateManager
from ._base import Search
from ._scipy import _pair

__all__ = ['NevergradOptimizer']


def _nevergrad() -> Any:
    try:
        import nevergrad
    except ImportError as err:
        raise ImportError('NevergradOptimizer needs nevergrad: pip install "stateopt[nevergrad]"') from err
    return nevergrad


class NevergradOptimizer(Search):
    r"""Gradient-free search with nevergrad's optimizers: ask ``n_sample`` candidates, evaluate, tell.

    **Over a box** (braintools' form): ``bounds`` is a list of ``(min, max)`` pairs and the
    loss is called ``batched_loss_fun(*params)``, each argument stacked over the
    ``n_sample`` candidates (shape ``(n_sample, ...)``), returning one loss per
    candidate; or a dict ``{name: (min, max)}`` and ``batched_loss_fun(**params)``.
    Bounds may be scalars, arrays or brainunit Quantities (the loss gets the numbers in
    the first bound's unit). **Over registered States**: ``bounds`` is ``{param name:
    (min, max)}`` for every registered State, ``batched_loss_fun()`` takes no arguments
    and reads the States; each candidate is written into the States and evaluated, and
    the best one is left in them.

    :meth:`minimize` runs ``n_iter`` rounds and returns the candidate with the lowest
    loss seen (or nevergrad's recommendation with ``use_nevergrad_recommendation``, or
    when every loss is NaN), in the structure of the bounds.

    Parameters
    ----------
    batched_loss_fun : callable
        The loss, as above.
    bounds : dict or sequence of (min, max)
        The search box.
    n_sample : int
        Candidates per round.
    method : str
        A nevergrad optimizer name (``'DE'``, ``'TwoPointsDE'``, ``'CMA'``, ``'PSO'``,
        ``'OnePlusOne'``, or any of ``nevergrad.optimizers.registry``).
    use_nevergrad_recommendation : bool
        Return nevergrad's recommendation instead of the best candidate seen.
    budget : int, optional
        nevergrad's budget (it shapes the method; the rounds are ``n_iter``).
    num_workers : int
        nevergrad's ``num_workers``.
    method_params : dict, optional
        Further arguments of the nevergrad optimizer.
    seed : int, optional
        Seeds nevergrad's sampling.

    Examples
    --------
    >>> import stateopt
    >>> opt = stateopt.NevergradOptimizer(lambda x, y: (x - 1.0) ** 2 + y ** 2,
    ...                                   [(-5.0, 5.0), (-3.0, 3.0)], n_sample=16, seed=0)
    >>> x, y = opt.minimize(n_iter=20, verbose=False)
    >>> abs(float(x) - 1.0) < 0.2 and abs(float(y)) < 0.2
    True
    """

    __module__ = 'stateopt'

    def __init__(self, batched_loss_fun: Callable, bounds: Sequence | Mapping, n_sample: int,
                 method: str = 'DE', use_nevergrad_recommendation: bool = False, budget: int | None = None,
                 num_workers: int = 1, method_params: dict | None = None, seed: int | None = None):
        ng = _nevergrad()
        if not callable(batched_loss_fun):
            raise ValueError(f'batched_loss_fun must be a callable, got {type(batched_loss_fun).__name__}')
        if isinstance(n_sample, bool) or not isinstance(n_sample, (int, np.integer)) or n_sample < 1:
            raise ValueError(f'n_sample must be an integer >= 1, got {n_sample!r}')
        if method not in ng.optimizers.registry:
            raise ValueError(f'method={method!r} is not a nevergrad optimizer; use one of '
                             f'nevergrad.optimizers.registry, such as \'DE\', \'CMA\', \'PSO\', '
                             f'\'OnePlusOne\'')
        if isinstance(bounds, Mapping):
            self._box = {key: _pair(f'[{key!r}]', bound) for key, bound in bounds.items()}
            pairs = list(self._box.values())
        elif isinstance(bounds, (list, tuple)):
            self._box = tuple(_pair(f'[{i}]', bound) for i, bound in enumerate(bounds))
            pairs = list(self._box)
        else:
            raise ValueError(f'bounds must be a dict or a list of (min, max) pairs, got '
                             f'{type(bounds).__name__}')
        if not pairs:
            raise ValueError('bounds is empty: give one (min, max) pair per parameter')
        self.batched_loss_fun, self.bounds = batched_loss_fun, bounds
        self.n_sample, self.method = n_sample, method
        self.use_nevergrad_recommendation, self.budget = use_nevergrad_recommendation, budget
        self.num_workers, self.method_params, self.seed = num_workers, dict(method_params or {}), seed
        self.param_states = UniqueStateManager()
        self.candidates: list = []
        self.errors: np.ndarray | None = None
        self.optimizer = None

    def _parameter(self, ng: Any, low: np.ndarray, high: np.ndarray) -> Any:
        if low.ndim == 0:
            return ng.p.Scalar(lower=float(low), upper=float(high))
        return ng.p.Array(shape=low.shape, lower=low, upper=high)

    def initialize(self) -> None:
        """Create the nevergrad optimizer and forget the candidates seen (``minimize`` does it first)."""
        ng = _nevergrad()
        if isinstance(self._box, dict):
            space = ng.p.Dict(**{key: self._parameter(ng, *pair) for key, pair in self._box.items()})
        else:
            space = ng.p.Tuple(*[self._parameter(ng, *pair) for pair in self._box])
        if self.seed is not None:
            space.random_state.seed(self.seed)
        self.optimizer = ng.optimizers.registry[self.method](
            parametrization=space, budget=self.budget, num_workers=self.num_workers, **self.method_params)
        self.candidates, self.errors = [], None

    def _losses(self, values: list) -> np.ndarray:
        """One loss per candidate."""
        if len(self.param_states):
            names, states = self.param_states.names, self.param_states.states
            losses = []
            for value in values:
                for name, state in zip(names, states):
                    state.value = jnp.asarray(np.broadcast_to(value[name], np.shape(state.value)),
                                              jnp.result_type(state.value))
                losses.append(float(self.batched_loss_fun()))
            return np.asarray(losses, np.float64)
        if isinstance(self._box, dict):
            stacked = {key: jnp.asarray(np.stack([v[key] for v in values]), jnp.float32) for key in self._box}
            losses = self.batched_loss_fun(**stacked)
        else:
            stacked = [jnp.asarray(np.stack([v[i] for v in values]), jnp.float32)
                       for i in range(len(self._box))]
            losses = self.batched_loss_fun(*stacked)
        losses = np.asarray(losses, np.float64).reshape(-1)
        if losses.shape != (len(values),):
            raise ValueError(f'batched_loss_fun returned {losses.size} losses for {len(values)} candidates; '
                             f'return one loss per candidate (shape ({len(values)},))')
        return losses

    def _one_trial(self, choice_best: bool = False) -> Any:
        candidates = [self.optimizer.ask() for _ in range(self.n_sample)]
        values = [candidate.value for candidate in candidates]
        losses = self._losses(values)
        for candidate, loss in zip(candidates, losses):
            self.optimizer.tell(candidate, loss)
        self.candidates.extend(values)
        self.errors = losses if self.errors is None else np.concatenate([self.errors, losses])
        if not choice_best:
            return None
        if self.use_nevergrad_recommendation or np.all(np.isnan(self.errors)):
            if not self.use_nevergrad_recommendation:
                warnings.warn('every loss is NaN; returning nevergrad\'s recommendation', RuntimeWarning,
                              stacklevel=3)
            return self.optimizer.provide_recommendation().value
        return self.candidates[int(np.nanargmin(self.errors))]

    def minimize(self, n_iter: int = 1, verbose: bool = True) -> Any:
        """Run ``n_iter`` rounds of ``n_sample`` candidates; return the best (see the class).

        Parameters
        ----------
        n_iter : int
            Rounds.
        verbose : bool
            Print the best loss after each round.

        Examples
        --------
        >>> import stateopt
        >>> opt = stateopt.NevergradOptimizer(lambda **p: (p['a'] - 0.5) ** 2, {'a': (0.0, 1.0)},
        ...                                   n_sample=8, method='OnePlusOne', seed=1)
        >>> round(float(opt.minimize(n_iter=30, verbose=False)['a']), 1)
        0.5
        """
        if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
            raise ValueError(f'n_iter must be an integer >= 1, got {n_iter!r}')
        if len(self.param_states):
            if not isinstance(self._box, dict) or set(self._box) != set(self.param_states.names):
                raise ValueError(f'over registered States, bounds is {{param name: (min, max)}} for every '
                                 f'one of {list(self.param_states.names)}')
            originals = [state.value for state in self.param_states.states]
        if self.budget is not None and n_iter * self.n_sample > self.budget:
            warnings.warn(f'minimize(n_iter={n_iter}) evaluates {n_iter * self.n_sample} candidates, more '
                          f'than budget={self.budget}, which nevergrad\'s {self.method} was configured for; '
                          f'raise the budget or lower n_iter', RuntimeWarning, stacklevel=2)
        self.initialize()
        try:
            best = None
            for round_index in range(n_iter):
                best = self._one_trial(choice_best=round_index == n_iter - 1 or verbose)
                if verbose:
                    print(f'round {round_index}: best loss {np.nanmin(self.errors):.6g}')
        except BaseException:
            if len(self.param_states):
                for state, value in zip(self.param_states.states, originals):
                    state.value = value
            raise
        if len(self.param_states):
            self._losses([best])   # leave the best candidate in the States
            best = dict(zip(self.param_states.names, (state.value for state in self.param_states.states)))
        elif isinstance(self._box, dict):
            best = {key: jnp.asarray(value, jnp.float32) for key, value in best.items()}
        else:
            best = tuple(jnp.asarray(value, jnp.float32) for value in best)
        return best
