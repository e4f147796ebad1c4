"""OptaxOptimizer: registration, param groups, the compiled step and state dicts."""

from __future__ import annotations

import functools
import warnings
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
from ._hyper import Hyper, inside_jax_transform, is_traced
from ._state import (
    OptimState,
    ReadableKeyError,
    UniqueStateManager,
    _show,
    deepcopy_owning_states,
    flatten_states,
    param_name,
    unflatten,
)

__all__ = ['OptaxOptimizer', 'ParamGroup', 'ParamGroups']

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
        raise ReadableKeyError(f'param groups have no key {key!r}; the keys are {", ".join(map(repr, self))}')

    def __setitem__(self, key: str, value: Any) -> None:
        optimizer = self._optimizer
        if key == 'params':
            raise ReadableKeyError("a group's params are set by add_param_group and "
                           "register_trainable_weights, not by assignment")
        if key not in optimizer._hyperparams:
            raise ReadableKeyError(f'{type(optimizer).__name__} has no hyper-parameter {key!r}; '
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
        raise ReadableKeyError('param group keys cannot be deleted')

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

    @property
    def lr_schedule(self) -> Callable | None:
        """The schedule ``count -> lr`` this group's lr follows, or ``None`` for a number.

        Assigning a number to ``group['lr']`` replaces the schedule for good (the
        number is the lr from then on); assigning a schedule brings one back.
        """
        return self._lr_schedule

    def __repr__(self) -> str:
        shown = ', '.join(f'{key}={_lr_shown(self) if key == "lr" else repr(value)}'
                          for key, value in self.hyperparams().items()
                          if key == 'lr' or not callable(value))
        return f'ParamGroup({len(self._positions)} params, {shown})'


def _lr_shown(group: ParamGroup) -> str:
    """A group's lr as reprs show it: the scheduler's or schedule's name, or the number."""
    scheduler = group._optimizer._scheduler
    if scheduler is not None:
        return type(scheduler).__name__
    if group._lr_schedule is not None:
        name = getattr(group._lr_schedule, '__name__', type(group._lr_schedule).__name__)
        return '<schedule>' if name in ('schedule', '<lambda>') else f'<schedule {name}>'
    return repr(_to_python(group['lr']))


class ParamGroups(list):
    """An optimizer's param groups: a list that refuses to be changed in place.

    Appending a dict to it would not create a group (torch's optimizers keep their
    groups in a plain list); :meth:`OptaxOptimizer.add_param_group` does.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> opt = stateopt.SGD(lr=0.1).register_trainable_weights(
    ...     {'w': brainstate.ParamState(jnp.ones(2))})
    >>> len(opt.param_groups)
    1
    >>> opt.param_groups.append({'params': {}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: param_groups cannot be changed in place; add a group with opt.add_param_group(...
    """

    __module__ = 'stateopt'

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError('param_groups cannot be changed in place; add a group with '
                        'opt.add_param_group(states, lr=...) and edit one through its keys '
                        "(opt.param_groups[0]['lr'] = ...)")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


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


@dataclass(eq=False)
class _Plan:
    """An optimizer's compiled step and the States it updates; rebuilt when registration changes."""

    states: tuple           # every registered State, in registration order
    spec: _StepSpec
    compiled: Any           # the eager jax.jit
    schedules: tuple = ()   # (group index, schedule) of the groups with a non-empty lr schedule
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
        updates already point downhill) is refused. ``tx`` sees each param group as
        a dict ``{param name: value}`` (names as :func:`stateopt.param_name` gives
        them, ``'l1.weight'``), so a pytree mask or label tree (``optax.masked``,
        ``optax.multi_transform``) is keyed by those names and must fit every group;
        a callable mask (``lambda params: {name: value.ndim > 1 for name, value in
        params.items()}``) fits any group.
    lr : float or callable
        The learning rate: a number, a :class:`stateopt.LRScheduler`, or a schedule
        ``count -> lr`` (an optax schedule) evaluated at :attr:`step_count`. A
        schedule's value is checked where it can be seen: an eager step refuses a
        negative (or NaN) value before changing anything; inside a compiled step
        (``brainstate.transform.jit``, ``donating_jit``) it is not seen, and a
        negative value is applied as it is (the step ascends), so check the schedule
        (``opt.get_last_lr()`` reads it). Assigning a number to ``group['lr']``
        replaces a group's schedule (see :attr:`ParamGroup.lr_schedule`).
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

    def __deepcopy__(self, memo: dict) -> OptaxOptimizer:
        """A copy that owns copies of every State (parameters included), as torch's deep copy does."""
        return deepcopy_owning_states(self, memo, caches=('_plan',))

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
        the moments and step counts of registered States are kept. A State reachable
        under two keys (tied weights, ``{'a': s, 'b': s}``) is registered once, under
        the first key; ``update`` accepts the gradients brainstate returns for the
        same dict, which give the State its whole gradient under each key, and applies
        that gradient once (the first key's).

        Raises
        ------
        KeyError
            Two different States under one key; nothing is registered.
        TypeError
            A leaf is not a State, or a parameter is not a floating-point array.
        """
        new = self._registry.plan_merge(states)
        _check_values(new)
        _strengthen(new)
        self._commit(new, moved=[], new_group=None)
        self._registry.note_aliases(states)
        return self

    def add_param_group(self, states: Any, **hyperparams: Any) -> ParamGroup:
        """Give ``states`` their own param group with ``hyperparams`` overridden.

        Any constructor hyper-parameter can be overridden. States already registered
        are found by identity (so ``model.head.states(...)``, keyed relative to
        ``head``, works) and move here with their moments; new States are registered
        under the given keys. torch's form, one dict ``{'params': states, 'lr': 0.01}``,
        is accepted too.

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
        states, hyperparams = _torch_group(states, hyperparams)
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
        _strengthen(new)
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
        try:
            self._rebuild_groups(start, moved, new_group, old_states, old_owner)
        except BaseException:
            self._registry._truncate(start)     # nothing changes
            raise

    def _rebuild_groups(self, start: int, moved: list[int], new_group: ParamGroup | None,
                        old_states: dict, old_owner: dict) -> None:
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
        """The algorithm's state for ``values``, the tree ``{param name: value}`` of one group.

        An empty group whose algorithm cannot start from an empty tree (a ``tx`` with a
        pytree mask) has no state (``None``) until it holds parameters.
        """
        hp = {name: _to_python(group[name]) if name != 'lr' else group.initial_lr
              for name in self._hyperparams}
        try:
            return self._algorithm(hp).init(values)
        except Exception as exc:
            if not values:
                return None
            raise ValueError(
                f'{type(self).__name__} could not create its state for the parameters '
                f'{sorted(values)} of one param group: {type(exc).__name__}: {exc}. The algorithm '
                f'(a tx= transform included) sees each param group as a dict {{param name: value}}, '
                f'named as stateopt.param_name names them ({", ".join(map(repr, sorted(values)[:3]))}'
                f'{", ..." if len(values) > 3 else ""}); a pytree mask or label tree '
                f'(optax.masked, optax.multi_transform) must have exactly these keys for every group, '
                f'or be a callable of the params tree'
            ) from exc

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
        if is_traced(self.step_count.value):
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
            aliases=tuple(registry.aliases.items()),
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
        schedules = tuple((index, group._lr_schedule) for index, group in enumerate(self._groups)
                          if group._lr_schedule is not None and group._positions)
        self._plan = _Plan(states=registry.states, spec=spec, compiled=compiled, schedules=schedules)
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
        return tuple(new_params), tuple(new_states), optax.safe_increment(count)

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
        if plan.schedules:
            self._check_scheduled_lrs(plan)
        params = list(map(_RAW, plan.states))
        plan.guard = DonationGuard.protected(plan.guard, plan.states, params)
        opt_leaves = owned_leaves(self.opt_state)
        hypers = tuple(_RAW(group._hyper) for group in self._groups)
        arrays = {k: v for k, v in extra.items() if _is_array_like(v)}
        static = tuple(sorted((k, v) for k, v in extra.items() if k not in arrays))
        try:
            new_params, new_leaves, count = plan.compiled(
                tuple(params), grads, opt_leaves, hypers, _RAW(self.step_count), arrays, static)
        except TypeError:   # not arrays: say what grads should be (nothing was donated)
            _select_grads(plan.spec, grads)
            raise
        del params, opt_leaves
        write_back(plan.states, new_params)
        store_leaves(self.opt_state, plan.spec.opt_treedef, new_leaves)
        write_back((self.step_count,), (count,))

    def _check_scheduled_lrs(self, plan: _Plan) -> None:
        """Refuse, before anything changes, a schedule that gives a negative or NaN lr now."""
        count = _RAW(self.step_count)
        for index, schedule in plan.schedules:
            lr = _to_python(jnp.asarray(schedule(count), jnp.float32))
            if not lr >= 0:
                raise ValueError(
                    f'the lr schedule of param group {index} gives lr={lr} at step {int(count)}; a '
                    f'learning rate must be >= 0 (a negative one climbs the loss). Nothing was changed: '
                    f'fix the schedule (for example the end value of optax.linear_schedule)')

    # -- learning rates ----------------------------------------------------------------
    @property
    def param_groups(self) -> ParamGroups:
        """The param groups; ``param_groups[0]`` is the default group.

        A read-only list: edit a group through its keys (``param_groups[1]['lr'] =
        0.01``) and add one with :meth:`add_param_group`.
        """
        return ParamGroups(self._groups)

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
            ``optimizer_class`` (the class name, ``'AdamW'``); ``step_count``;
            ``param_groups`` (each with its parameter names and its hyper-parameters);
            ``state`` (``{param name: {slot: array}}``, the moments); ``group_state``
            (per group, the slots no parameter owns, like step counts); and
            ``lr_scheduler`` (the attached scheduler's state, or ``None``).
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
            'optimizer_class': type(self).__name__,
            'step_count': self.step_count.value,
            'param_groups': groups,
            'state': per_param,
            'group_state': group_state,
            'lr_scheduler': None if self._scheduler is None else self._scheduler.state_dict(),
        }

    def load_state_dict(self, state_dict: Mapping, strict: bool = True) -> None:
        """Restore :meth:`state_dict` output, after checking all of it.

        The groups must hold the same parameter names, static hyper-parameters must
        agree, every array must have the shape and dtype of the one it replaces, and
        every value must be one a run can produce: counts are integers >= 0, the
        optimizer's state is finite, and the slots no run makes negative (second
        moments, accumulated squares, step sizes) are >= 0. On any mismatch a
        ``ValueError`` (``KeyError`` for a missing or unknown entry, ``TypeError`` for
        something that is not a dict) names the entry and nothing changes.

        Parameters
        ----------
        state_dict : dict
            What :meth:`state_dict` returned. State dicts without ``optimizer_class``
            (written before it was recorded) load as well.
        strict : bool
            If False, the state dict of another optimizer class (``optimizer_class``)
            loads with a warning, provided its groups, hyper-parameters and slots fit
            this optimizer. Everything else is checked either way.
        """
        step_count, new_states, hyper_values, scheduler_state, other_class = \
            self._checked_state_dict(state_dict, strict)
        if other_class is not None:
            warnings.warn(f'loading the state dict of {other_class!r} into {type(self).__name__!r} '
                          f'(strict=False): its groups, hyper-parameters and slots fit, but another '
                          f'algorithm wrote them', UserWarning, stacklevel=2)
        self.step_count.value = step_count
        self.opt_state.value = new_states
        for group, values in zip(self._groups, hyper_values):
            group._hyper.value = {**_RAW(group._hyper), **values}
        if self._scheduler is not None:
            self._scheduler.load_state_dict(scheduler_state)

    def check_state_dict(self, state_dict: Mapping, strict: bool = True) -> None:
        """Raise what :meth:`load_state_dict` would raise for ``state_dict``; change nothing."""
        self._checked_state_dict(state_dict, strict)

    def _checked_state_dict(self, state_dict: Mapping, strict: bool = True) -> tuple:
        """What :meth:`load_state_dict` writes, after checking all of it.

        ``(step count, optimizer states, dynamic hyper-parameters per group, scheduler
        state, the other optimizer class whose state dict this is or None)``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f'load_state_dict expects a dict (what state_dict() returns), got '
                            f'{_received(state_dict)}')
        required = ('step_count', 'param_groups', 'state', 'group_state', 'lr_scheduler')
        missing = [key for key in required if key not in state_dict]
        if missing:
            raise StateDictKeyError(f'the state dict has no {", ".join(missing)}; pass what '
                                    f'state_dict() returns')
        unknown = sorted(map(repr, set(state_dict) - {*required, 'optimizer_class'}))
        if unknown:
            raise StateDictKeyError(f'the state dict has the unknown entries {", ".join(unknown)}; its '
                                    f'entries are optimizer_class, {", ".join(required)}')
        other_class = self._checked_class(state_dict, strict)
        step_count = _checked_slot('step_count', state_dict['step_count'], _RAW(self.step_count),
                                   'it counts steps')
        count = len(self._groups)
        saved_groups = _checked_per_group('param_groups', state_dict['param_groups'], count, 'dicts')
        names = self._registry.names
        hyper_values = [self._checked_group(index, group, saved, names)
                        for index, (group, saved) in enumerate(zip(self._groups, saved_groups))]
        saved_state = _checked_slot_dicts(state_dict['state'], names)
        saved_group_state = _checked_per_group('group_state', state_dict['group_state'], count,
                                               'dicts {slot: array}')
        for index, slots in enumerate(saved_group_state):
            if not isinstance(slots, Mapping):
                raise ValueError(f'group_state[{index}] must be a dict {{slot: array}}, got '
                                 f'{_received(slots)}')
        used = {**{(None, index): set() for index in range(count)},
                **{(name, None): set() for name in saved_state}}
        new_states = []
        for index, (group, current) in enumerate(zip(self._groups, _RAW(self.opt_state))):
            never_negative = _never_negative_slots(type(self), group)
            owned = {names[i] for i in group._positions}
            leaves, treedef = jax.tree_util.tree_flatten_with_path(current)
            restored = []
            for path, leaf in leaves:
                owner, slot = _split_slot(path, owned)
                if owner is None:
                    where, slots, seen = f'group_state[{index}]', saved_group_state[index], used[None, index]
                elif owner in saved_state:
                    where, slots, seen = f'state[{owner!r}]', saved_state[owner], used[owner, None]
                else:
                    raise StateDictKeyError(f'state[{owner!r}] is missing: the state dict has no optimizer '
                                            f'state for the parameter {owner!r}')
                if slot not in slots:
                    raise StateDictKeyError(f'{where}[{slot!r}] is missing')
                seen.add(slot)
                reason = (f"{type(self).__name__}'s {slot} is never negative"
                          if _covers(never_negative, slot) else None)
                restored.append(_checked_slot(f'{where}[{slot!r}]', slots[slot], leaf, reason))
            new_states.append(treedef.unflatten(restored))
        for (owner, index), seen in used.items():
            slots = saved_group_state[index] if owner is None else saved_state[owner]
            leftover = sorted(map(repr, set(slots) - seen))
            if leftover:
                where = f'group_state[{index}]' if owner is None else f'state[{owner!r}]'
                raise StateDictKeyError(f'{where} has the unknown slots {", ".join(leftover)}; this '
                                        f'optimizer keeps {", ".join(map(repr, sorted(seen))) or "none"}')
        scheduler_state = state_dict['lr_scheduler']
        if self._scheduler is None and scheduler_state is not None:
            raise ValueError(f'lr_scheduler holds {_received(scheduler_state)}, but this optimizer has no '
                             f'lr scheduler; build it with the scheduler it was saved with (lr=scheduler)')
        if self._scheduler is not None:
            if scheduler_state is None:
                raise ValueError(f'lr_scheduler is None, but this optimizer has an lr scheduler (a '
                                 f'{type(self._scheduler).__name__}); the state dict was saved from an '
                                 f'optimizer without one')
            self._scheduler._check_state_dict(scheduler_state)
        return step_count, tuple(new_states), hyper_values, scheduler_state, other_class

    def _checked_class(self, state_dict: Mapping, strict: bool) -> str | None:
        """The other optimizer class that wrote ``state_dict`` (None if this one), if allowed."""
        mine = type(self).__name__
        if 'optimizer_class' not in state_dict:
            return None
        saved = _plain_string(state_dict['optimizer_class'])
        if saved is None:
            raise ValueError(f'optimizer_class must be the name of the optimizer class that wrote the '
                             f'state dict, got {_received(state_dict["optimizer_class"])}')
        if saved == mine:
            return None
        if strict:
            raise ValueError(f'optimizer_class is {saved!r}, but this optimizer is {mine!r}: the state '
                             f'dict was written by another optimizer class. Load it into a {saved}, or '
                             f'pass strict=False to load it anyway (its groups, hyper-parameters and '
                             f'slots must still fit)')
        return saved

    def _checked_group(self, index: int, group: ParamGroup, saved: Any, names: tuple) -> dict:
        """The dynamic values of one saved group, after checking it against ``group``."""
        where = f'param_groups[{index}]'
        if not isinstance(saved, Mapping):
            raise ValueError(f"{where} must be a dict of the group's parameter names and "
                             f'hyper-parameters, got {_received(saved)}')
        if 'params' not in saved:
            raise StateDictKeyError(f"{where}['params'] is missing (the names of the group's parameters)")
        saved_names = _param_names(saved['params'])
        if saved_names is None:
            raise ValueError(f"{where}['params'] must be a list of parameter names, got "
                             f"{_received(saved['params'])}")
        if sorted(saved_names) != sorted(group.names):
            raise ValueError(f"{where}['params'] holds the parameters {sorted(saved_names)}, but group "
                             f'{index} of this optimizer holds {sorted(group.names)}')
        values = {}
        for key, spec in self._hyperparams.items():
            if not _in_state_dict(group, key):
                continue
            entry = f'{where}[{key!r}]'
            if key not in saved:
                raise StateDictKeyError(f'{entry} is missing')
            current, value = group[key], saved[key]
            if key in group._static:
                if not _same_static(value, current):
                    raise ValueError(f'{entry} is {_received(value)}, but this optimizer has {current!r}; '
                                     f'it is fixed when a group is created, so build the group with the '
                                     f'saved value to load this state dict')
                continue
            if isinstance(current, tuple):
                if not isinstance(value, (tuple, list)) or len(value) != len(current):
                    raise ValueError(f'{entry} must be {len(current)} numbers, got {_received(value)}')
                value = tuple(_scalar(f'{entry}[{i}]', v) for i, v in enumerate(value))
            else:
                value = _scalar(entry, value)
            spec.check(entry, _to_python(value))
            values[key] = _as_dynamic(value)
        unknown = sorted(map(repr, set(saved) - set(self._hyperparams) - {'params'}))
        if unknown:
            raise StateDictKeyError(f'{where} has the unknown keys {", ".join(unknown)}; the '
                                    f'hyper-parameters of {type(self).__name__} are '
                                    f'{", ".join(map(repr, self._hyperparams))}')
        return values

    def __repr__(self) -> str:
        """The class, group 0's lr as it is now, the other constructor values, and the sizes."""
        shown = ', '.join(f'{k}={_lr_shown(self._groups[0]) if k == "lr" else repr(_to_python(v))}'
                          for k, v in self.defaults.items() if k != 'tx' or v is not None)
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


def _torch_group(states: Any, hyperparams: dict) -> tuple[Any, dict]:
    """``(states, hyperparams)`` of torch's ``add_param_group({'params': ..., 'lr': ...})`` form.

    The form is recognised by a ``'params'`` entry beside entries that are not States;
    anything else is a dict of States, returned as it is.
    """
    if not isinstance(states, Mapping) or 'params' not in states or len(states) == 1 or any(
            isinstance(value, brainstate.State) for key, value in states.items() if key != 'params'):
        return states, hyperparams
    given = {key: value for key, value in states.items() if key != 'params'}
    twice = sorted(set(given) & set(hyperparams))
    if twice:
        raise TypeError(f'add_param_group got {", ".join(map(repr, twice))} both in the group dict and '
                        f'as keyword arguments; give each hyper-parameter once')
    return states['params'], {**given, **hyperparams}


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


def _strengthen(pairs: list) -> None:
    """Give new parameters whose arrays are weakly typed (``jnp.full(n, 1.0)``) strong types.

    A step returns strongly typed arrays, and a compiled function is specialised on
    weak typing, so a weak first value would compile every step twice. The values are
    equal; only the type flag changes, once, at registration.
    """
    for _, state in pairs:
        value = _RAW(state)
        if any(getattr(leaf, 'weak_type', False) for leaf in jax.tree.leaves(value)):
            state.value = jax.tree.map(
                lambda leaf: jnp.asarray(leaf, jnp.result_type(leaf))
                if getattr(leaf, 'weak_type', False) else leaf, value)


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
        missing = [_show(where + (k,)) for k, sub in expected.items()
                   if k not in children and not isinstance(sub, _Alias)]
        if missing:
            raise ReadableKeyError(f'grads has no gradient for {", ".join(missing)}; pass a gradient for '
                           f'every registered State, keyed as it was registered')
        unknown = [_show(where + (k,)) for k in children if k not in expected]
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
    is_state = lambda leaf: isinstance(leaf, brainstate.State)
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads, is_leaf=is_state)[0]:
        if is_state(leaf):
            raise TypeError(f'grads{jax.tree_util.keystr(path)} is {_kind(leaf)}')


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


