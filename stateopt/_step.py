"""The step: the one chain every optimizer runs, the compiled pure update, and its calls.

Each optimizer only declares its algorithm (an optax ``GradientTransformation``
giving the update *direction*: descent is ``param - lr * direction``); the chain wraps
it the same way for every optimizer, every param group and the functional API::

    g = clip_by_global_norm(g) ; g = clip(g, ±clip_value) ; g = -g if maximize
    g = g + weight_decay * p                       (weight_decay='coupled', L2)
    d, state = algorithm.update(g, state, p)
    p = p * (1 - lr * weight_decay) - lr * d       (weight_decay='decoupled')
    p = p - lr * d                                 (otherwise)

One step of an optimizer is a pure function of (params, grads, optimizer states,
hyper-parameters, count) running that chain per param group: inside a brainstate trace
it is traced inline; outside, it is one cached ``jax.jit`` that donates the buffers it
replaces (see :mod:`stateopt._donation`). Last, what a step is given is checked (grads
keyed, shaped and typed like the registered parameters).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _donation
from ._decay import resolve_decay_mask
from ._donation import RAW as _RAW
from ._donation import DonationGuard, owned_leaves, stored_elsewhere, write_back_all
from ._groups import to_python
from ._loop import Loop, run_loop
from ._precision import rounded_value, working_grad, working_value
from ._state import ReadableKeyError, leaves_with_keys, shown_key
from ._trace import at_top_level, inside_jax_transform, is_traced

__all__ = ['Stepping', 'chain_update']


# -- the shared chain ---------------------------------------------------------------------------

Decay = Literal['coupled', 'decoupled', None]


def global_norm(grads: Any) -> jax.Array:
    """The L2 norm of all leaves of ``grads`` together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))


def clip_factor(norm: jax.Array, max_norm: Any) -> jax.Array:
    """The factor optax's ``clip_by_global_norm`` scales gradients by: ``max_norm / norm`` above the limit."""
    return jnp.where(norm < max_norm, 1.0, max_norm / norm)


def cast_like(new: Any, old: Any) -> Any:
    """``new`` with every leaf cast to the dtype of the matching leaf of ``old``."""
    return jax.tree.map(lambda n, o: jnp.asarray(n).astype(jnp.result_type(o)), new, old)


def chain_update(
    algorithm: optax.GradientTransformation,
    grads: Any,
    state: Any,
    params: Any,
    *,
    lr: Any,
    weight_decay: Any = 0.0,
    decay: Decay = None,
    maximize: bool = False,
    grad_clip_norm: Any = None,
    grad_clip_value: Any = None,
    norm: Any = None,
    extra_args: dict | None = None,
    scale_by_lr: bool = True,
    decay_mask: Any = None,
) -> tuple[Any, Any]:
    """One update of ``params`` by the shared chain around ``algorithm``.

    Parameters
    ----------
    algorithm : optax.GradientTransformation
        The update direction (no learning rate, no sign flip).
    grads, state, params : pytree
        Gradients and parameters of the same structure, and ``algorithm``'s state.
    lr, weight_decay : scalar
        Learning rate and weight-decay coefficient (may be traced).
    decay : {'coupled', 'decoupled', None}
        How ``weight_decay`` enters: added to the gradient (L2, torch's Adam/SGD),
        or multiplied into the parameter (torch's AdamW), or not at all.
    maximize : bool
        Ascend instead of descend (torch's ``maximize``).
    grad_clip_norm, grad_clip_value : scalar or None
        Clip by global norm (``norm`` is that norm when it spans more than ``grads``,
        as with several param groups), then element-wise to ``[-value, value]``.
    extra_args : dict, optional
        Passed to ``algorithm.update`` (for example L-BFGS's ``value``).
    scale_by_lr : bool
        False when the algorithm's direction already includes the learning rate
        (then ``p - d``, and ``lr`` only scales decoupled decay).
    decay_mask : callable, dict or None
        Which arrays weight decay acts on (see :func:`stateopt._decay.resolve_decay_mask`);
        the others get no decay, and the algorithm updates them all the same.

    Returns
    -------
    (new_params, new_state), each leaf in the dtype it came in.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> from stateopt._step import chain_update
    >>> p, s = chain_update(optax.identity(), {'w': jnp.ones(2)}, optax.EmptyState(),
    ...                     {'w': jnp.zeros(2)}, lr=0.5)
    >>> p['w'].tolist()
    [-0.5, -0.5]
    """
    if grad_clip_norm is not None:
        factor = clip_factor(global_norm(grads) if norm is None else norm, grad_clip_norm)
        grads = jax.tree.map(lambda g: g * factor.astype(g.dtype), grads)
    if grad_clip_value is not None:
        grads = jax.tree.map(lambda g: jnp.clip(g, -grad_clip_value, grad_clip_value), grads)
    if maximize:
        grads = jax.tree.map(jnp.negative, grads)
    decayed = resolve_decay_mask(decay_mask, params) if decay is not None else None
    if decay == 'coupled':
        grads = jax.tree.map(lambda g, p, on: g + weight_decay * p if on else g, grads, params, decayed)
    algorithm = optax.with_extra_args_support(algorithm)
    direction, new_state = algorithm.update(grads, state, params, **(extra_args or {}))
    step = lr if scale_by_lr else 1.0
    if decay == 'decoupled':
        keep = 1.0 - lr * weight_decay
        new_params = jax.tree.map(lambda p, d, on: (p * keep if on else p) - step * d, params, direction,
                                  decayed)
    else:
        new_params = jax.tree.map(lambda p, d: p - step * d, params, direction)
    return cast_like(new_params, params), cast_like(new_state, state)


