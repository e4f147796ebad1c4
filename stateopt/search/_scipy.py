"""ScipyOptimizer: scipy.optimize.minimize over registered States or over a box of bounds."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

from .._state import UniqueStateManager
from ._base import Search

__all__ = ['ScipyOptimizer']

#: The methods that use no gradient: the Jacobian is not computed for them.
GRADIENT_FREE = frozenset({'nelder-mead', 'powell', 'cobyla', 'cobyqa'})
#: The methods given the exact Hessian (by JAX): scipy needs it for these, or approximates it badly
#: from float32 gradients.
USES_HESSIAN = frozenset({'newton-cg', 'dogleg', 'trust-ncg', 'trust-exact', 'trust-krylov'})
#: Every method of scipy.optimize.minimize by name (a callable method is passed through).
METHODS = ('Nelder-Mead', 'Powell', 'CG', 'BFGS', 'Newton-CG', 'L-BFGS-B', 'TNC', 'COBYLA', 'COBYQA',
           'SLSQP', 'trust-constr', 'dogleg', 'trust-ncg', 'trust-exact', 'trust-krylov')


def _scipy_minimize() -> Callable:
    try:
        from scipy.optimize import minimize
    except ImportError as err:  # pragma: no cover - scipy comes with jax
        raise ImportError('ScipyOptimizer needs scipy: pip install "stateopt[scipy]"') from err
    return minimize


def _mantissa(value: Any) -> np.ndarray:
    """A bound as a float64 array, its unit (a brainunit Quantity) removed."""
    return np.asarray(getattr(value, 'mantissa', value), dtype=np.float64)


def _pair(where: str, bound: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of one ``(min, max)`` bound, same shape and unit, ``low <= high``."""
    if not isinstance(bound, (tuple, list)) or len(bound) != 2:
        raise ValueError(f'bounds{where} must be a (min, max) pair, got {bound!r}')
    low, high = bound
    if hasattr(low, 'mantissa') or hasattr(high, 'mantissa'):
        import brainunit as u
        low, high = u.Quantity(low), u.Quantity(high)
        u.fail_for_unit_mismatch(low, high)   # raises naming both units
        high = high.in_unit(low.unit)
    low, high = _mantissa(low), _mantissa(high)
    if low.shape != high.shape:
        raise ValueError(f'bounds{where}: min and max must have one shape, got {low.shape} and {high.shape}')
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))) or np.any(low > high):
        raise ValueError(f'bounds{where} must be finite with min <= max, got {bound!r}')
    return low, high


def _is_row(node: Any, flat: _Flat) -> bool:
    """Whether ``node`` is one row of Hessian blocks: a tree with the parameters' structure."""
    try:
        return jax.tree.structure(node) == flat.treedef
    except Exception:
        return False


class _Flat:
    """A structure of arrays as one float64 vector for scipy, and back in each leaf's dtype."""

    def __init__(self, template: Any):
        leaves, self.treedef = jax.tree.flatten(template)
        self.shapes = [np.shape(leaf) for leaf in leaves]
        self.dtypes = [jnp.result_type(leaf) for leaf in leaves]
        self.cuts = np.cumsum([int(np.prod(shape)) for shape in self.shapes])[:-1]

    def matrix(self, blocks: Any) -> np.ndarray:
        """The Hessian ``blocks[i][j]`` (a tree of trees, as JAX gives it) as one float64 matrix."""
        rows = jax.tree.leaves(blocks, is_leaf=lambda node: node is not blocks and _is_row(node, self))
        sizes = [int(np.prod(shape)) for shape in self.shapes]
        return np.block([[np.asarray(block, np.float64).reshape(m, n)
                          for block, n in zip(jax.tree.leaves(row), sizes)] for row, m in zip(rows, sizes)])

    def ravel(self, tree: Any) -> np.ndarray:
        return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree.leaves(tree)])

    def unravel(self, vector: np.ndarray) -> Any:
        chunks = np.split(np.asarray(vector), self.cuts)
        leaves = [jnp.asarray(chunk.reshape(shape), dtype)
                  for chunk, shape, dtype in zip(chunks, self.shapes, self.dtypes)]
        return jax.tree.unflatten(self.treedef, leaves)