class StateDictKeyError(ReadableKeyError):
    """A missing or unknown entry of a state dict, with a message that reads as written."""


#: Optimizer class name -> the slots of its state that no run makes negative: second moments
#: and other accumulators of squares or absolute values, step sizes, averaging weights. A name
#: covers the slot of that name and the slots under it ('variance' covers 'variance.row'); a
#: class without an entry has its nearest base class's. The other floating slots (first
#: moments, previous gradients, parameter copies, Hessian estimates) may be negative.
_NEVER_NEGATIVE_SLOTS: dict[str, tuple[str, ...]] = {
    'Adam': ('exp_avg_sq', 'max_exp_avg_sq'),
    'Adagrad': ('sum',),
    'Adadelta': ('square_avg', 'acc_delta'),
    'RMSprop': ('square_avg',),
    'Adamax': ('exp_inf',),
    'Nadam': ('exp_avg_sq', 'mu_product'),
    'RAdam': ('exp_avg_sq',),
    'Rprop': ('step_factor',),
    'Adafactor': ('variance',),
    'Lamb': ('0.nu',),
    'Yogi': ('nu',),
    'AdaBelief': ('nu',),
    'SM3': ('mu',),
    'Novograd': ('nu',),
    'Muon': ('inner_states.adam.inner_state.nu',),
    '_ScheduleFree': ('weight_sum', 'max_lr'),
    'ScheduleFreeAdamW': ('weight_sum', 'max_lr', 'base_state.0.nu'),
    'Prodigy': ('exp_avg_sq', 'estim_lr'),
    'ADOPT': ('nu',),
    'Adan': ('exp_avg_sq',),
    'NAdamW': ('nu',),
}
#: Optimizer class name -> (the static hyper-parameter that may hold a stateopt optimizer, the
#: prefix of that optimizer's slots in the group's state): its never-negative slots count too.
_INNER_OPTIMIZER_SLOTS: dict[str, tuple[str, str]] = {'Lookahead': ('base_optimizer', 'fast_state.')}