# -- the compiled step ---------------------------------------------------------------------------

def _signature(value: Any) -> tuple:
    """Structure, shapes and dtypes of a parameter's value."""
    leaves, treedef = jax.tree.flatten(value)
    return treedef, tuple((np.shape(x), jnp.result_type(x)) for x in leaves)


@dataclass(frozen=True)
class _StepSpec:
    """Everything the compiled step is specialised on.

    It is hashable, so optimizers of the same class, structure and static
    hyper-parameters share one compilation (a resumed run rebuilds its optimizer and
    compiles nothing new).
    """

    optimizer: type         # the optimizer class: its algorithm and chain options
    paths: tuple            # key paths of the registered States, in registration order
    names: tuple            # their names
    aliases: tuple          # (key path, position) of further keys of registered States
    signatures: tuple       # (treedef, ((shape, dtype), ...)) of each value at registration
    groups: tuple           # (positions, static hyper-parameter items, lr schedule) per group
    any_clip_norm: bool
    opt_treedef: Any        # structure of the optimizer state, passed as a list of leaves
    mixed_keys: bool = False  # keys of different types at one level: grads are selected before the step
    loop: Loop = Loop()     # gradient accumulation and non-finite skipping around the step (_loop.py)
    state_dtype: Any = None  # the dtype the per-parameter state is stored in (_precision.py), or None
    layout: Any = None      # where each written array stays, on a mesh (_placement.Layout), or None


@dataclass(eq=False)
class Plan:
    """An optimizer's compiled step and the States it updates; rebuilt when registration changes."""

    states: tuple           # every registered State, in registration order
    spec: _StepSpec
    compiled: Any           # the eager jax.jit
    schedules: tuple = ()   # (group index, schedule) of the groups with a non-empty lr schedule
    guard: Any = None       # DonationGuard of the parameter values it donates
    carried: tuple = ()     # (name, State, treedef) of the other States the step carries (_step_states)
    written: tuple = ()     # the States written back from the step's outputs: ``states`` and the count
    owned: tuple = ()       # the optimizer's own States stored from lists of leaves: the state, ``carried``
    owned_treedefs: tuple = ()
    released: int = 0       # how many States had given their value away when it last checked its own


@functools.lru_cache(maxsize=64)
def _shared_step(spec: _StepSpec) -> Callable:
    """The eager step compiled for ``spec``, shared by every optimizer with an equal spec."""
    return _compile_step(spec)


