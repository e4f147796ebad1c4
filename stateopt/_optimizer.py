"""OptaxOptimizer: registration, param groups, the compiled step and state dicts."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _hyper
from ._chain import chain_update, global_norm
from ._donation import RAW as _RAW
from ._donation import DonationGuard, owned_leaves, store_leaves, write_back
from ._hyper import Hyper, is_traced
from ._state import OptimState, UniqueStateManager, _show, flatten_states, param_name, unflatten

__all__ = ['OptaxOptimizer', 'ParamGroup']

def _lr_check(name: str, value: Any) -> Any:
    if callable(value) and not hasattr(value, 'shape'):
        return value
    return _hyper.non_negative(name, value)


#: Hyper-parameters every optimizer has. Subclasses extend this table.
BASE_HYPERPARAMS: dict[str, Hyper] = {
    'lr': Hyper(_lr_check),
    'weight_decay': Hyper(_hyper.non_negative),
    'grad_clip_norm': Hyper(_hyper.optional_positive),
    'grad_clip_value': Hyper(_hyper.optional_positive),
}


def _as_dynamic(value: Any) -> Any:
    """A dynamic hyper-parameter as the compiled step receives it: float32 scalars."""
    if type(value) in (tuple, list):
        return tuple(jnp.asarray(v, jnp.float32) for v in value)
    return jnp.asarray(value, jnp.float32)


def _to_python(value: Any) -> Any:
    """Concrete scalars as Python numbers (traced values are returned as they are)."""
    if type(value) is tuple:
        return tuple(_to_python(v) for v in value)
    if is_traced(value) or not hasattr(value, 'shape'):
        return value
    value = np.asarray(value)
    if value.dtype == np.float32:  # the shortest decimal that is this float32: 0.01, not 0.0099999998
        return float(str(value))
    return value.item()


def _signature(value: Any) -> tuple:
    """Structure, shapes and dtypes of a parameter's value."""
    leaves, treedef = jax.tree.flatten(value)
    return treedef, tuple((np.shape(x), jnp.result_type(x)) for x in leaves)


class ParamGroup(MutableMapping):
    """One param group: its States and its hyper-parameters, as a dict.

    ``group['params']`` is a dict of the group's States under their registered keys.
    Every other key is a hyper-parameter of the optimizer. Reading ``group['lr']``
    gives the value the next step uses; assigning a number to a *dynamic*
    hyper-parameter (``lr``, ``weight_decay``, betas, momentum, ...) takes effect at
    the next step, inside or outside ``jit``, without recompiling. Static ones (flags,
    strings, sizes, transforms) are fixed when the group is created.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> opt = stateopt.SGD(lr=0.1).register_trainable_weights(
    ...     {'w': brainstate.ParamState(jnp.ones(2))})
    >>> group = opt.param_groups[0]
    >>> group['lr'] = 0.05
    >>> round(float(group['lr']), 6)
    0.05
    """

    __module__ = 'stateopt'

    def __init__(self, optimizer: OptaxOptimizer, positions: list[int], hyperparams: dict,
                 explicit: bool):
        self._optimizer = optimizer
        self._positions = positions
        self._explicit = explicit
        specs = optimizer._hyperparams
        self._static: dict[str, Any] = {}
        dynamic: dict[str, Any] = {}
        self._lr_schedule: Callable | None = None
        for name, value in hyperparams.items():
            if name == 'lr' and callable(value) and not hasattr(value, 'shape'):
                self._lr_schedule = value
            elif specs[name].dynamic and value is not None:
                dynamic[name] = _as_dynamic(value)
            else:
                self._static[name] = value
        self._hyper = OptimState(dynamic)
        self.initial_lr = self._current_lr_number(hyperparams['lr'], 0)

    @staticmethod
    def _current_lr_number(lr: Any, count: int) -> float:
        return float(lr(count)) if callable(lr) else float(lr)

    # -- the mapping -------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key == 'params':
            registry = self._optimizer._registry
            return unflatten([registry.paths[i] for i in self._positions],
                             [registry.states[i] for i in self._positions])
        if key == 'lr' and self._lr_schedule is not None:
            return self._lr_schedule(self._optimizer.step_count.value)
        hyper = self._hyper.value
        if key in hyper:
            return hyper[key]
        if key in self._static:
            return self._static[key]
        raise KeyError(f'param groups have no key {key!r}; the keys are {", ".join(map(repr, self))}')

    def __setitem__(self, key: str, value: Any) -> None:
        optimizer = self._optimizer
        if key == 'params':
            raise KeyError("a group's params are set by add_param_group and "
                           "register_trainable_weights, not by assignment")
        if key not in optimizer._hyperparams:
            raise KeyError(f'{type(optimizer).__name__} has no hyper-parameter {key!r}; '
                           f'its hyper-parameters are {", ".join(map(repr, optimizer._hyperparams))}')
        value = optimizer._hyperparams[key].check(key, value)
        if key == 'lr' and callable(value) and not hasattr(value, 'shape'):
            if optimizer._scheduler is not None:
                raise ValueError('this optimizer\'s lr scheduler drives every group; a group cannot '
                                 'take its own lr schedule')
            self._lr_schedule = value
            optimizer._invalidate()
            return
        hyper = self._hyper.value
        if key == 'lr' and self._lr_schedule is not None:
            self._lr_schedule = None  # a number replaces the schedule: one compile
            optimizer._invalidate()
            self._hyper.value = {**hyper, 'lr': _as_dynamic(value)}
            return
        if key not in hyper or value is None:
            was = self._static.get(key, _to_python(hyper.get(key)))
            raise ValueError(
                f'{key!r} is fixed when the group is created (it is {was!r} in group '
                f'{self.index}); pass {key}= to the constructor or to add_param_group instead'
            )
        if not is_traced(value):
            optimizer._check({**self.hyperparams(), key: value})
            optimizer._check_assignment(self, key, value)
        self._hyper.value = {**hyper, key: _as_dynamic(value)}

    def _assign(self, key: str, value: Any) -> None:
        """Write a dynamic hyper-parameter without checks: the schedulers' path, jit-safe."""
        self._hyper.value = {**self._hyper.value, key: _as_dynamic(value)}

    def __delitem__(self, key: str) -> None:
        raise KeyError('param group keys cannot be deleted')

    def __iter__(self) -> Iterator[str]:
        yield 'params'
        yield from self._optimizer._hyperparams

    def __len__(self) -> int:
        return 1 + len(self._optimizer._hyperparams)

    # -- helpers -----------------------------------------------------------------
    @property
    def index(self) -> int:
        """This group's position in ``optimizer.param_groups``."""
        return self._optimizer._groups.index(self)

    @property
    def names(self) -> list[str]:
        """The parameter names (see :func:`stateopt.param_name`) of this group."""
        names = self._optimizer._registry.names
        return [names[i] for i in self._positions]

    def hyperparams(self) -> dict:
        """Every hyper-parameter value, dynamic ones as Python numbers when concrete."""
        return {key: _to_python(self[key]) for key in self._optimizer._hyperparams}

    def __repr__(self) -> str:
        shown = ', '.join(f'{key}={value!r}' for key, value in self.hyperparams().items()
                          if not callable(value))
        return f'ParamGroup({len(self._positions)} params, {shown})'


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
    signatures: tuple       # (treedef, ((shape, dtype), ...)) of each value at registration
    groups: tuple           # (positions, static hyper-parameter items, lr schedule) per group
    any_clip_norm: bool
    opt_treedef: Any        # structure of the optimizer state, passed as a list of leaves