class ScipyOptimizer(Search):
    r"""``scipy.optimize.minimize`` over registered States, or over a box of ``bounds`` (braintools' form).

    **Over States** (register them, then call :meth:`minimize`): ``loss_fun()`` takes no
    arguments and reads the States. The search starts from their values, every
    method of ``scipy.optimize.minimize`` works on them flattened to one float64
    vector (gradients by ``brainstate.transform.grad``, compiled once; the gradient-free
    methods Nelder-Mead, Powell, COBYLA and COBYQA take none; Newton-CG, dogleg and the
    trust-region methods get the exact Hessian), and the best point is
    written back in each State's own dtype (float32 stays float32). ``bounds``, if
    given, is ``{param name: (min, max)}`` for some of them.

    **Over a box** (braintools' form, nothing registered): ``bounds`` is a list of
    ``(min, max)`` pairs, and ``loss_fun(*params)`` is called with one value per pair,
    or a dict ``{name: (min, max)}`` and ``loss_fun(**params)``. Bounds may be scalars,
    arrays or brainunit Quantities (the loss gets the numbers, in the first bound's
    unit). ``minimize(n_iter)`` runs from ``n_iter`` random points inside the box.

    Either way the result is scipy's ``OptimizeResult`` of the best run, ``res.x`` in
    the structure of the parameters (``{name: value}`` over States, a tuple or dict
    over a box). The loss is computed in the parameters' dtype: with float32 ones a
    gradient method may end with ``success=False`` ("precision loss") at the float32
    optimum, which is the point it returns.

    Parameters
    ----------
    loss_fun : callable
        The objective, returning a scalar.
    bounds : dict or sequence of (min, max), optional
        The box (braintools' form), or per-State bounds ``{param name: (min, max)}``.
    method : str or callable, optional
        A method of ``scipy.optimize.minimize`` (``'L-BFGS-B'``, ``'BFGS'``, ``'TNC'``,
        ``'SLSQP'``, ``'Powell'``, ...); ``None`` lets scipy choose.
    constraints, tol, callback, options
        Passed to ``scipy.optimize.minimize`` (``options={'maxiter': 100}``); ``callback``
        receives the parameters in their structure.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([3.0, -1.0]))
    >>> opt = stateopt.ScipyOptimizer(lambda: jnp.sum((w.value - 1.0) ** 2), method='L-BFGS-B')
    >>> opt = opt.register_trainable_weights({'w': w})
    >>> res = opt.minimize()
    >>> bool(res.success), [round(float(v), 4) for v in w.value], w.value.dtype
    (True, [1.0, 1.0], dtype('float32'))
    >>> box = stateopt.ScipyOptimizer(lambda x, y: (x - 1.0) ** 2 + (y + 2.0) ** 2,
    ...                               bounds=[(-5.0, 5.0), (-3.0, 3.0)], method='L-BFGS-B')
    >>> [round(float(v), 4) for v in box.minimize(n_iter=2).x]
    [1.0, -2.0]
    """

    __module__ = 'stateopt'

    def __init__(self, loss_fun: Callable, bounds: Sequence | Mapping | None = None,
                 method: str | Callable | None = None, constraints: Any = (), tol: float | None = None,
                 callback: Callable | None = None, options: dict | None = None):
        if not callable(loss_fun):
            raise TypeError(f'loss_fun must be a callable returning a scalar, got {type(loss_fun).__name__}')
        if isinstance(method, str) and method.lower() not in {m.lower() for m in METHODS}:
            raise ValueError(f'method={method!r} is not a method of scipy.optimize.minimize; use one of '
                             f'{", ".join(METHODS)} (or a callable)')
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f'options must be a dict of solver options (such as {{"maxiter": 100}}), '
                             f'got {options!r}')
        self.loss_fun, self.method, self.constraints = loss_fun, method, constraints
        self.tol, self.callback, self.options = tol, callback, options
        self.param_states = UniqueStateManager()
        self.bounds = bounds
        self._box = None
        if isinstance(bounds, Mapping):
            self._box = {key: _pair(f'[{key!r}]', bound) for key, bound in bounds.items()}
        elif isinstance(bounds, (list, tuple)):
            self._box = tuple(_pair(f'[{i}]', bound) for i, bound in enumerate(bounds))
        elif bounds is not None:
            raise ValueError(f'bounds must be a dict or a list of (min, max) pairs, got '
                             f'{type(bounds).__name__}')

    # -- over registered States ------------------------------------------------------------
    def _minimize_states(self) -> Any:
        names, states = self.param_states.names, self.param_states.states
        start = {name: state.value for name, state in zip(names, states)}
        bounds = None
        if self._box is not None:
            if not isinstance(self._box, dict):
                raise ValueError('over registered States, bounds is {param name: (min, max)}; a list of '
                                 'pairs is the box form, used with nothing registered')
            unknown = sorted(set(self._box) - set(names))
            if unknown:
                raise ValueError(f'bounds names {unknown}, which are not registered States; the registered '
                                 f'names are {list(names)}')
            lows, highs = [], []
            for name in names:
                shape = np.shape(start[name])
                low, high = self._box.get(name, (np.full(shape, -np.inf), np.full(shape, np.inf)))
                lows.append(np.broadcast_to(low, shape).ravel())
                highs.append(np.broadcast_to(high, shape).ravel())
            bounds = [(None if np.isinf(lo) else float(lo), None if np.isinf(hi) else float(hi))
                      for lo, hi in zip(np.concatenate(lows), np.concatenate(highs))]
        tree = dict(zip(names, states))
        value_fn = brainstate.transform.jit(lambda: jnp.asarray(self.loss_fun()))
        grad_fn = brainstate.transform.jit(
            brainstate.transform.grad(lambda: self.loss_fun(), grad_states=tree))
        hess_fn = brainstate.transform.jit(
            brainstate.transform.hessian(lambda: self.loss_fun(), grad_states=tree))

        def put(values):
            for name, state in tree.items():
                state.value = values[name]

        try:
            result = self._run(start, lambda values: (put(values), value_fn())[1],
                               lambda values: (put(values), grad_fn())[1], bounds,
                               lambda values: (put(values), hess_fn())[1])
        except BaseException:
            put(start)
            raise
        put(result.x)
        return result

    # -- the search ----------------------------------------------------------------------------
    def _run(self, start: Any, value_of: Callable, grad_of: Callable, bounds: Any,
             hess_of: Callable) -> Any:
        """One ``scipy.optimize.minimize`` from ``start``, the parameters flattened to float64."""
        flat = _Flat(start)
        name = self.method.lower() if isinstance(self.method, str) else None
        uses_grad = name not in GRADIENT_FREE
        hess = (lambda vector: flat.matrix(hess_of(flat.unravel(vector)))) if name in USES_HESSIAN else None
        callback = None if self.callback is None else (lambda vector, *a: self.callback(flat.unravel(vector)))
        result = _scipy_minimize()(
            lambda vector: float(value_of(flat.unravel(vector))), flat.ravel(start), method=self.method,
            jac=(lambda vector: flat.ravel(grad_of(flat.unravel(vector)))) if uses_grad else None,
            hess=hess, bounds=bounds, constraints=self.constraints, tol=self.tol, callback=callback,
            options=None if self.options is None else dict(self.options))
        result['x'] = flat.unravel(result['x'])
        return result

    def minimize(self, n_iter: int = 1) -> Any:
        """Run the search; return scipy's ``OptimizeResult`` of the best run.

        Over registered States: one run from their values (``n_iter`` must be 1), the best
        point written back. Over a box: ``n_iter`` runs from random points inside it, the
        one with the lowest ``fun`` returned (a run whose ``fun`` is not finite is kept
        only if all are).

        Parameters
        ----------
        n_iter : int
            Random restarts (box form).

        Examples
        --------
        >>> import stateopt
        >>> opt = stateopt.ScipyOptimizer(lambda x: (x - 0.5) ** 2, bounds=[(0.0, 1.0)], method='Powell')
        >>> round(float(opt.minimize().x[0]), 4)
        0.5
        """
        if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
            raise ValueError(f'n_iter must be an integer >= 1, got {n_iter!r}')
        if len(self.param_states):
            if n_iter != 1:
                raise ValueError('over registered States the search starts from their values: n_iter=1')
            return self._minimize_states()
        if self._box is None:
            raise ValueError('nothing to search over: register States (register_trainable_weights) or '
                             'give bounds (a list or dict of (min, max) pairs)')
        keys = list(self._box) if isinstance(self._box, dict) else None
        pairs = list(self._box.values()) if keys is not None else list(self._box)
        bounds = [(float(lo), float(hi)) for low, high in pairs for lo, hi in zip(low.ravel(), high.ravel())]

        def objective(values):
            value = self.loss_fun(**values) if keys is not None else self.loss_fun(*values)
            return jnp.asarray(value).sum() if jnp.ndim(value) else jnp.asarray(value)

        value_fn, grad_fn = jax.jit(objective), jax.jit(jax.grad(objective))
        hess_fn = jax.jit(jax.hessian(objective))
        results = []
        for _ in range(n_iter):
            draws = [jnp.asarray(np.random.uniform(low, high), jnp.float32) for low, high in pairs]
            start = dict(zip(keys, draws)) if keys is not None else tuple(draws)
            results.append(self._run(start, value_fn, grad_fn, bounds, hess_fn))
        finite = [result for result in results if np.isfinite(result.fun)]
        return min(finite, key=lambda result: result.fun) if finite else results[0]