def _compile_step(spec: _StepSpec) -> Callable:
    def compiled(params, grads, opt_leaves, hypers, count, counters, extra, static_extra):
        # the optimizer state travels as a flat list of leaves: no dict keys to sort per call
        new_params, new_states, count, counters = spec.optimizer._pure_step(
            spec, params, grads, spec.opt_treedef.unflatten(opt_leaves), hypers, count, counters,
            {**extra, **dict(static_extra)})
        return new_params, jax.tree.leaves(new_states), count, counters

    return jax.jit(compiled, donate_argnums=(0, 2, 5), static_argnums=(7,))


class NothingRegisteredError(RuntimeError, ValueError):
    """A step before any State is registered (a ValueError too, as braintools raises one)."""


class Stepping:
    """The stepping part of :class:`stateopt.OptaxOptimizer`: ``update``, ``step`` and the compiled step."""

    # -- the step -----------------------------------------------------------------------
    def update(self, grads: Any, **extra_args: Any) -> None:
        """Apply one step with ``grads`` (keyed as registered); same as :meth:`step`."""
        self.step(grads, **extra_args)

    def step(self, grads: Any = None, closure: Callable | None = None, **extra_args: Any) -> Any:
        """Apply one optimization step; return the closure's loss, if any.

        Parameters
        ----------
        grads : dict
            Gradients keyed as the States were registered (what
            ``brainstate.transform.grad(loss, grad_states=params)`` returns). A
            callable given here is taken as ``closure`` (torch's ``step(closure)``).
        closure : callable, optional
            Re-evaluates the model and returns the loss, as in torch; it may instead
            return ``(grads, loss)`` (``brainstate.transform.grad(...,
            return_value=True)``), which supplies ``grads``.
        **extra_args
            Passed to the algorithm's update (for example L-BFGS's ``value``).

        Raises
        ------
        KeyError, ValueError, TypeError
            Missing or unknown keys, wrong shapes or dtypes, naming the key; States
            or a ``(grads, loss)`` pair passed as grads. Nothing changes: not the
            params, moments, step count or learning rates.
        brainstate.TraceContextError
            Called under a raw JAX transform (``jax.jit``, ``jax.vmap``,
            ``jax.grad``, ``jax.lax.scan``, ...), which cannot carry State updates;
            use ``brainstate.transform.jit`` (or ``stateopt.donating_jit``) and
            brainstate's transforms instead.
        """
        grads, closure = self._closure_first(grads, closure)
        loss = None
        if closure is not None:
            result = closure()
            if isinstance(result, tuple) and len(result) == 2:
                closure_grads, loss = result
                grads = closure_grads if grads is None else grads
            else:
                loss = result
        if grads is None:
            raise ValueError('step needs grads, or a closure returning (grads, loss)')
        plan = self._get_plan()
        if at_top_level():      # nothing is tracing: the eager step (the cheapest test first)
            self._eager_step(plan, grads, extra_args)
        elif is_traced(self.step_count.value):
            self._traced_step(plan, grads, extra_args)
        else:
            if inside_jax_transform(grads, extra_args):
                raise brainstate.TraceContextError(
                    f'{type(self).__name__}.update was called inside a raw JAX transform (jax.jit, '
                    f'jax.vmap, jax.grad, jax.lax.scan, ...), which cannot carry State updates out; '
                    f'nothing was changed. Use brainstate.transform.jit (or stateopt.donating_jit) and '
                    f"brainstate's own transforms (brainstate.transform.vmap, grad, for_loop, scan)")
            self._eager_step(plan, grads, extra_args)
        return loss

    @staticmethod
    def _closure_first(grads: Any, closure: Callable | None) -> tuple[Any, Callable | None]:
        """``(grads, closure)`` with torch's ``step(closure)`` read as a closure."""
        if callable(grads) and closure is None:
            return None, grads
        return grads, closure

    def _get_plan(self) -> Plan:
        plan = self._plan
        if plan is not None:
            if plan.released != _donation.released:   # some State gave its value away since: one of ours?
                _refuse_packed_since(self._registry)
                plan.released = _donation.released
            return plan
        if not len(self._registry):
            raise NothingRegisteredError('no States are registered; call register_trainable_weights first')
        registry = self._registry
        _refuse_packed_since(registry)
        spec = _StepSpec(
            optimizer=type(self),
            paths=registry.paths,
            names=registry.names,
            aliases=tuple(registry.aliases.items()),
            signatures=tuple(self._signatures[i] for i in range(len(registry))),
            groups=tuple((tuple(g._positions), tuple(sorted(g._static.items())), g._lr_schedule)
                         for g in self._groups),
            any_clip_norm=any('grad_clip_norm' in _RAW(g._hyper) for g in self._groups),
            opt_treedef=jax.tree.structure(_RAW(self.opt_state)),
            mixed_keys=_mixed_keys(registry.paths + tuple(path for path, _ in registry.aliases.items())),
            loop=self._loop,
            state_dtype=self._settings.get('state_dtype'),
            layout=vars(self).get('_layout'),
        )
        try:
            compiled = _shared_step(spec)
        except TypeError:   # a static hyper-parameter that cannot be hashed: compile for this optimizer
            compiled = _compile_step(spec)
        schedules = tuple((index, group._lr_schedule) for index, group in enumerate(self._groups)
                          if group._lr_schedule is not None and group._positions)
        carried = tuple((name, state, jax.tree.structure(_RAW(state)))
                        for name, state in self._step_states().items())
        self._plan = Plan(states=registry.states, spec=spec, compiled=compiled, schedules=schedules,
                          released=_donation.released,
                          carried=carried, written=(*registry.states, self.step_count),
                          owned=(self.opt_state, *(state for _, state, _ in carried)),
                          owned_treedefs=(spec.opt_treedef, *(treedef for _, _, treedef in carried)))
        return self._plan

    @property
    def _signatures(self) -> dict[int, tuple]:
        cache = vars(self).setdefault('_signature_cache', {})
        for i, state in enumerate(self._registry.states):
            if i not in cache:
                cache[i] = _signature(_RAW(state))
        return cache

    @classmethod
    def _pure_step(cls, spec: _StepSpec, params, grads, opt_states, hypers, count, counters, extra):
        """The whole update as a pure function of arrays (traced once per structure).

        ``counters`` holds the optimizer's other States the step carries: the loop
        layer's (:mod:`stateopt._loop`) and the master weights (:mod:`stateopt._precision`);
        returns ``(params, optimizer states, count, counters)``.

        Every matrix and dot product in it (L-BFGS's curvature pairs, Muon's Newton-Schulz
        iteration, norms computed as dots) runs at full float32 precision, whatever jax's
        default matmul precision is (on a GPU, TF32 or bfloat16 passes by default).
        """
        with jax.default_matmul_precision('highest'):
            return cls._step_body(spec, params, grads, opt_states, hypers, count, counters, extra)

    @classmethod
    def _step_body(cls, spec: _StepSpec, params, grads, opt_states, hypers, count, counters, extra):
        """:meth:`_pure_step` at full matmul precision."""
        _check_params(spec, params)
        grad_values = list(grads) if spec.mixed_keys else _select_grads(spec, grads)
        masters = counters.get('master_params')
        stored = params
        if masters is not None:     # the step works on the masters, in their dtype
            params = tuple(map(working_value, params, masters))
            grad_values = list(map(working_grad, grad_values, masters))

        def step(params: tuple, opt_states: tuple, count: Any, grad_values: list) -> tuple:
            norm = global_norm(grad_values) if spec.any_clip_norm else None
            new_params = list(params)
            new_states = []
            for (positions, static, schedule), state, hyper in zip(spec.groups, opt_states, hypers):
                if not positions:
                    new_states.append(state)
                    continue
                hp = {**dict(static), **hyper}
                if schedule is not None:
                    hp['lr'] = jnp.asarray(schedule(count), jnp.float32)
                group_params = {spec.names[i]: params[i] for i in positions}
                group_grads = {spec.names[i]: grad_values[i] for i in positions}
                stored_state = state
                if spec.state_dtype is not None:     # computed wider, stored narrow
                    state = jax.tree.map(lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32))
                                         if x.dtype == spec.state_dtype else x, state)
                updated, state = chain_update(
                    cls._algorithm(hp), group_grads, state, group_params,
                    norm=norm, extra_args=extra, **cls._chain_options(hp))
                state = cast_like(state, stored_state)
                for i in positions:
                    new_params[i] = updated[spec.names[i]]
                new_states.append(state)
            return tuple(new_params), tuple(new_states), optax.safe_increment(count)

        if spec.loop.active:
            new_params, new_states, count, counters = run_loop(
                spec.loop, step, tuple(params), grad_values, tuple(opt_states), count, counters)
        else:
            new_params, new_states, count = step(params, opt_states, count, grad_values)
        if masters is not None:
            rounded = tuple(map(rounded_value, new_params, stored, masters))
            new_params = tuple(value for value, _ in rounded)
            counters = {**counters, 'master_params': tuple(master for _, master in rounded)}
        if spec.layout is not None:     # on a mesh: everything stays where it is (_placement.py)
            return spec.layout.kept(new_params, new_states, count, counters)
        return new_params, new_states, count, counters

    @classmethod
    def _chain_options(cls, hp: Mapping[str, Any]) -> dict:
        """The shared chain's arguments for a group with hyper-parameters ``hp``."""
        return dict(
            lr=hp['lr'],
            weight_decay=hp.get('weight_decay', 0.0),
            decay=(None if 'weight_decay' not in hp else
                   'decoupled' if hp.get('decoupled_weight_decay') else cls._decay),
            maximize=hp.get('maximize', False),
            grad_clip_norm=hp.get('grad_clip_norm'),
            grad_clip_value=hp.get('grad_clip_value'),
            scale_by_lr=not cls._lr_in_algorithm,
            decay_mask=hp.get('weight_decay_mask'),
        )

    def _traced_step(self, plan: Plan, grads: Any, extra: dict) -> None:
        """Inside a brainstate transform: trace the update inline through State reads/writes."""
        params = tuple(state.value for state in plan.states)
        hypers = tuple(group._hyper.value for group in self._groups)
        if plan.spec.mixed_keys:
            grads = _select_grads(plan.spec, grads)
        counters = {name: state.value for name, state, _ in plan.carried}
        new_params, new_states, count, counters = self._pure_step(
            plan.spec, params, grads, self.opt_state.value, hypers, self.step_count.value, counters, extra)
        for state, value in zip(plan.states, new_params):
            state.value = value
        self.opt_state.value = new_states
        self.step_count.value = count
        for name, state, _ in plan.carried:
            state.value = counters[name]

    def _eager_step(self, plan: Plan, grads: Any, extra: dict) -> None:
        """Outside any trace: one call of the cached jit, reusing the buffers it replaces."""
        if plan.schedules:
            self._check_scheduled_lrs(plan)
        params = list(map(_RAW, plan.states))
        plan.guard = DonationGuard.protected(plan.guard, plan.states, params)
        opt_leaves = owned_leaves(self.opt_state)
        hypers = tuple(_RAW(group._hyper) for group in self._groups)
        arrays, static = _split_extra(extra) if extra else ({}, ())
        if plan.spec.mixed_keys:  # JAX cannot sort such a dict: pass the gradients in registration order
            grads = _select_grads(plan.spec, grads)
        counters = ({name: treedef.unflatten(owned_leaves(state)) for name, state, treedef in plan.carried}
                    if plan.carried else {})
        try:
            new_params, new_leaves, count, counters = plan.compiled(
                tuple(params), grads, opt_leaves, hypers, _RAW(self.step_count), counters, arrays, static)
        except TypeError:   # not arrays: say what grads should be (nothing was donated)
            _select_grads(plan.spec, grads)
            raise
        del params, opt_leaves
        write_back_all(plan.written, (*new_params, count), plan.owned, plan.owned_treedefs,
                       (new_leaves, *(jax.tree.leaves(counters[name]) for name, _, _ in plan.carried)))

    def _check_scheduled_lrs(self, plan: Plan) -> None:
        """Refuse, before anything changes, a schedule that gives a negative or NaN lr now."""
        count = _RAW(self.step_count)
        for index, schedule in plan.schedules:
            lr = to_python(jnp.asarray(schedule(count), jnp.float32))
            if not lr >= 0:
                raise ValueError(
                    f'the lr schedule of param group {index} gives lr={lr} at step {int(count)}; a '
                    f'learning rate must be >= 0 (a negative one climbs the loss). Nothing was changed: '
                    f'fix the schedule (for example the end value of optax.linear_schedule)')