def _declared(table: dict, optimizer: type) -> Any:
    """The entry of ``optimizer``'s nearest class (itself or a base) in ``table``, or None."""
    return next((table[cls.__name__] for cls in optimizer.__mro__ if cls.__name__ in table), None)


def _never_negative_slots(optimizer: type, group: ParamGroup) -> tuple[str, ...]:
    """The slots of ``group``'s state that no run of ``optimizer`` makes negative."""
    names = _declared(_NEVER_NEGATIVE_SLOTS, optimizer) or ()
    inner = _declared(_INNER_OPTIMIZER_SLOTS, optimizer)
    if inner is not None and isinstance(group._static.get(inner[0]), OptaxOptimizer):
        base = group._static[inner[0]]
        names += tuple(inner[1] + name for name in _never_negative_slots(type(base), base._groups[0]))
    return names


def _covers(names: tuple[str, ...], slot: str) -> bool:
    return any(slot == name or slot.startswith(name + '.') for name in names)


def _checked_per_group(name: str, saved: Any, count: int, what: str) -> list | tuple:
    """``saved``, a state dict's list with one entry per param group, or an error naming ``name``."""
    if not isinstance(saved, (list, tuple)):
        raise ValueError(f'{name} must be a list of {count} {what}, one per param group, got '
                         f'{_received(saved)}')
    if len(saved) != count:
        raise ValueError(f'{name} holds {len(saved)} entries, but this optimizer has {count} param '
                         f'groups; add the same groups (add_param_group) before loading')
    return saved