@dataclass(eq=False)
class _Plan:
    """An optimizer's compiled step and the States it updates; rebuilt when registration changes."""

    states: tuple           # every registered State, in registration order
    spec: _StepSpec
    compiled: Any           # the eager jax.jit
    guard: Any = None       # DonationGuard of the parameter values it donates


@functools.lru_cache(maxsize=64)
def _shared_step(spec: _StepSpec) -> Callable:
    """The eager step compiled for ``spec``, shared by every optimizer with an equal spec."""
    return _compile_step(spec)


def _compile_step(spec: _StepSpec) -> Callable:
    def compiled(params, grads, opt_leaves, hypers, count, extra, static_extra):
        # the optimizer state travels as a flat list of leaves: no dict keys to sort per call
        new_params, new_states, count = spec.optimizer._pure_step(
            spec, params, grads, spec.opt_treedef.unflatten(opt_leaves), hypers, count,
            {**extra, **dict(static_extra)})
        return new_params, jax.tree.leaves(new_states), count

    return jax.jit(compiled, donate_argnums=(0, 2), static_argnums=(6,))


class OptaxOptimizer:
    """A stateful optimizer over brainstate States, with param groups.

    The shared chain (see :func:`stateopt._chain.chain_update`) runs around the
    optimizer's algorithm for every param group: global-norm clipping across all
    groups, element-wise clipping, ``maximize``, coupled or decoupled weight decay,
    and the learning rate.

    Parameters
    ----------
    tx : optax.GradientTransformation, optional
        The update *direction*, without a learning rate: for example
        ``optax.scale_by_adam()`` (the default) or ``optax.scale_by_lion()``. The
        optimizer applies ``lr``, weight decay and clipping around it, so ``lr`` and
        schedulers act on it. A complete optax optimizer (``optax.adam(1e-3)``, whose
        updates already point downhill) is refused.
    lr : float or callable
        The learning rate: a number, or a schedule ``count -> lr`` (an optax
        schedule) evaluated at :attr:`step_count`.
    weight_decay : float
        L2 penalty added to the gradient (``g + weight_decay * p``).
    grad_clip_norm : float, optional
        Clip gradients by their global norm, over all param groups together.
    grad_clip_value : float, optional
        Clip each gradient element to ``[-grad_clip_value, grad_clip_value]``.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, optax, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0, -2.0]))
    >>> opt = stateopt.OptaxOptimizer(tx=optax.identity(), lr=0.5)
    >>> opt = opt.register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([1.0, 1.0])})
    >>> w.value.tolist()
    [0.5, -2.5]
    """

    __module__ = 'stateopt'

    #: name -> Hyper for every constructor hyper-parameter (see stateopt._hyper).
    _hyperparams: dict[str, Hyper] = {**BASE_HYPERPARAMS, 'tx': Hyper(lambda name, v: v, dynamic=False)}
    #: how weight_decay enters the chain: 'coupled' (L2 on the gradient), 'decoupled', or None
    #: (the algorithm applies it inside its direction, as LAMB's trust ratio does).
    #: A static ``decoupled_weight_decay=True`` hyper-parameter makes a group decoupled.
    _decay = 'coupled'
    #: True when the algorithm's direction already includes the learning rate.
    _lr_in_algorithm = False

    def __init__(
        self,
        tx: optax.GradientTransformation | None = None,
        lr: float | Callable = 1e-3,
        weight_decay: float = 0.0,
        grad_clip_norm: float | None = None,
        grad_clip_value: float | None = None,
    ):
        if tx is not None:
            _check_direction(tx)
        self._setup(tx=tx, lr=lr, weight_decay=weight_decay, grad_clip_norm=grad_clip_norm,
                    grad_clip_value=grad_clip_value)

    @classmethod
    def _algorithm(cls, hp: Mapping[str, Any]) -> optax.GradientTransformation:
        """The update direction for a group with hyper-parameters ``hp``.

        ``hp`` holds every hyper-parameter, ``hp['lr']`` being the learning rate of
        this step. It is called with concrete values when a group's state is created,
        and with traced values inside the compiled step, so structural choices belong
        in the transform's ``init``. Subclasses override it.
        """
        return optax.scale_by_adam() if hp['tx'] is None else hp['tx']

    @classmethod
    def _check(cls, hp: dict) -> None:
        """Cross-parameter checks of one group's hyper-parameters (override)."""

    def _check_assignment(self, group: ParamGroup, name: str, value: Any) -> None:
        """Refuse an assignment the group's state cannot honour (override)."""

    # -- construction --------------------------------------------------------------
    def _setup(self, **defaults: Any) -> None:
        lr = defaults['lr']
        self._scheduler = lr if _is_scheduler(lr) else None
        if self._scheduler is not None:
            defaults['lr'] = float(self._scheduler.base_lr)
        self.defaults = self._validated(defaults)
        self._registry = UniqueStateManager()
        self.step_count = OptimState(jnp.zeros((), jnp.int32))
        self._groups: list[ParamGroup] = [ParamGroup(self, [], self.defaults, explicit=False)]
        self.opt_state = OptimState((self._init_group_state(self._groups[0], {}),))
        self._plan: _Plan | None = None
        if self._scheduler is not None:
            self._scheduler.attach_optimizer(self)

    @classmethod
    def _validated(cls, hyperparams: dict, base: dict | None = None) -> dict:
        """``base`` updated with ``hyperparams``, each checked by its declaration."""
        specs = cls._hyperparams
        unknown = [name for name in hyperparams if name not in specs]
        if unknown:
            raise TypeError(f'{cls.__name__} has no hyper-parameter '
                            f'{", ".join(map(repr, unknown))}; its hyper-parameters are '
                            f'{", ".join(map(repr, specs))}')
        merged = dict(base or {})
        for name, value in hyperparams.items():
            merged[name] = specs[name].check(name, value)
        if not is_traced(list(merged.values())):
            cls._check(merged)
        return merged

    # -- registration ---------------------------------------------------------------
    def register_trainable_weights(self, states: Any) -> OptaxOptimizer:
        """Register the States to train, in the default param group; return ``self``.

        ``states`` is a dict of States (``model.states(brainstate.ParamState)``).
        States are identified by identity: one already registered is skipped, and
        the moments and step counts of registered States are kept.

        Raises
        ------
        KeyError
            Two different States under one key; nothing is registered.
        TypeError
            A leaf is not a State, or a parameter is not a floating-point array.
        """
        new = self._registry.plan_merge(states)
        _check_values(new)
        self._commit(new, moved=[], new_group=None)
        return self

    def add_param_group(self, states: Any, **hyperparams: Any) -> ParamGroup:
        """Give ``states`` their own param group with ``hyperparams`` overridden.

        Any constructor hyper-parameter can be overridden. States already registered
        are found by identity (so ``model.head.states(...)``, keyed relative to
        ``head``, works) and move here with their moments; new States are registered
        under the given keys.

        Returns
        -------
        ParamGroup
            The new group (also ``param_groups[-1]``).

        Raises
        ------
        ValueError
            A State already in another explicit group, no States, or an invalid
            hyper-parameter. Nothing changes.
        """
        if self._scheduler is not None and callable(hyperparams.get('lr')):
            raise ValueError('a group cannot have its own lr schedule or scheduler; the optimizer\'s '
                             'scheduler drives every group')
        hp = self._validated(hyperparams, base=self.defaults)
        if self._scheduler is not None:
            self._scheduler._check_new_group(hp)
        pairs = flatten_states(states)
        if not pairs:
            raise ValueError('add_param_group got no States')
        moved, fresh, seen = [], [], set()
        for path, state in pairs:
            if id(state) in seen:
                continue
            seen.add(id(state))
            if state in self._registry:
                position = self._registry.position(state)
                owner = self._group_of(position)
                if owner._explicit:
                    raise ValueError(
                        f'the State at key {_show(path)} (registered as '
                        f'{param_name(self._registry.path_of(state))!r}) is already in param '
                        f'group {owner.index}; a State can be in one group only'
                    )
                moved.append(position)
            else:
                fresh.append((path, state))
        new = self._registry.plan_merge(dict(_unflat_pairs(fresh))) if fresh else []
        _check_values(new)
        group = ParamGroup(self, [], hp, explicit=True)
        self._commit(new, moved=moved, new_group=group)
        if self._scheduler is not None:
            self._scheduler._group_added(group)
        return group

    def _group_of(self, position: int) -> ParamGroup:
        for group in self._groups:
            if position in group._positions:
                return group
        raise LookupError(position)

    def _commit(self, new: list, moved: list[int], new_group: ParamGroup | None) -> None:
        """Register ``new``, move ``moved`` into ``new_group``, and rebuild the states."""
        old_states = dict(zip(map(id, self._groups), _RAW(self.opt_state)))
        old_owner = {pos: id(g) for g in self._groups for pos in g._positions}
        start = len(self._registry)
        for path, state in new:
            self._registry._add(path, state)
        fresh = list(range(start, len(self._registry)))
        default = self._groups[0]
        groups = list(self._groups)
        if new_group is None:
            default_positions = default._positions + fresh
            changed = {id(default): default_positions}
        else:
            default_positions = [p for p in default._positions if p not in moved]
            changed = {id(default): default_positions, id(new_group): moved + fresh}
            groups.append(new_group)
        states = []
        for group in groups:
            positions = changed.get(id(group), group._positions)
            if id(group) in changed or id(group) not in old_states:
                source = id(group) if id(group) in old_states else old_owner.get((moved or [None])[0])
                state = self._rebuild_group_state(group, positions, old_states, old_owner, source)
            else:
                state = old_states[id(group)]
            states.append(state)
        for group in groups:
            if id(group) in changed:
                group._positions = changed[id(group)]
        self._groups = groups
        self.opt_state.value = tuple(states)
        self._invalidate()

    def _init_group_state(self, group: ParamGroup, values: dict) -> Any:
        hp = {name: _to_python(group[name]) if name != 'lr' else group.initial_lr
              for name in self._hyperparams}
        return self._algorithm(hp).init(values)

    def _rebuild_group_state(self, group, positions, old_states, old_owner, source) -> Any:
        """The group's new state; every slot a parameter had elsewhere keeps its value."""
        names = self._registry.names
        values = {names[i]: _RAW(self._registry.states[i]) for i in positions}
        state = self._init_group_state(group, values)
        known = {}
        for group_id, old in old_states.items():
            owned = {names[p] for p, g in old_owner.items() if g == group_id}
            for path, leaf in jax.tree_util.tree_flatten_with_path(old)[0]:
                owner, slot = _split_slot(path, owned)
                if owner is not None:
                    known[(owner, slot)] = leaf
                elif group_id == source:
                    known[(None, slot)] = leaf
        group_names = set(values)

        def carry(path, leaf):
            owner, slot = _split_slot(path, group_names)
            old = known.get((owner, slot))
            if old is not None and np.shape(old) == np.shape(leaf) and \
                    jnp.result_type(old) == jnp.result_type(leaf):
                return old
            return leaf

        return jax.tree_util.tree_map_with_path(carry, state)

    def _invalidate(self) -> None:
        self._plan = None

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
            ``brainstate.transform.grad(loss, grad_states=params)`` returns).
        closure : callable, optional
            Re-evaluates the model and returns the loss, as in torch; it may instead
            return ``(grads, loss)`` (``brainstate.transform.grad(...,
            return_value=True)``), which supplies ``grads``.
        **extra_args
            Passed to the algorithm's update (for example L-BFGS's ``value``).

        Raises
        ------
        KeyError, ValueError
            Missing or unknown keys, wrong shapes or dtypes, naming the key. Nothing
            changes: not the params, moments, step count or learning rates.
        """
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
        if is_traced(self.step_count.value):
            self._traced_step(plan, grads, extra_args)
        else:
            self._eager_step(plan, grads, extra_args)
        return loss

    def _get_plan(self) -> _Plan:
        if self._plan is not None:
            return self._plan
        if not len(self._registry):
            raise RuntimeError('no States are registered; call register_trainable_weights first')
        registry = self._registry
        spec = _StepSpec(
            optimizer=type(self),
            paths=registry.paths,
            names=registry.names,
            signatures=tuple(self._signatures[i] for i in range(len(registry))),
            groups=tuple((tuple(g._positions), tuple(sorted(g._static.items())), g._lr_schedule)
                         for g in self._groups),
            any_clip_norm=any('grad_clip_norm' in _RAW(g._hyper) for g in self._groups),
            opt_treedef=jax.tree.structure(_RAW(self.opt_state)),
        )
        try:
            compiled = _shared_step(spec)
        except TypeError:   # a static hyper-parameter that cannot be hashed: compile for this optimizer
            compiled = _compile_step(spec)
        self._plan = _Plan(states=registry.states, spec=spec, compiled=compiled)
        return self._plan

    @property
    def _signatures(self) -> dict[int, tuple]:
        cache = vars(self).setdefault('_signature_cache', {})
        for i, state in enumerate(self._registry.states):
            if i not in cache:
                cache[i] = _signature(_RAW(state))
        return cache

    @classmethod
    def _pure_step(cls, spec: _StepSpec, params, grads, opt_states, hypers, count, extra):
        """The whole update as a pure function of arrays (traced once per structure)."""
        _check_params(spec, params)
        grad_values = _select_grads(spec, grads)
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
            updated, state = chain_update(
                cls._algorithm(hp), group_grads, state, group_params,
                norm=norm, extra_args=extra, **cls._chain_options(hp))
            for i in positions:
                new_params[i] = updated[spec.names[i]]
            new_states.append(state)
        return tuple(new_params), tuple(new_states), count + 1

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
        )

    def _traced_step(self, plan: _Plan, grads: Any, extra: dict) -> None:
        """Inside a brainstate transform: trace the update inline through State reads/writes."""
        params = tuple(state.value for state in plan.states)
        hypers = tuple(group._hyper.value for group in self._groups)
        new_params, new_states, count = self._pure_step(
            plan.spec, params, grads, self.opt_state.value, hypers, self.step_count.value, extra)
        for state, value in zip(plan.states, new_params):
            state.value = value
        self.opt_state.value = new_states
        self.step_count.value = count

    def _eager_step(self, plan: _Plan, grads: Any, extra: dict) -> None:
        """Outside any trace: one call of the cached jit, reusing the buffers it replaces."""
        params = list(map(_RAW, plan.states))
        plan.guard = DonationGuard.protected(plan.guard, plan.states, params)
        opt_leaves = owned_leaves(self.opt_state)
        hypers = tuple(_RAW(group._hyper) for group in self._groups)
        arrays = {k: v for k, v in extra.items() if _is_array_like(v)}
        static = tuple(sorted((k, v) for k, v in extra.items() if k not in arrays))
        new_params, new_leaves, count = plan.compiled(
            tuple(params), grads, opt_leaves, hypers, _RAW(self.step_count), arrays, static)
        del params, opt_leaves
        if isinstance(count, jax.core.Tracer):
            raise brainstate.TraceContextError(
                'optimizer.update was called inside jax.jit (or another raw JAX transform), '
                'which cannot carry State updates; use brainstate.transform.jit instead'
            )
        write_back(plan.states, new_params)
        store_leaves(self.opt_state, plan.spec.opt_treedef, new_leaves)
        write_back((self.step_count,), (count,))

    # -- learning rates ----------------------------------------------------------------
    @property
    def param_groups(self) -> list[ParamGroup]:
        """The param groups; ``param_groups[0]`` is the default group."""
        return list(self._groups)

    @property
    def lr(self) -> Any:
        """The ``lr`` the optimizer was built with: a number, a schedule or a scheduler."""
        return self._scheduler if self._scheduler is not None else self.defaults['lr']

    @property
    def lr_scheduler(self) -> Any:
        """The attached scheduler, or ``None``."""
        return self._scheduler

    @property
    def base_lr(self) -> float:
        """The default group's initial learning rate."""
        return self._groups[0].initial_lr

    @property
    def current_lr(self) -> Any:
        """The default group's learning rate for the next step (settable)."""
        return self._groups[0]['lr']

    @current_lr.setter
    def current_lr(self, value: Any) -> None:
        self._groups[0]['lr'] = value

    def get_last_lr(self) -> list:
        """The learning rate of every group for the next step, as Python floats when concrete."""
        return [_to_python(group['lr']) for group in self._groups]

    # -- state dicts -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume, keyed by parameter names (never by position).

        Returns
        -------
        dict
            ``step_count``; ``param_groups`` (each with its parameter names and its
            hyper-parameters); ``state`` (``{param name: {slot: array}}``, the moments);
            ``group_state`` (per group, the slots no parameter owns, like step counts);
            and ``lr_scheduler`` (the attached scheduler's state, or ``None``).
        """
        names = self._registry.names
        groups, group_state, per_param = [], [], {}
        for group, state in zip(self._groups, self.opt_state.value):
            owned = {names[i] for i in group._positions}
            record = {'params': [names[i] for i in group._positions]}
            for key in self._hyperparams:
                if _in_state_dict(group, key):
                    record[key] = group[key]
            groups.append(record)
            slots = {}
            for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
                owner, slot = _split_slot(path, owned)
                if owner is None:
                    slots[slot] = leaf
                else:
                    per_param.setdefault(owner, {})[slot] = leaf
            group_state.append(slots)
        return {
            'step_count': self.step_count.value,
            'param_groups': groups,
            'state': per_param,
            'group_state': group_state,
            'lr_scheduler': None if self._scheduler is None else self._scheduler.state_dict(),
        }

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore :meth:`state_dict` output, after checking all of it.

        The groups must hold the same parameter names, static hyper-parameters must
        agree, and every array must have the shape and dtype of the one it replaces.
        On any mismatch a ``ValueError`` (or ``KeyError``) names the entry and
        nothing changes.
        """
        step_count, new_states, hyper_values, scheduler_state = self._checked_state_dict(state_dict)
        self.step_count.value = step_count
        self.opt_state.value = new_states
        for group, values in zip(self._groups, hyper_values):
            group._hyper.value = {**_RAW(group._hyper), **values}
        if self._scheduler is not None:
            self._scheduler.load_state_dict(scheduler_state)

    def check_state_dict(self, state_dict: Mapping) -> None:
        """Raise what :meth:`load_state_dict` would raise for ``state_dict``; change nothing."""
        self._checked_state_dict(state_dict)

    def _checked_state_dict(self, state_dict: Mapping) -> tuple:
        """``(step count, optimizer states, hyper-parameters per group, scheduler state)`` to load."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f'load_state_dict expects a dict, got {type(state_dict).__name__}')
        expected = {'step_count', 'param_groups', 'state', 'group_state', 'lr_scheduler'}
        missing = expected - set(state_dict)
        if missing:
            raise KeyError(f'the state dict has no {", ".join(sorted(missing))}')
        extra = set(state_dict) - expected
        if extra:
            raise KeyError(f'the state dict has unknown entries {", ".join(sorted(map(str, extra)))}')
        step_count = _checked_array('step_count', state_dict['step_count'], _RAW(self.step_count))
        saved_groups = state_dict['param_groups']
        if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(self._groups):
            count = len(saved_groups) if isinstance(saved_groups, (list, tuple)) else saved_groups
            raise ValueError(f'the state dict has {count} param groups; this optimizer has '
                             f'{len(self._groups)}')
        names = self._registry.names
        hyper_values = []
        for index, (group, saved) in enumerate(zip(self._groups, saved_groups)):
            hyper_values.append(self._checked_group(index, group, saved, names))
        saved_state = state_dict['state']
        saved_group_state = state_dict['group_state']
        if not isinstance(saved_group_state, (list, tuple)) or len(saved_group_state) != len(self._groups):
            raise ValueError('the state dict\'s group_state must have one entry per param group')
        if not isinstance(saved_state, Mapping):
            raise ValueError('the state dict\'s state must be a dict {param name: {slot: array}}')
        unknown = set(saved_state) - set(names)
        if unknown:
            raise KeyError(f'the state dict has state for unknown parameters '
                           f'{", ".join(map(repr, sorted(map(str, unknown))))}')
        new_states = []
        used = {name: set() for name in saved_state}
        for index, (group, current) in enumerate(zip(self._groups, _RAW(self.opt_state))):
            owned = {names[i] for i in group._positions}
            slots = saved_group_state[index]

            def restore(path, leaf, owned=owned, slots=slots, index=index):
                owner, slot = _split_slot(path, owned)
                if owner is None:
                    where = f'group_state[{index}][{slot!r}]'
                    if not isinstance(slots, Mapping) or slot not in slots:
                        raise KeyError(f'the state dict has no {where}')
                    return _checked_array(where, slots[slot], leaf)
                where = f'state[{owner!r}][{slot!r}]'
                entry = saved_state.get(owner)
                if not isinstance(entry, Mapping) or slot not in entry:
                    raise KeyError(f'the state dict has no {where}')
                used[owner].add(slot)
                return _checked_array(where, entry[slot], leaf)

            new_states.append(jax.tree_util.tree_map_with_path(restore, current))
        for owner, slots in saved_state.items():
            leftover = set(slots) - used[owner] if isinstance(slots, Mapping) else set()
            if leftover:
                raise KeyError(f'the state dict has unknown slots {sorted(leftover)} for {owner!r}')
        scheduler_state = state_dict['lr_scheduler']
        if (scheduler_state is None) != (self._scheduler is None):
            raise ValueError('the state dict and this optimizer disagree on having an lr scheduler')
        if self._scheduler is not None:
            self._scheduler._check_state_dict(scheduler_state)
        return step_count, tuple(new_states), hyper_values, scheduler_state

    def _checked_group(self, index: int, group: ParamGroup, saved: Any, names: tuple) -> dict:
        """The dynamic values of one saved group, after checking it against ``group``."""
        where = f'param_groups[{index}]'
        if not isinstance(saved, Mapping):
            raise ValueError(f'{where} must be a dict, got {type(saved).__name__}')
        saved_names = list(saved.get('params', []))
        if sorted(map(str, saved_names)) != sorted(group.names):
            raise ValueError(f'{where} holds parameters {sorted(map(str, saved_names))}, but group '
                             f'{index} of this optimizer holds {sorted(group.names)}')
        values = {}
        for key, spec in self._hyperparams.items():
            if not _in_state_dict(group, key):
                continue
            if key not in saved:
                raise KeyError(f'{where} has no {key!r}')
            current = group[key]
            if key in group._static:
                if _to_python(saved[key]) != current:
                    raise ValueError(f'{where}[{key!r}] is {saved[key]!r}, but this optimizer has '
                                     f'{current!r}; it is fixed when a group is created')
                continue
            value = saved[key]
            if isinstance(current, tuple):
                if not isinstance(value, (tuple, list)) or len(value) != len(current):
                    raise ValueError(f'{where}[{key!r}] must have {len(current)} entries, got {value!r}')
                value = tuple(_scalar(f'{where}[{key!r}]', v) for v in value)
            else:
                value = _scalar(f'{where}[{key!r}]', value)
            spec.check(f'{where}[{key!r}]', _to_python(value))
            values[key] = _as_dynamic(value)
        unknown = set(saved) - set(self._hyperparams) - {'params'}
        if unknown:
            raise KeyError(f'{where} has unknown keys {sorted(map(str, unknown))}')
        return values

    def __repr__(self) -> str:
        shown = ', '.join(f'{k}={_to_python(v)!r}' for k, v in self.defaults.items()
                          if k != 'tx' or v is not None)
        if self._scheduler is not None:
            shown = shown.replace(f"lr={self.defaults['lr']!r}", f'lr={type(self._scheduler).__name__}')
        return (f'{type(self).__name__}({shown}; {len(self._registry)} params in '
                f'{len(self._groups)} groups, step {int(_RAW(self.step_count))})')


# -- helpers ------------------------------------------------------------------------------

def _in_state_dict(group: ParamGroup, key: str) -> bool:
    """Whether state dicts carry the group's hyper-parameter ``key``.

    They carry data: numbers, flags, strings. A schedule given as ``lr``, ``tx``, and
    static values that are functions, transforms or optimizers (a Lookahead's base
    optimizer, Sophia's Hessian estimator) are fixed by the code that builds the optimizer.
    """
    if key == 'tx' or (key == 'lr' and group._lr_schedule is not None):
        return False
    return key not in group._static or all(
        isinstance(leaf, (bool, int, float, str)) for leaf in jax.tree.leaves(group._static[key]))


def _is_array_like(value: Any) -> bool:
    return isinstance(value, (int, float, complex, np.ndarray, np.generic, jax.Array)) \
        and not isinstance(value, bool)


def _is_scheduler(value: Any) -> bool:
    return hasattr(value, 'attach_optimizer') and hasattr(value, 'base_lr')


def _check_direction(tx: Any) -> None:
    """Refuse anything but a direction transform (a complete optimizer points downhill)."""
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f'tx must be an optax.GradientTransformation, got {type(tx).__name__}')
    probe = {'w': jnp.ones(3)}
    try:
        direction, _ = tx.update(probe, tx.init({'w': jnp.zeros(3)}), {'w': jnp.zeros(3)})
        downhill = float(jnp.vdot(direction['w'], probe['w'])) < 0
    except Exception:  # a transform that cannot run on a probe tree is taken as given
        return
    if downhill:
        raise ValueError(
            'tx looks like a complete optimizer (its updates point downhill, so it already '
            'applies a learning rate); pass the direction instead, e.g. optax.scale_by_adam(), '
            'and give lr= to the stateopt optimizer'
        )


def _unflat_pairs(pairs: list) -> dict:
    return unflatten([p for p, _ in pairs], [s for _, s in pairs])


def _check_values(pairs: list) -> None:
    """Every new parameter must hold floating-point arrays."""
    for path, state in pairs:
        for leaf in jax.tree.leaves(_RAW(state)):
            dtype = jnp.result_type(leaf)
            if not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(f'the State at key {_show(path)} holds a {dtype} array; '
                                f'only floating-point parameters can be trained')


def _split_slot(path: tuple, owners: set) -> tuple[str | None, str]:
    """Split a state leaf's path into (owning parameter name or None, slot name)."""
    owner, parts = None, []
    for entry in path:
        key = entry.key if isinstance(entry, jax.tree_util.DictKey) else None
        if owner is None and key in owners:
            owner = key
            continue
        parts.append(str(_entry_name(entry)))
    return owner, '.'.join(parts)


def _entry_name(entry: Any) -> Hashable:
    for attr in ('name', 'key', 'idx'):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return entry


def _check_params(spec: _StepSpec, params: tuple) -> None:
    """Each parameter must still have the structure, shapes and dtypes it was registered with."""
    for name, value, (treedef, shapes) in zip(spec.names, params, spec.signatures):
        leaves, now = jax.tree.flatten(value)
        got = tuple((np.shape(x), jnp.result_type(x)) for x in leaves)
        if now != treedef or got != shapes:
            raise ValueError(f'the parameter {name!r} changed from {shapes} to {got} since it was '
                             f'registered; build a new optimizer for a changed model')


def _select_grads(spec: _StepSpec, grads: Any) -> list:
    """The gradient of each registered State, checked against the parameter."""
    skeleton = {}
    for position, path in enumerate(spec.paths):
        node = skeleton
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = position
    selected: list = [None] * len(spec.paths)

    def walk(node: Any, expected: dict, where: tuple) -> None:
        children = _children(node)
        if children is None:
            raise ValueError(f'grads{_where(where)} must be a dict keyed like the registered '
                             f'States, got {type(node).__name__}')
        missing = [_show(where + (k,)) for k in expected if k not in children]
        if missing:
            raise KeyError(f'grads has no gradient for {", ".join(missing)}; pass a gradient for '
                           f'every registered State, keyed as it was registered')
        unknown = [_show(where + (k,)) for k in children if k not in expected]
        if unknown:
            raise KeyError(f'grads has the keys {", ".join(unknown)}, which are not registered '
                           f'States; register them or leave them out')
        for key, sub in expected.items():
            if isinstance(sub, dict):
                walk(children[key], sub, where + (key,))
            else:
                selected[sub] = _checked_grad(spec, sub, children[key])

    walk(grads, skeleton, ())
    return selected


def _children(node: Any) -> dict | None:
    if isinstance(node, Mapping):
        return dict(node.items())
    if isinstance(node, (list, tuple)):
        return dict(enumerate(node))
    return None


def _where(path: tuple) -> str:
    return ''.join(f'[{k!r}]' for k in path)


def _checked_grad(spec: _StepSpec, position: int, grad: Any) -> Any:
    name = spec.names[position]
    treedef, shapes = spec.signatures[position]
    leaves, got_def = jax.tree.flatten(grad)
    if got_def != treedef:
        raise ValueError(f'the gradient for {name!r} has structure {got_def}, but the parameter has '
                         f'{treedef}')
    for index, (leaf, (shape, dtype)) in enumerate(zip(leaves, shapes)):
        where = name if len(shapes) == 1 else f'{name} (leaf {index})'
        if not hasattr(leaf, 'shape'):
            raise ValueError(f'the gradient for {where!r} is a {type(leaf).__name__}, not an array')
        if tuple(leaf.shape) != tuple(shape):
            raise ValueError(f'the gradient for {where!r} has shape {tuple(leaf.shape)}, but the '
                             f'parameter has shape {tuple(shape)}')
        if jnp.result_type(leaf) != dtype:
            raise ValueError(f'the gradient for {where!r} has dtype {jnp.result_type(leaf)}, but the '
                             f'parameter has dtype {dtype}')
    return grad


def _checked_array(where: str, value: Any, like: Any) -> jax.Array:
    """``value`` as a jax array with ``like``'s shape and dtype, or a ValueError naming ``where``."""
    if value is None or not hasattr(value, 'shape') and not isinstance(value, (int, float, bool)):
        raise ValueError(f'{where} must be an array, got {type(value).__name__}')
    array = np.asarray(value) if not isinstance(value, jax.Array) else value
    if tuple(np.shape(array)) != tuple(np.shape(like)):
        raise ValueError(f'{where} has shape {tuple(np.shape(array))}, expected {tuple(np.shape(like))}')
    dtype = jnp.result_type(like)
    if isinstance(value, (int, float, bool)):
        array = np.asarray(value, dtype=dtype)
    if np.dtype(array.dtype) != np.dtype(dtype):
        raise ValueError(f'{where} has dtype {array.dtype}, expected {dtype}')
    return jnp.asarray(array, dtype=dtype)


def _scalar(where: str, value: Any) -> Any:
    if is_traced(value):
        return value
    if not _hyper._is_real_scalar(value) or isinstance(value, bool):
        raise ValueError(f'{where} must be a number, got {value!r}')
    return float(np.asarray(value))