# -- checking what a step is given ----------------------------------------------------------

def _refuse_packed_since(registry: Any) -> None:
    """Refuse to step a State that a :class:`stateopt.PackedParams` took over after it was registered:
    its value now lives in the buffer, where the step would not write it."""
    for path, state in registry:
        if stored_elsewhere(state):
            raise TypeError(
                f'the State registered at key {shown_key(path)} was packed by a stateopt.PackedParams '
                f'after it was registered: its value now lives in the PackedParams\' buffer. Register the '
                f'PackedParams with an optimizer instead (its state dict loads this one\'s). Nothing was '
                f'changed')

def _split_extra(extra: dict) -> tuple[dict, tuple]:
    """A step's extra arguments: the arrays (traced) and the rest (static, hashable items)."""
    arrays = {k: v for k, v in extra.items() if _is_array_like(v)}
    return arrays, tuple(sorted((k, v) for k, v in extra.items() if k not in arrays))


def _is_array_like(value: Any) -> bool:
    return isinstance(value, (int, float, complex, np.ndarray, np.generic, jax.Array)) \
        and not isinstance(value, bool)


def _check_params(spec: _StepSpec, params: tuple) -> None:
    """Each parameter must still have the structure, shapes and dtypes it was registered with."""
    for name, value, (treedef, shapes) in zip(spec.names, params, spec.signatures):
        leaves, now = jax.tree.flatten(value)
        got = tuple((np.shape(x), jnp.result_type(x)) for x in leaves)
        if now != treedef or got != shapes:
            raise ValueError(f'the parameter {name!r} changed from {_shown_signature(treedef, shapes)} '
                             f'to {_shown_signature(now, got)} since it was registered; build a new '
                             f'optimizer for a changed model')