def _received(value: Any) -> str:
    """A value found in a state dict, as errors describe it: ``a float32 array of shape (3,)``."""
    if hasattr(value, 'shape') and hasattr(value, 'dtype'):
        return f'a {getattr(value.dtype, "name", value.dtype)} array of shape {tuple(np.shape(value))}'
    if isinstance(value, Mapping):
        return f'a dict of {len(value)} entries'
    if isinstance(value, (list, tuple)):
        return f'a {type(value).__name__} of {len(value)} items'
    return 'None' if value is None else f'the {type(value).__name__} {value!r}'


def _plain_string(value: Any) -> str | None:
    """``value`` as a str if it is one (a 0-d numpy string array included), else None."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind == 'U':
        return str(value)
    return None


def _param_names(value: Any) -> list[str] | None:
    """A saved group's ``params``: a list of parameter names, or None if it is something else."""
    if not isinstance(value, (list, tuple)):
        return None
    names = [_plain_string(name) for name in value]
    return None if None in names else names


def _same_static(saved: Any, current: Any) -> bool:
    """Whether a saved static hyper-parameter (flag, string, number, None or tuple) is ``current``."""
    if isinstance(current, (tuple, list)):
        return isinstance(saved, (tuple, list)) and len(saved) == len(current) and \
            all(map(_same_static, saved, current))
    if isinstance(saved, (np.ndarray, np.generic, jax.Array)):
        if np.shape(saved) != ():
            return False
        saved = np.asarray(saved).item()
    return isinstance(saved, bool) == isinstance(current, bool) and type(saved == current) is bool \
        and saved == current


