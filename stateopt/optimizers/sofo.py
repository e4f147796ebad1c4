"""SOFO: second-order forward-mode optimization (Yu et al., NeurIPS 2024), feed-forward and recurrent.

The direction is a damped Gauss-Newton step in a random subspace of the params,
found with batched forward-mode derivatives (no backpropagation); the optimizer then
applies it as SGD applies a gradient (momentum, weight decay, clipping, lr and
schedulers as usual).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

from .._hyper import (
    LR,
    REQUIRED,
    WEIGHT_DECAY,
    Hyperparameters,
    Param,
    choice,
    non_negative,
    positive_int,
)
from .._optimizer import OptaxOptimizer
from .._state import unflatten
from .._trace import inside_jax_transform, is_traced
from ._common import static_flag
from .sgd import MOMENTUM, MomentumBuffer, scale_by_torch_sgd

__all__ = ['SOFO', 'SOFOScan', 'SOFODirection', 'sample_tangents', 'sofo_direction']

_HIGHEST = jax.lax.Precision.HIGHEST


# -- the rule, as pure functions -------------------------------------------------------------

def sample_tangents(key: Any, params: Any, tangent_size: int) -> Any:
    """``tangent_size`` random directions in the space of ``params``, each of unit global norm.

    Every leaf of ``params`` becomes a leaf of shape ``(tangent_size, *leaf.shape)`` with
    standard normal entries (one key per leaf, split from ``key`` in the order of
    ``jax.tree.leaves(params)``); tangent ``i`` is then divided by its norm over all
    leaves together, as SOFO samples its subspace.

    Parameters
    ----------
    key : jax PRNG key
        ``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``.
    params : pytree of arrays
        The params whose shapes and dtypes the tangents take.
    tangent_size : int
        How many tangents (the dimension of the subspace).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from stateopt import sample_tangents
    >>> v = sample_tangents(jax.random.key(0), {'w': jnp.zeros((2, 3)), 'b': jnp.zeros(3)}, 4)
    >>> v['w'].shape, v['b'].shape
    ((4, 2, 3), (4, 3))
    >>> norms = jnp.sqrt(jnp.sum(v['w'] ** 2, axis=(1, 2)) + jnp.sum(v['b'] ** 2, axis=1))
    >>> bool(jnp.allclose(norms, 1.0))
    True
    """
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    tangents = [jax.random.normal(k, (tangent_size, *jnp.shape(leaf)), _float_dtype(leaf))
                for k, leaf in zip(keys, leaves)]
    squares = sum(jnp.sum(jnp.square(t.astype(jnp.float32)).reshape(tangent_size, -1), axis=1)
                  for t in tangents)
    norms = jnp.sqrt(squares)
    tangents = [(t / norms.reshape((-1,) + (1,) * (t.ndim - 1)).astype(t.dtype)) for t in tangents]
    return jax.tree.unflatten(treedef, tangents)


class SOFODirection(NamedTuple):
    """What :func:`sofo_direction` finds at the params.

    Examples
    --------
    >>> from stateopt import SOFODirection
    >>> SOFODirection._fields
    ('direction', 'loss', 'outputs', 'curvature', 'aux')
    """

    direction: Any    # the damped Gauss-Newton direction, shaped like the params (descend along -direction)
    loss: Any         # the loss at the params
    outputs: Any      # the model's outputs at the params
    curvature: Any    # the largest eigenvalue of the Gauss-Newton matrix in the subspace
    aux: Any          # the model's auxiliary output when has_aux, else None


def sofo_direction(
    outputs_fn: Callable[[Any], Any],
    loss_fn: Callable[[Any], Any],
    params: Any,
    tangents: Any,
    *,
    loss: str = 'mse',
    damping: float = 1e-5,
    has_aux: bool = False,
) -> SOFODirection:
    r"""SOFO's direction: a damped Gauss-Newton step in the subspace spanned by ``tangents``.

    With ``V = [v_1 ... v_K]`` the tangents, ``J`` the Jacobian of the outputs ``f`` with
    respect to the params and ``H`` the Hessian of the loss with respect to one sample's
    outputs (``I`` for ``loss='mse'``; ``diag(p) - p p^T``, ``p = softmax(f_n)``, for
    ``loss='ce'``), from forward-mode derivatives only::

        G = mean_n (J_n V)^T H_n (J_n V)           (K x K, n over the samples)
        g = V^T grad L = (dL/df . J v_i)_i          (the loss's directional derivatives)
        G = U diag(s) U^T ;  c = U diag(1 / (s + damping * max(s))) U^T g
        direction = V c

    The samples are the leading axes of the outputs (all but the last, which holds a
    sample's values or class logits); outputs of one axis are samples of one value.
    ``G`` is the Gauss-Newton matrix of the loss ``mean_n 1/2 ||f_n - y_n||^2``
    (``mse``) or of the mean softmax cross-entropy (``ce``); a loss scaled otherwise
    (``jnp.mean((f - y) ** 2)`` over ``C`` values: ``2 / C`` times that) scales the
    direction the same way, which the learning rate absorbs. ``G`` and the solve are
    computed in float32 at least, at the highest matmul precision; an all-zero ``G``
    gives a zero direction.

    Parameters
    ----------
    outputs_fn : callable
        ``outputs_fn(params) -> outputs`` (``-> (outputs, aux)`` when ``has_aux``).
    loss_fn : callable
        ``loss_fn(outputs) -> scalar loss``.
    params : pytree of float arrays
        Where the direction is taken.
    tangents : pytree
        Like ``params`` with a leading axis of ``K`` tangents (:func:`sample_tangents`).
    loss : {'mse', 'ce'}
        Which Gauss-Newton matrix.
    damping : float
        Added to each eigenvalue of ``G``, relative to the largest.
    has_aux : bool
        Whether ``outputs_fn`` also returns auxiliary data.

    Examples
    --------
    With as many tangents as params, the subspace is the whole space: on a linear
    least-squares problem the direction is the Gauss-Newton (here Newton) step, and
    one step with lr 1 lands on the solution.

    >>> import jax, jax.numpy as jnp
    >>> from stateopt import sample_tangents, sofo_direction
    >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]); y = jnp.array([[1.0], [2.0], [3.0]])
    >>> w = jnp.zeros((2, 1))
    >>> v = sample_tangents(jax.random.key(0), w, 2)
    >>> found = sofo_direction(lambda w: x @ w, lambda f: 0.5 * jnp.mean(jnp.sum((f - y) ** 2, -1)),
    ...                        w, v, damping=1e-7)
    >>> solution = jnp.linalg.lstsq(x, y)[0]
    >>> bool(jnp.allclose(w - found.direction, solution, atol=1e-4))
    True
    """
    choice('mse', 'ce')('loss', loss)
    leaves, treedef = jax.tree.flatten(params)
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(f'SOFO differentiates the params in forward mode: they must be floating '
                            f'arrays, got one of dtype {jnp.result_type(leaf)}')

    def along(tangent: Any) -> Any:
        return jax.jvp(outputs_fn, (params,), (tangent,), has_aux=has_aux)

    result = jax.vmap(along)(tangents)
    outputs = _first(result[0])
    output_tangents = result[1]
    aux = _first(result[2]) if has_aux else None
    if not isinstance(outputs, jax.Array):
        raise TypeError(f'the model of SOFO must return one array of outputs (samples first), got '
                        f'{type(outputs).__name__}')

    def loss_along(output_tangent: Any) -> Any:
        return jax.jvp(loss_fn, (outputs,), (output_tangent,))

    losses, slopes = jax.vmap(loss_along)(output_tangents)
    if jnp.shape(losses) != (jnp.shape(output_tangents)[0],):
        raise ValueError(f'loss_fn must return one number (a scalar loss), got an array of shape '
                         f'{jnp.shape(losses)[1:]}')
    curvature_matrix = _gauss_newton(output_tangents, outputs, loss)
    eigvecs, eigvals, _ = jnp.linalg.svd(curvature_matrix)
    largest = jnp.max(eigvals)
    damped = jnp.maximum(eigvals + damping * largest, jnp.finfo(eigvals.dtype).tiny)
    slopes = slopes.astype(eigvecs.dtype)
    coefficients = jnp.matmul(eigvecs / damped, jnp.matmul(eigvecs.T, slopes, precision=_HIGHEST),
                              precision=_HIGHEST)
    direction = [jnp.tensordot(coefficients, tangent.astype(coefficients.dtype), axes=1,
                               precision=_HIGHEST).astype(tangent.dtype)
                 for tangent in treedef.flatten_up_to(tangents)]
    return SOFODirection(jax.tree.unflatten(treedef, direction), losses[0], outputs, largest, aux)


def _first(batched: Any) -> Any:
    """The primal outputs (or aux) of a vmapped jvp, the same for every tangent: the first copy."""
    return jax.tree.map(lambda leaf: leaf[0], batched)


def _gauss_newton(output_tangents: jax.Array, outputs: jax.Array, loss: str) -> jax.Array:
    """``mean_n (J_n V)^T H_n (J_n V)`` from the outputs' tangents ``(K, *outputs.shape)``."""
    dtype = jnp.promote_types(outputs.dtype, jnp.float32)
    samples = _as_samples(output_tangents.astype(dtype), outputs.shape, loss)     # (K, N, C)
    count = samples.shape[1]
    if loss == 'mse':
        return jnp.einsum('knc,jnc->kj', samples, samples, precision=_HIGHEST) / count
    probs = jax.nn.softmax(outputs.astype(dtype).reshape(count, -1), axis=-1)           # (N, C)
    weighted = jnp.einsum('knc,nc->kn', samples, probs, precision=_HIGHEST)
    return (jnp.einsum('knc,nc,jnc->kj', samples, probs, samples, precision=_HIGHEST)
            - jnp.einsum('kn,jn->kj', weighted, weighted, precision=_HIGHEST)) / count