def _select_grads(spec: _StepSpec, grads: Any) -> list:
    """The gradient of each registered State, checked against the parameter."""
    skeleton: dict = {}
    entries = [*((path, position) for position, path in enumerate(spec.paths)),
               *((path, _Alias(position)) for path, position in spec.aliases)]
    for path, entry in entries:
        node = skeleton
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = entry
    selected: list = [None] * len(spec.paths)
    _check_grads_root(grads)

    def walk(node: Any, expected: dict, where: tuple) -> None:
        children = _children(node)
        if children is None:
            raise ValueError(f'grads{_where(where)} must be a dict keyed like the registered '
                             f'States, got {_kind(node)}')
        missing = [shown_key(where + (k,)) for k, sub in expected.items()
                   if k not in children and not isinstance(sub, _Alias)]
        if missing:
            raise ReadableKeyError(f'grads has no gradient for {", ".join(missing)}; pass a gradient for '
                           f'every registered State, keyed as it was registered')
        unknown = [shown_key(where + (k,)) for k in children if k not in expected]
        if unknown:
            raise ReadableKeyError(f'grads has the keys {", ".join(unknown)}, which are not registered '
                           f'States; register them or leave them out')
        for key, sub in expected.items():
            if isinstance(sub, dict):
                walk(children[key], sub, where + (key,))
            elif isinstance(sub, _Alias):    # a tied weight's other key: its gradient counts once
                if key in children:
                    _checked_grad(spec, sub.position, children[key], where + (key,))
            else:
                selected[sub] = _checked_grad(spec, sub, children[key], where + (key,))

    walk(grads, skeleton, ())
    return selected