def _checked_slot_dicts(saved_state: Any, names: tuple) -> Mapping:
    """A saved ``state``: a dict ``{param name: {slot: array}}`` over this optimizer's parameters."""
    if not isinstance(saved_state, Mapping):
        raise ValueError(f'state must be a dict {{param name: {{slot: array}}}}, got '
                         f'{_received(saved_state)}')
    known = set(names)
    unknown = sorted((key for key in saved_state if key not in known), key=repr)
    if unknown:
        shown = ', '.join(map(repr, names[:8])) + (f', ... ({len(names)} in all)' if len(names) > 8 else '')
        raise StateDictKeyError(f'{", ".join(f"state[{key!r}]" for key in unknown)}: this optimizer has no '
                                f'parameter of that name; its parameters are {shown or "none"}')
    for key, slots in saved_state.items():
        if not isinstance(slots, Mapping):
            raise ValueError(f'state[{key!r}] must be a dict {{slot: array}}, got {_received(slots)}')
    return saved_state


def _checked_array(where: str, value: Any, like: Any) -> jax.Array:
    """``value`` as a jax array with ``like``'s shape and dtype, or a ValueError naming ``where``.

    An array must have ``like``'s dtype, except that integers may come in any integer
    dtype whose range holds them (a count saved as int32 loads into an int64 one). A
    Python number is taken exactly: a bool for a bool array, an int for an integer or
    floating one, a float for a floating one (never truncated to an integer).
    """
    dtype, shape = np.dtype(jnp.result_type(like)), tuple(np.shape(like))
    expected = f'{"an" if dtype.name[0] in "aeiou" else "a"} {dtype.name} array of shape {shape}'
    integer = jnp.issubdtype(dtype, jnp.integer)
    if hasattr(value, 'shape') and hasattr(value, 'dtype'):
        if tuple(np.shape(value)) != shape:
            raise ValueError(f'{where} has shape {tuple(np.shape(value))}, expected {expected}')
        got = np.dtype(value.dtype)
        if got != dtype and not (integer and jnp.issubdtype(got, jnp.integer)):
            raise ValueError(f'{where} has dtype {got.name}, expected {expected}')
        numbers = _on_host(value) if got != dtype else None
        if numbers is not None and numbers.size:
            info, low, high = np.iinfo(dtype), int(numbers.min()), int(numbers.max())
            if low < info.min or high > info.max:
                raise ValueError(f'{where} holds values from {low} to {high}, outside the range of '
                                 f'{dtype.name} ({info.min} to {info.max})')
        return jnp.asarray(value, dtype=dtype)
    if isinstance(value, bool):
        fits = dtype == np.bool_
    elif isinstance(value, int):
        fits = integer or jnp.issubdtype(dtype, jnp.inexact)
        if integer and fits and not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
            raise ValueError(f'{where} is {value}, outside the range of {dtype.name} '
                             f'({np.iinfo(dtype).min} to {np.iinfo(dtype).max})')
    elif isinstance(value, float):
        fits = jnp.issubdtype(dtype, jnp.inexact)
    else:
        fits = False
    if not fits or shape != ():
        raise ValueError(f'{where} must be {expected}, got {_received(value)}')
    return jnp.asarray(value, dtype=dtype)