def _as_samples(output_tangents: jax.Array, shape: tuple, loss: str) -> jax.Array:
    """``(K, N, C)``: the leading axes of the outputs are the ``N`` samples, the last the ``C`` values."""
    if len(shape) == 0:
        raise ValueError('the model of SOFO returned a scalar; it must return outputs with a sample '
                         'axis first, e.g. of shape (batch, outputs)')
    if len(shape) == 1:
        if loss == 'ce':
            raise ValueError(f"loss='ce' needs class logits on the last axis of the outputs, shaped "
                             f"(samples..., classes); got outputs of shape {tuple(shape)}")
        return output_tangents[..., None]
    return output_tangents.reshape(output_tangents.shape[0], -1, shape[-1])


def _float_dtype(leaf: Any) -> Any:
    dtype = jnp.result_type(leaf)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32


# -- declarations ----------------------------------------------------------------------------------

def _callable(name: str, value: Any) -> Any:
    if not callable(value):
        raise ValueError(f'{name} must be callable, got {type(value).__name__}')
    return value


def _key(name: str, value: Any) -> Any:
    """``None`` (draw from brainstate's random state) or a jax PRNG key."""
    if value is None:
        return None
    dtype = getattr(value, 'dtype', None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and np.shape(value) == ():
        return value
    if dtype is not None and np.dtype(dtype) == np.uint32 and np.shape(value) == (2,):
        return value
    raise ValueError(f'{name} must be None or one jax PRNG key (jax.random.key(0) or '
                     f'jax.random.PRNGKey(0)), got {value!r}')


_SUBSPACE = (
    Param('loss', 'mse', choice('mse', 'ce'), "Which Gauss-Newton matrix: ``'mse'`` (squared error) or "
          "``'ce'`` (softmax cross-entropy over the last axis of the outputs).", type='str',
          dynamic=False, scope='optimizer'),
    Param('tangent_size', 100, positive_int, 'How many random tangents span the subspace (``K``).',
          type='int', dynamic=False, scope='optimizer'),
    Param('damping', 1e-5, non_negative, 'Added to the eigenvalues of the subspace Gauss-Newton matrix, '
          'relative to the largest.', dynamic=False, scope='optimizer'),
)
_SGD_PART = (MOMENTUM, static_flag('nesterov', False, 'Use Nesterov momentum (needs momentum > 0).'),
             WEIGHT_DECAY)
_KEY = Param('key', None, _key, 'The key of the tangents: step ``t`` samples with ``jax.random.fold_in(key, '
             't)``; ``None`` draws a key from ``brainstate.random`` at each step.',
             type='jax PRNG key or None', dynamic=False, scope='optimizer')
_LOSS_FN = Param('loss_fn', REQUIRED, _callable, '``loss_fn(outputs, targets) -> scalar loss``.',
                 type='callable', dynamic=False, scope='optimizer')


class SOFO(MomentumBuffer, OptaxOptimizer):
    r"""SOFO (Yu et al., NeurIPS 2024): a damped Gauss-Newton step in a random subspace, forward-mode only.

    At each step, ``K = tangent_size`` random tangents ``V`` of unit norm are drawn
    over every registered param together; forward-mode derivatives of ``model`` and
    ``loss_fn`` along them give the subspace Gauss-Newton matrix ``G`` and gradient
    ``g = V^T grad L`` (see :func:`sofo_direction` for the rule), and ::

        d = V U diag(1 / (s + damping * max(s))) U^T g      (G = U diag(s) U^T)

    is applied as SGD applies a gradient: ``b = momentum * b + d`` (``d + momentum * b``
    with Nesterov), decoupled weight decay, ``p -= lr * b``; clipping acts on ``d``.
    ``step(inputs, targets)`` (or ``update``) runs ``model(inputs)``, takes the step
    and returns the loss before it, eagerly (compiled once) or inside
    ``brainstate.transform.jit``. Param groups give their own lr, momentum and decay;
    the subspace spans all groups.

    Examples
    --------
    >>> import brainstate, jax, jax.numpy as jnp, stateopt
    >>> model = brainstate.nn.Linear(3, 2)
    >>> x = jnp.ones((8, 3)); y = jnp.zeros((8, 2))
    >>> loss_fn = lambda pred, target: jnp.mean((pred - target) ** 2)
    >>> opt = stateopt.SOFO(model, loss_fn, lr=0.5, tangent_size=16, key=jax.random.key(0))
    >>> opt = opt.register_trainable_weights(model.states(brainstate.ParamState))
    >>> first = opt.step(x, y)
    >>> for _ in range(5):
    ...     last = opt.step(x, y)
    >>> bool(last < first)
    True
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        Param('model', REQUIRED, _callable, '``model(inputs) -> outputs``, reading the registered '
              'ParamStates; the outputs are an array with the samples on the leading axes.',
              type='callable', dynamic=False, scope='optimizer'),
        _LOSS_FN, LR, *_SUBSPACE, *_SGD_PART, keyword_only=[_KEY], maximize=False)
    _decay = 'decoupled'
    slots = {'count': 'count', 'momentum_buffer': 'momentum_buffer'}
    _caches = (*OptaxOptimizer._caches, '_sofo_steps')

    @classmethod
    def _check(cls, hp: dict) -> None:
        if hp.get('nesterov') and hp['momentum'] <= 0:
            raise ValueError(f'nesterov=True needs momentum > 0, got momentum={hp["momentum"]!r}')

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_sgd(hp['momentum'], 0.0, hp['nesterov'])

    # -- what the model is run on ------------------------------------------------------------
    def _target(self) -> Callable:
        """The function of the call's arguments whose outputs the direction is taken of."""
        return self.model

    def _call(self, inputs: Any, targets: Any) -> tuple[tuple, Any]:
        """``(arguments of the target, targets as the loss sees them)`` of one call."""
        return (inputs,), targets

    # -- stepping ------------------------------------------------------------------------------
    def step(self, inputs: Any = None, targets: Any = None) -> Any:
        """Take one SOFO step on ``(inputs, targets)``; return the loss at the params before it.

        Parameters
        ----------
        inputs : array or pytree
            What ``model`` is called with.
        targets : array or pytree
            The second argument of ``loss_fn``.

        Raises
        ------
        RuntimeError
            No States are registered (also a ValueError, as braintools raises).
        brainstate.TraceContextError
            Called under a raw JAX transform; use ``brainstate.transform.jit``.
        """
        return self._run('step', inputs, targets)

    def update(self, inputs: Any = None, targets: Any = None) -> Any:
        """Same as :meth:`step`: SOFO takes the model's inputs and targets, not gradients."""
        return self._run('step', inputs, targets)

    def direction(self, inputs: Any, targets: Any) -> tuple[dict, Any]:
        """``(direction, outputs)``: the direction the next step would take, and ``model(inputs)``.

        The direction is keyed as the States were registered, before momentum, decay,
        clipping and lr. With a ``key``, it is the one the next step applies; without
        one, each call draws new tangents.
        """
        return self._run('direction', inputs, targets)

    def _run(self, what: str, *call: Any) -> Any:
        if len(call) != 2 or call[1] is None:
            raise TypeError(f'{type(self).__name__} computes its own direction from the model: call '
                            f'step{self._call_shown} (not with gradients)')
        plan = self._get_plan()
        if is_traced(self.step_count.value):
            return getattr(self, f'_{what}')(*call)
        if inside_jax_transform(call):
            raise brainstate.TraceContextError(
                f'{type(self).__name__}.{what} was called inside a raw JAX transform (jax.jit, jax.vmap, '
                f'...), which cannot carry State updates out; nothing was changed. Use '
                f'brainstate.transform.jit')
        if what == 'step' and plan.schedules:
            self._check_scheduled_lrs(plan)
        steps = self._sofo_steps = vars(self).get('_sofo_steps') or {}
        if what not in steps:
            steps[what] = brainstate.transform.jit(getattr(self, f'_{what}'))
        return steps[what](*call)

    _call_shown = '(inputs, targets)'
    _no_accumulation = ('SOFO solves for its direction on each batch, and the mean of the directions of '
                        'k batches is not the direction of the k batches together; give it the larger '
                        'batch instead')
    _target_name = 'model'

    def _step(self, *call: Any) -> Any:
        direction, outputs, targets = self._found(*call)
        OptaxOptimizer.step(self, direction)
        return self.loss_fn(outputs, targets)

    def _direction(self, *call: Any) -> tuple[dict, Any]:
        direction, outputs, _ = self._found(*call)
        return direction, outputs

    def _found(self, *call: Any) -> tuple[dict, Any, Any]:
        """The direction keyed as registered, the outputs and the targets (traced, inside the step)."""
        args, targets = self._call(*call)
        key = brainstate.random.split_key() if self.key is None else \
            jax.random.fold_in(self.key, self.step_count.value)
        states = list(self._registry.states)
        transform = _sofo_transform(states, key, lambda outputs: self.loss_fn(outputs, targets),
                                    self.loss, self.tangent_size, self.damping)
        find = brainstate.transform.GradientTransform(
            target=self._target(), transform=transform, grad_states=states, return_value=True)
        find.stateful_target.make_jaxpr(*args)
        read = {id(state) for state in find.stateful_target.get_states(*args)}
        unread = [name for name, state in zip(self._registry.names, states) if id(state) not in read]
        if unread:
            raise ValueError(f'the {self._target_name} of {type(self).__name__} does not read the registered '
                             f'States {unread}: SOFO moves only params the model reads (a deep copy of the '
                             f'optimizer copies the model only when it is a brainstate Module)')
        values, outputs = find(*args)
        return unflatten(self._registry.paths, list(values)), outputs, targets

    def _invalidate(self) -> None:
        super()._invalidate()
        vars(self).pop('_sofo_steps', None)

    def __deepcopy__(self, memo: dict) -> SOFO:
        """A copy owning copies of its States; a brainstate Module as the model is copied to read them."""
        target = self._settings[self._target_name]
        if isinstance(target, brainstate.graph.Node) and id(target) not in memo:
            twin = copy.deepcopy(target)
            twin_states = brainstate.graph.states(twin)
            for path, state in brainstate.graph.states(target).items():
                memo[id(state)] = twin_states[path]
            memo[id(target)] = twin
        return super().__deepcopy__(memo)


def _sofo_transform(states: list, key: Any, loss_of: Callable, loss: str, tangent_size: int,
                    damping: float) -> Callable:
    """The ``transform`` of brainstate's ``GradientTransform`` that finds the SOFO direction.

    brainstate calls it with the target as a function of ``({id(State): value}, other
    State values, *args)`` returning ``(outputs, (outputs, State writes))``; the
    result is ``({id(State): direction}, (outputs, State writes))``. The tangents
    follow the order of ``states`` (registration order), not of ``id``.
    """
    ids = [id(state) for state in states]

    def transform(fn: Callable, argnums: Any, has_aux: bool) -> Callable:
        def run(grad_values: dict, other_values: dict, *args: Any) -> tuple:
            def outputs_of(values: list) -> Any:
                return fn(dict(zip(ids, values)), other_values, *args)

            params = [grad_values[i] for i in ids]
            found = sofo_direction(outputs_of, loss_of, params, sample_tangents(key, params, tangent_size),
                                   loss=loss, damping=damping, has_aux=True)
            return dict(zip(ids, found.direction)), found.aux

        return run

    return transform


class SOFOScan(SOFO):
    r"""SOFO for a recurrent cell scanned over a sequence: tangents carried forward through time.

    ``rnn_cell(latent, inputs) -> (new_latent, outputs)`` is scanned over the time axis
    of ``inputs_seq`` from ``z_init``; the tangents are carried through the scan by
    forward-mode derivatives (no activations are kept for a backward pass), and the
    outputs of every (time, batch) sample enter one
    subspace Gauss-Newton matrix, as :class:`SOFO`'s rule says. ``loss_fn(outputs,
    targets)`` sees the outputs and ``labels_seq`` with their leading ``(time, batch)``
    axes merged into one. ``step(z_init, (inputs_seq, labels_seq))`` returns the loss
    before the step.

    Examples
    --------
    >>> import brainstate, jax, jax.numpy as jnp, stateopt
    >>> class Cell(brainstate.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.wh, self.wx, self.wo = (brainstate.nn.Linear(4, 4), brainstate.nn.Linear(3, 4),
    ...                                      brainstate.nn.Linear(4, 2))
    ...     def __call__(self, latent, inputs):
    ...         latent = jnp.tanh(self.wh(latent) + self.wx(inputs))
    ...         return latent, self.wo(latent)
    >>> cell = Cell()
    >>> loss_fn = lambda pred, target: jnp.mean((pred - target) ** 2)
    >>> opt = stateopt.SOFOScan(cell, loss_fn, lr=0.5, tangent_size=32, key=jax.random.key(0))
    >>> opt = opt.register_trainable_weights(cell.states(brainstate.ParamState))
    >>> xs = jnp.ones((5, 4, 3)); ys = jnp.full((5, 4, 2), 0.5); z0 = jnp.zeros((4, 4))
    >>> first = opt.step(z0, (xs, ys))
    >>> for _ in range(5):
    ...     last = opt.step(z0, (xs, ys))
    >>> bool(last < first)
    True
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        Param('rnn_cell', REQUIRED, _callable, '``rnn_cell(latent, inputs) -> (new_latent, outputs)``, '
              'reading the registered ParamStates.', type='callable', dynamic=False, scope='optimizer'),
        _LOSS_FN.but(doc='``loss_fn(outputs, targets) -> scalar loss``, with the (time, batch) axes merged.'),
        LR, *_SUBSPACE, *_SGD_PART, keyword_only=[_KEY], maximize=False)
    _call_shown = '(z_init, (inputs_seq, labels_seq))'
    _target_name = 'rnn_cell'

    def step(self, z_init: Any = None, batch: Any = None) -> Any:
        """Take one step on the sequences ``batch = (inputs_seq, labels_seq)`` from the latent ``z_init``.

        Parameters
        ----------
        z_init : array or pytree
            The latent state the scan starts from.
        batch : tuple
            ``(inputs_seq, labels_seq)``, each with leading ``(time, batch)`` axes.

        Returns
        -------
        The loss at the params before the step.
        """
        return self._run('step', z_init, batch)

    def update(self, z_init: Any = None, batch: Any = None) -> Any:
        """Same as :meth:`step`."""
        return self._run('step', z_init, batch)

    def direction(self, z_init: Any, batch: Any) -> tuple[dict, Any]:
        """As :meth:`SOFO.direction`, for ``step(z_init, batch)``; the outputs have (time, batch) merged."""
        return self._run('direction', z_init, batch)

    def _target(self) -> Callable:
        cell = self.rnn_cell

        def scanned(z_init: Any, inputs_seq: Any) -> Any:
            _, outputs = brainstate.transform.scan(lambda latent, x: cell(latent, x), z_init, inputs_seq)
            return _merge_time(outputs, 'the outputs of rnn_cell')

        return scanned

    def _call(self, z_init: Any, batch: Any) -> tuple[tuple, Any]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f'{type(self).__name__}.step takes batch=(inputs_seq, labels_seq), got '
                            f'{type(batch).__name__}')
        inputs_seq, labels_seq = batch
        return (z_init, inputs_seq), jax.tree.map(lambda leaf: _merge_time(leaf, 'labels_seq'), labels_seq)


def _merge_time(leaf: Any, what: str) -> Any:
    """``leaf`` with its leading (time, batch) axes merged into one sample axis."""
    shape = jnp.shape(leaf)
    if len(shape) < 2:
        raise ValueError(f'{what} must have leading (time, batch) axes, got shape {tuple(shape)}')
    return jnp.reshape(leaf, (shape[0] * shape[1], *shape[2:]))