def _mixed_keys(paths: tuple) -> bool:
    """Whether keys of different types sit at one level of ``paths`` (JAX cannot order such a dict)."""
    types: dict = {}
    for path in paths:
        for cut in range(len(path)):
            if types.setdefault(path[:cut], type(path[cut])) is not type(path[cut]):
                return True
    return False


@dataclass(frozen=True)
class _Alias:
    """A further key of the registered State at ``position``."""

    position: int


def _check_grads_root(grads: Any) -> None:
    """Recognise the usual slips: the ``(grads, loss)`` pair, or the States themselves."""
    if isinstance(grads, tuple) and len(grads) == 2 and isinstance(grads[0], Mapping):
        raise TypeError('grads is a (grads, loss) pair, as brainstate.transform.grad(..., '
                        'return_value=True) returns; unpack it first: grads, loss = grad_fn(...); '
                        'opt.update(grads)')
    for path, leaf in leaves_with_keys(grads):
        if isinstance(leaf, brainstate.State):
            raise TypeError(f'grads{_where(path)} is {_kind(leaf)}')


def _kind(node: Any) -> str:
    if isinstance(node, brainstate.State):
        return (f'a {type(node).__name__}, not a gradient: pass the gradients, as '
                f'brainstate.transform.grad(loss_fn, grad_states=params)() returns them, not the States')
    return type(node).__name__