def _on_host(value: Any) -> np.ndarray | None:
    """The numbers of an array as numpy, or None where they cannot be read here: traced, or
    spread over several processes. Checks run on the host, which compiles nothing."""
    if is_traced(value) or (isinstance(value, jax.Array) and not value.is_fully_addressable):
        return None
    return np.asarray(value)


def _checked_slot(where: str, value: Any, like: Any, never_negative: str | None) -> jax.Array:
    """An optimizer-state array (a count or a slot), refusing values no run produces.

    Integer state is counts, never negative; floating state is finite, and ``>= 0``
    where ``never_negative`` gives the reason. (The numbers of an array spread over
    several processes are not checked.)
    """
    array = _checked_array(where, value, like)
    numbers = _on_host(value if hasattr(value, 'dtype') else array)
    if numbers is None or not numbers.size:
        return array
    if np.issubdtype(array.dtype, np.signedinteger):
        never_negative = never_negative or 'it is a count'
    elif jnp.issubdtype(array.dtype, jnp.inexact):
        _refuse_where(where, numbers, ~np.isfinite(numbers), 'must be finite',
                      'the state dict is damaged, or was saved after the run diverged')
    if never_negative:
        _refuse_where(where, numbers, numbers < 0, f'must be >= 0 ({never_negative})',
                      'the state dict is damaged')
    return array


def _refuse_where(where: str, numbers: np.ndarray, bad: np.ndarray, rule: str, cause: str) -> None:
    """Raise a ValueError naming the first element of ``numbers`` where ``bad`` holds, if any."""
    if not bad.any():
        return
    first = np.unravel_index(int(np.argmax(bad)), numbers.shape)
    at = f' at index {tuple(map(int, first))}' if numbers.ndim else ''
    raise ValueError(f'{where} {rule}, but holds {numbers[first]}{at}; {cause}')


def _scalar(where: str, value: Any) -> Any:
    if is_traced(value):
        return value
    if not _hyper._is_real_scalar(value) or isinstance(value, bool):
        raise ValueError(f'{where} must be a number, got {_received(value)}')
    return float(np.asarray(value))