def _children(node: Any) -> dict | None:
    if isinstance(node, Mapping):
        return dict(node.items())
    if isinstance(node, (list, tuple)):
        return dict(enumerate(node))
    return None


def _where(path: tuple) -> str:
    return ''.join(f'[{k!r}]' for k in path)


def _checked_grad(spec: _StepSpec, position: int, grad: Any, where: tuple) -> Any:
    """``grad`` (found at ``grads[where]``), checked against the parameter at ``position``."""
    name = spec.names[position]
    treedef, shapes = spec.signatures[position]
    flat, got_def = jax.tree_util.tree_flatten_with_path(grad)
    if got_def != treedef:
        if isinstance(grad, brainstate.State):
            raise TypeError(f'grads{_where(where)} is {_kind(grad)}')
        raise ValueError(f'the gradient for {name!r} is {_shown(grad)}, but the parameter is '
                         f'{_shown_signature(treedef, shapes)}')
    for (path, leaf), (shape, dtype) in zip(flat, shapes):
        leaf_name = repr(name) + (f' at {jax.tree_util.keystr(path)}' if path else '')
        if not hasattr(leaf, 'shape'):
            kind = _kind(leaf) if isinstance(leaf, brainstate.State) else \
                f'a {type(leaf).__name__}, not an array'
            raise TypeError(f'the gradient for {leaf_name} is {kind}')
        if tuple(leaf.shape) != tuple(shape):
            raise ValueError(f'the gradient for {leaf_name} has shape {tuple(leaf.shape)}, but the '
                             f'parameter has shape {tuple(shape)}')
        if jnp.result_type(leaf) != dtype:
            raise ValueError(f'the gradient for {leaf_name} has dtype {jnp.result_type(leaf)}, but the '
                             f'parameter has dtype {dtype}')
    return grad


class _Shape:
    """An array's dtype and shape as a repr: ``float32[3, 4]``."""

    def __init__(self, shape: tuple, dtype: Any):
        self.text = f'{np.dtype(dtype).name}[{", ".join(map(str, shape))}]'

    def __repr__(self) -> str:
        return self.text


def _shown_signature(treedef: Any, shapes: tuple) -> str:
    """A value's structure with its arrays as ``dtype[shape]``: ``{'x': float32[2]}``."""
    return repr(treedef.unflatten([_Shape(shape, dtype) for shape, dtype in shapes]))


def _shown(value: Any) -> str:
    leaves, treedef = jax.tree.flatten(value)
    if all(hasattr(leaf, 'shape') for leaf in leaves):
        return _shown_signature(treedef, tuple((np.shape(x), jnp.result_type(x)) for x in leaves))
    return repr(jax.tree.map(lambda x: _Shape(np.shape(x), jnp.result_type(x))
                             if hasattr(x, 'shape') else type(x).__name__, value))
