"""Learning-rate schedulers: jit-safe, per param group, checkpointable.

A scheduler keeps its step counter (and any other counter) in OptimStates.
Attached to an optimizer (``lr=scheduler``) it reads
and writes each param group's ``lr`` hyper-parameter State, the one place a group's lr
lives; on its own it keeps one lr State per ``base_lr`` entry. Every rule is a pure
``jnp`` function of those States: ``step()`` traces inside ``brainstate.transform.jit``
and, outside it, runs one cached compiled function, so stepping never recompiles.

Each scheduler states its rule through two pure methods, for a group with base lr
``base`` (torch's ``initial_lr``): ``_closed(base, epoch, group)``, the lr at
``epoch``, and ``_recursive(lr, base, epoch, group)``, the lr after a step to
``epoch`` from the current ``lr`` (torch's chainable form; ``epoch == 0`` is the
initial step). Schedulers with other counters also override ``_fresh`` and
``_advance``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._groups import to_python as _to_python
from ._hyper import check_number, inside_jax_transform, is_traced
from ._optimizer import OptaxOptimizer
from ._state import OptimState
from ._state_dict import StateDictKeyError, checked_array, described

__all__ = [
    'LRScheduler', 'StepLR', 'MultiStepLR', 'ExponentialLR', 'ExponentialDecayLR',
    'CosineAnnealingLR', 'CosineAnnealingWarmRestarts', 'PolynomialLR', 'LinearLR', 'ConstantLR',
    'LambdaLR', 'MultiplicativeLR', 'OneCycleLR', 'CyclicLR', 'ReduceLROnPlateau',
    'WarmupScheduler', 'WarmupCosineSchedule', 'PiecewiseConstantSchedule', 'SequentialLR',
    'ChainedScheduler',
]

LRs = float | Sequence[float]
F32, I32 = jnp.float32, jnp.int32


# -- validation and small helpers ------------------------------------------------------------

def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')
    return int(value)


def _per_group(name: str, value: Any, **bounds: Any) -> tuple[float, ...]:
    """A number, or a non-empty list with one number per param group."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f'{name} must be a number or a non-empty list of numbers, got {value!r}')
        return tuple(check_number(f'{name}[{i}]', v, **bounds) for i, v in enumerate(value))
    return (check_number(name, value, **bounds),)


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f'{name} must be one of {", ".join(map(repr, options))}; got {value!r}')
    return value


def _pick(values: Sequence, group: int) -> Any:
    """The entry of a per-group list for ``group``; groups past its end take the last entry."""
    return values[min(group, len(values) - 1)]


def _f32(value: Any) -> jax.Array:
    return jnp.asarray(value, F32)


def _cos_weight(position: Any, period: Any) -> jax.Array:
    """``(1 + cos(pi * position / period)) / 2``, as ``sin(pi (period - position) / (2 period))^2``.

    The sine form keeps float32's relative precision where the weight nears zero.
    """
    offset = jnp.mod(_f32(period) - _f32(position), 2 * _f32(period))
    return jnp.square(jnp.sin(jnp.pi / 2 * offset / period))


def _where(condition: Any, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


def _like(new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.asarray(n, jnp.result_type(o)), new, old)


def _is_state(value: Any) -> bool:
    return isinstance(value, brainstate.State)


def _group_values(groups: Sequence, momentum_key: str | None) -> dict:
    """The lrs of ``groups`` and, when a scheduler cycles it, their momentum (or beta1)."""
    momenta = None
    if momentum_key == 'betas':
        momenta = tuple(group['betas'][0] for group in groups)
    elif momentum_key == 'momentum':
        momenta = tuple(group['momentum'] for group in groups)
    return {'lr': tuple(group['lr'] for group in groups), 'momentum': momenta}


def _check_lengths(owner: str, lengths: Mapping[str, int]) -> None:
    """Refuse per-group lists of different lengths: each gives one value per param group."""
    if len(set(lengths.values())) > 1:
        shown = ' and '.join(f'{name} has {count}' for name, count in lengths.items())
        raise ValueError(f'{owner}: {shown} values; a list gives one value per param group, so the '
                         f'lists must have the same length (or give a single value for all groups)')


def _check_optimizer(value: Any, what: str) -> None:
    if not isinstance(value, OptaxOptimizer):
        raise TypeError(f'{what} expects a stateopt optimizer (such as stateopt.SGD(...) or '
                        f'stateopt.AdamW(...)), got {type(value).__name__}: {value!r}')


def _torch_form(init: Callable) -> Callable:
    """``init``, also accepting torch's form with the optimizer first: ``StepLR(optimizer, 30)``.

    In that form the other arguments follow torch's signature, the scheduler takes each
    group's base lr from the optimizer (torch's ``initial_lr``) and attaches to it, as
    ``OptimizerClass(lr=scheduler)`` would.
    """

    @functools.wraps(init)
    def init_or_torch_form(self: LRScheduler, *args: Any, **kwargs: Any) -> None:
        if args and (isinstance(args[0], OptaxOptimizer) or hasattr(args[0], 'param_groups')):
            optimizer, args = args[0], args[1:]
        elif 'optimizer' in kwargs:
            optimizer = kwargs.pop('optimizer')
        else:
            if '_base_lr_given' not in vars(self):  # the outermost constructor records it
                self._base_lr_given = bool(args) or 'base_lr' in kwargs
            init(self, *args, **kwargs)
            return
        self._base_lr_given = False
        init(self, **type(self)._torch_arguments(optimizer, args, kwargs))
        self._attach_torch_form(optimizer)

    return init_or_torch_form


# -- the base -------------------------------------------------------------------------------------

class LRScheduler:
    r"""Base of the schedulers, and the constant schedule ``lr_t = base_lr``.

    Each param group ``g`` has a base lr ``b_g`` (torch's ``initial_lr``): ``base_lr``
    for group 0, the ``lr`` a group was added with for the others. A scheduler passed
    as ``lr=`` to a stateopt optimizer attaches to it: every group's lr then follows
    the schedule from its own ``b_g``, inside or outside ``jit``, and the optimizer's
    ``state_dict`` carries the scheduler's.

    Every scheduler also takes torch's form, the optimizer first:
    ``StepLR(opt, 30)``, ``ReduceLROnPlateau(opt, 'min')``,
    ``SequentialLR(opt, [first, second], milestones=[5])`` (with schedulers built
    without the optimizer) or ``ChainedScheduler([first, second], opt)``. The other
    arguments then follow torch's signature, every group's base lr is its lr in the
    optimizer (torch's ``initial_lr``), and the scheduler attaches as ``lr=scheduler``
    would.

    Parameters
    ----------
    base_lr : float or list of float
        Group 0's base lr. A list gives one lr per group to a scheduler used on its
        own; attached, each group takes its ``lr`` from ``add_param_group``.
    last_epoch : int
        Start as if stepped this many times (torch's fresh start, ``last_epoch=-1``,
        is 0 here).

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> sched = stateopt.StepLR(base_lr=0.1, step_size=2, gamma=0.5)
    >>> opt = stateopt.SGD(lr=sched).register_trainable_weights(
    ...     {'w': brainstate.ParamState(jnp.zeros(2))})
    >>> _ = opt.add_param_group({'b': brainstate.ParamState(jnp.zeros(1))}, lr=0.02)
    >>> for _ in range(2):
    ...     sched.step()
    >>> [round(lr, 6) for lr in sched.get_last_lr()]
    [0.05, 0.01]
    >>> round(float(sched(4)), 6)  # as an optax schedule: group 0's lr at step 4
    0.025
    >>> opt = stateopt.SGD(lr=0.1).register_trainable_weights(
    ...     {'w': brainstate.ParamState(jnp.zeros(2))})
    >>> sched = stateopt.StepLR(opt, 2, 0.5)  # torch's form
    >>> for _ in range(2):
    ...     sched.step()
    >>> opt.lr_scheduler is sched, [round(lr, 6) for lr in opt.get_last_lr()]
    (True, [0.05])
    """

    __module__ = 'stateopt'
    #: True when the lrs come from the scheduler's own per-group values, not the groups' lrs.
    _absolute = False
    #: The counters besides ``last_epoch``, each an OptimState attribute.
    _extra_counters: tuple[str, ...] = ()
    #: torch's parameters after the optimizer, in order, where they differ from this class's own.
    _torch_params: tuple[str, ...] | None = None
    #: The per-group list parameters given as lists: ``{name: number of values}``.
    _listed: dict[str, int] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if '__init__' in vars(cls):
            cls.__init__ = _torch_form(cls.__init__)

    @_torch_form
    def __init__(self, base_lr: LRs = 1e-3, last_epoch: int = 0):
        self._base_list = _per_group('base_lr', base_lr, low=0.0)
        lengths = dict(self._listed)
        if not self._absolute and len(self._base_list) > 1:
            lengths['base_lr'] = len(self._base_list)
        _check_lengths(type(self).__name__, lengths)
        if isinstance(last_epoch, int) and last_epoch == -1:
            raise ValueError(f'last_epoch=-1 is torch\'s fresh start; here a fresh scheduler has '
                             f'last_epoch=0 (the default). In torch\'s form, '
                             f'{type(self).__name__}(optimizer, ...), last_epoch=-1 is accepted')
        self._setup_states(_int('last_epoch', last_epoch, 0))

    def _per_group_param(self, name: str, value: Any, **bounds: Any) -> tuple:
        """``_per_group``, recording a list's length (checked against the param groups)."""
        values = _per_group(name, value, **bounds)
        if isinstance(value, (list, tuple)):
            self._listed = {**self._listed, name: len(values)}
        return values

    # -- torch's form -----------------------------------------------------------------------------
    @classmethod
    def _base_from_groups(cls) -> bool:
        """Whether torch's form takes ``base_lr`` from the optimizer's groups."""
        return not cls._absolute and 'base_lr' in inspect.signature(cls.__init__).parameters

    @classmethod
    def _torch_arguments(cls, optimizer: Any, args: tuple, kwargs: dict) -> dict:
        """The keyword arguments of torch's ``cls(optimizer, *args, **kwargs)``."""
        name = cls.__name__
        _check_optimizer(optimizer, f'{name}(optimizer, ...)')
        names = cls._torch_params
        if names is None:
            own = list(inspect.signature(cls.__init__).parameters.values())[1:]
            names = tuple(p.name for p in own if p.kind is p.POSITIONAL_OR_KEYWORD
                          and not (p.name == 'base_lr' and cls._base_from_groups()))
        if len(args) > len(names):
            raise TypeError(f'{name}(optimizer, ...) takes at most {len(names)} positional arguments '
                            f'after the optimizer ({", ".join(names)}), got {len(args)}')
        arguments = dict(zip(names, args))
        for key in kwargs:
            if key in arguments:
                raise TypeError(f'{name}(optimizer, ...) got multiple values for argument {key!r}')
        arguments.update(kwargs)
        last_epoch = arguments.pop('last_epoch', -1)
        if last_epoch != -1:
            raise ValueError(f'{name}(optimizer, ..., last_epoch={last_epoch!r}): in torch\'s form only '
                             f'last_epoch=-1 (a fresh start) is accepted; to resume, load the saved state '
                             f'with load_state_dict (the scheduler\'s or the optimizer\'s)')
        if cls._base_from_groups():
            if 'base_lr' in arguments:
                raise ValueError(f'{name}(optimizer, ..., base_lr=...): in torch\'s form each group\'s base '
                                 f'lr is its lr in the optimizer; drop base_lr, or write '
                                 f'{name}(base_lr=..., ...) and pass it as the optimizer\'s lr=')
            arguments['base_lr'] = optimizer.param_groups[0].initial_lr
        return arguments

    def _attach_torch_form(self, optimizer: Any) -> None:
        """Attach to ``optimizer`` after construction in torch's form."""
        self.attach_optimizer(optimizer)

    def _given_base(self) -> tuple | None:
        """The base lrs given to the constructor, or ``None`` (not given, or not used)."""
        return self._base_list if self._base_lr_given and not self._absolute else None

    def _rebase(self, lr: float) -> None:
        """Take ``lr`` as group 0's base lr (a composite's child, in torch's form)."""
        if not self._absolute:
            self._base_list = (lr,)

    def _tree(self) -> Iterator[LRScheduler]:
        """This scheduler and, for composites, every scheduler inside it."""
        yield self

    def _setup_states(self, start: int) -> None:
        """Create the counter, base and lr States at epoch ``start``."""
        self.optimizer = None
        self._parent: LRScheduler | None = None
        self._momentum_key: str | None = None
        self._compiled: Callable | None = None
        fresh = self._fresh(start)
        self.last_epoch = OptimState(fresh['last_epoch'])
        for name in self._extra_counters:
            setattr(self, name, OptimState(fresh[name]))
        bases = tuple(_f32(base) for base in self._base_list)
        groups = tuple(range(len(bases)))
        self._bases: OptimState | None = OptimState(bases)
        values = self._start({'lr': bases, 'momentum': None}, bases, groups, fresh)
        self._lrs: OptimState | None = OptimState(values['lr'])

    # -- the rule (pure; override) ------------------------------------------------------------
    def _closed(self, base: Any, epoch: Any, group: int) -> Any:
        """The lr of a group with base lr ``base`` at ``epoch``."""
        del epoch, group
        return base

    def _recursive(self, lr: Any, base: Any, epoch: Any, group: int) -> Any:
        """The lr after a step to ``epoch`` from ``lr`` (``epoch == 0``: the initial step)."""
        del lr
        return self._closed(base, epoch, group)

    def _momentum(self, state: dict, group: int) -> Any:
        """The momentum (or beta1) at ``state``, for schedulers that cycle it."""
        raise NotImplementedError

    @property
    def _cycles_momentum(self) -> bool:
        return False

    @property
    def _uses_metric(self) -> bool:
        return False

    def _fresh(self, epoch: int) -> dict:
        """The counters after ``epoch`` steps."""
        return {'last_epoch': jnp.asarray(epoch, I32)}

    def _advance(self, state: dict, values: dict, bases: tuple, groups: tuple,
                 epoch: Any = None, metric: Any = None) -> tuple[dict, dict]:
        """One step: ``(counters, {'lr': lrs, 'momentum': momenta})`` after it, purely."""
        del metric
        if epoch is None:
            epoch = optax.safe_increment(state['last_epoch'])
            lrs = tuple(self._recursive(lr, base, epoch, g)
                        for lr, base, g in zip(values['lr'], bases, groups))
        else:
            lrs = tuple(self._closed(base, epoch, g) for base, g in zip(bases, groups))
        state = {**state, 'last_epoch': jnp.asarray(epoch, I32)}
        return state, self._with_momentum(state, {**values, 'lr': tuple(map(_f32, lrs))}, groups)

    def _with_momentum(self, state: dict, values: dict, groups: tuple) -> dict:
        if not self._cycles_momentum or values['momentum'] is None:
            return values
        return {**values, 'momentum': tuple(_f32(self._momentum(state, g)) for g in groups)}

    def _start(self, values: dict, bases: tuple, groups: tuple, state: dict) -> dict:
        """``values`` for groups that join at ``state`` with base lrs ``bases``."""
        lrs = tuple(_f32(self._closed(base, state['last_epoch'], g)) for base, g in zip(bases, groups))
        return self._with_momentum(state, {**values, 'lr': lrs}, groups)

    def _begin(self, values: dict, bases: tuple, groups: tuple) -> dict:
        """torch's initial step, applied to the current ``values`` at epoch 0."""
        zero = jnp.asarray(0, I32)
        lrs = tuple(_f32(self._recursive(lr, base, zero, g))
                    for lr, base, g in zip(values['lr'], bases, groups))
        return self._with_momentum(self._fresh(0), {**values, 'lr': lrs}, groups)

    def _restart(self, values: dict, bases: tuple, groups: tuple) -> dict:
        """The values this scheduler sets when a SequentialLR switches to it."""
        return self._start(values, bases, groups, self._fresh(0))

    def _value(self, count: Any, base: Any) -> Any:
        """Group 0's lr at step ``count`` (the optax schedule)."""
        return self._closed(base, count, 0)

    def _group_base(self, group: int, initial_lr: float) -> float:
        return _pick(self._base_list, group) if self._absolute else initial_lr

    def _epoch_input(self, epoch: Any) -> Any:
        if is_traced(epoch):
            return jnp.asarray(epoch).astype(I32)
        return jnp.asarray(_int('epoch', epoch, 0), I32)

    # -- the States ---------------------------------------------------------------------------
    def _root(self) -> LRScheduler:
        return self if self._parent is None else self._parent._root()

    def _counters(self) -> dict:
        return {'last_epoch': self.last_epoch, **{name: getattr(self, name) for name in self._extra_counters}}

    def _state(self) -> dict:
        return jax.tree.map(lambda state: state.value, self._counters(), is_leaf=_is_state)

    def _write_state(self, state: dict) -> None:
        holders = jax.tree.leaves(self._counters(), is_leaf=_is_state)
        for holder, value in zip(holders, jax.tree.leaves(state)):
            holder.value = value

    def _read_values(self) -> dict:
        if self.optimizer is None:
            return {'lr': tuple(self._lrs.value), 'momentum': None}
        return _group_values(self.optimizer.param_groups, self._momentum_key)

    def _write_values(self, values: dict, groups: Sequence | None = None) -> None:
        if self.optimizer is None:
            self._lrs.value = tuple(values['lr'])
            return
        groups = self.optimizer.param_groups if groups is None else groups
        for group, lr in zip(groups, values['lr']):
            group._assign('lr', lr)
        for group, momentum in zip(groups, values['momentum'] or ()):
            if self._momentum_key == 'betas':
                group._assign('betas', (momentum, group['betas'][1]))
            else:
                group._assign('momentum', momentum)

    def _run(self, epoch: Any, metric: Any) -> None:
        """Step the whole scheduler: traced inline under a brainstate trace, else compiled."""
        if self.optimizer is not None:
            self._check_group_lists(len(self.optimizer.param_groups))
        state, values, bases = self._state(), self._read_values(), self._bases.value
        groups = tuple(range(len(bases)))
        if is_traced((state, values, bases)):      # the States are traced: a brainstate transform
            state, values = self._advance(state, values, bases, groups, epoch, metric)
        else:
            if inside_jax_transform(epoch, metric):
                raise brainstate.TraceContextError(
                    f'{type(self).__name__}.step was called inside a raw JAX transform (jax.jit, '
                    f'jax.vmap, jax.grad, ...), which cannot carry State updates out; nothing was '
                    f'changed. Use brainstate.transform.jit (or stateopt.donating_jit) instead')
            if self._compiled is None:
                self._compiled = jax.jit(self._advance, static_argnums=(3,))
            state, values = self._compiled(state, values, bases, groups, epoch, metric)
        self._write_state(state)
        self._write_values(values)

    def _require_root(self, action: str) -> None:
        if self._parent is not None:
            raise RuntimeError(f'this {type(self).__name__} is part of a {type(self._parent).__name__}; '
                               f'{action} the {type(self._parent).__name__} instead')

    # -- public API ---------------------------------------------------------------------------
    def step(self, epoch: int | None = None) -> None:
        """Advance one step, or jump to ``epoch`` (then the closed form gives the lr)."""
        self._require_root('step')
        self._run(None if epoch is None else self._epoch_input(epoch), None)

    def get_last_lr(self) -> list:
        """The lr of every group, as Python floats when concrete (torch's ``get_last_lr``)."""
        root = self._root()
        return [_to_python(lr) for lr in root._read_values()['lr']]

    @property
    def base_lr(self) -> float:
        """Group 0's base lr."""
        return self._base_list[0]

    @property
    def base_lrs(self) -> list:
        """The base lr of every group (torch's ``base_lrs``)."""
        return [_to_python(base) for base in self._root()._bases.value]

    def __call__(self, count: Any) -> jax.Array:
        """Group 0's lr at step ``count``: a scheduler is also an optax schedule."""
        return _f32(self._value(jnp.asarray(count), self._root()._bases.value[0]))

    def attach_optimizer(self, optimizer: Any) -> None:
        """Drive every param group of ``optimizer`` (done by ``OptimizerClass(lr=scheduler)``).

        Each group's lr becomes the schedule's value at the current step for that
        group's base lr; group 0 continues from this scheduler's own lr. Afterwards
        the groups' lr States are the only copy of the lrs.

        A per-group list (``max_lr=[...]``, ``min_lr=[...]``, ...) must have one value
        per group. While the optimizer has no parameters yet (``OptimizerClass(lr=
        scheduler)``) it may have more, for the groups still to be added; stepping
        checks that they all were.

        Raises
        ------
        TypeError
            ``optimizer`` is not a stateopt optimizer.
        ValueError
            The scheduler is attached elsewhere, the optimizer has another scheduler or a
            group with its own lr schedule, ``base_lr`` is a list (give each group its
            ``lr`` instead), a per-group list does not match the groups, or a group
            cannot vary the momentum this scheduler cycles. Nothing changes.
        """
        _check_optimizer(optimizer, f'{type(self).__name__}.attach_optimizer')
        self._require_root('attach')
        if self.optimizer is optimizer:
            return
        if self.optimizer is not None:
            raise ValueError(f'this {type(self).__name__} is already attached to another optimizer')
        if optimizer._scheduler not in (None, self):
            raise ValueError(
                f'the optimizer is already driven by a {type(optimizer._scheduler).__name__}, and an '
                f'optimizer has one lr scheduler. To combine schedulers, build them without the optimizer '
                f'and give it to the composite: SequentialLR(optimizer, [first, second, ...], '
                f'milestones=[...]) or ChainedScheduler([first, second, ...], optimizer)')
        if not self._absolute and len(self._base_list) > 1:
            raise ValueError(
                f'base_lr={list(self._base_list)} gives one lr per group, but an attached scheduler '
                f'takes each group\'s base lr from the group: pass base_lr={self._base_list[0]} and '
                f'add_param_group(states, lr=...) for the others')
        groups = optimizer.param_groups
        for group in groups:
            if group._lr_schedule is not None:
                raise ValueError(
                    f'param group {group.index} has its own lr schedule (lr={group._lr_schedule!r}), which a '
                    f'scheduler cannot drive; give the optimizer a number lr (torch\'s form takes it as the '
                    f'base lr), or pass the scheduler as its lr=')
        self._check_group_lists(len(groups), pending=not any(group.names for group in groups))
        key = None
        if self._cycles_momentum:
            hyperparams = optimizer._hyperparams
            key = 'betas' if 'betas' in hyperparams else 'momentum' if 'momentum' in hyperparams else None
        bases = tuple(_f32(self._group_base(g, self.base_lr if g == 0 else group.initial_lr))
                      for g, group in enumerate(groups))
        values = self._start(_group_values(groups, key), bases, tuple(range(len(groups))), self._state())
        add_buffers = getattr(optimizer, '_add_momentum_buffers', None) if key == 'momentum' else None
        if key == 'momentum' and add_buffers is None:
            self._check_momentum(optimizer, groups, values['momentum'])
        own = tuple(self._lrs.value)
        optimizer._scheduler = self
        self.optimizer, self._momentum_key = optimizer, key
        self._bases.value = bases
        self._lrs = None
        self._write_values({**values, 'lr': own + values['lr'][len(own):]})
        if add_buffers is not None:
            add_buffers()
        self._bind_children(optimizer)

    def _group_lists(self) -> dict[str, int]:
        """The per-group list parameters given as lists, ``{name: number of values}``."""
        return dict(self._listed)

    def _check_group_lists(self, groups: int, pending: bool = False) -> None:
        """Refuse a per-group list without one value per group (``pending``: more may come)."""
        for name, count in self._group_lists().items():
            if count < groups or (count > groups and not pending):
                raise ValueError(
                    f'{type(self).__name__}: {name} has {count} values (one per param group), but the '
                    f'optimizer has {groups} param group{"s" if groups != 1 else ""}; give one value per '
                    f'group, or a single value for all groups')

    def _check_momentum(self, optimizer: Any, groups: Sequence, momenta: tuple) -> None:
        """Refuse groups whose state cannot follow a cycled momentum (see ``_check_assignment``)."""
        for group, momentum in zip(groups, momenta):
            if is_traced(momentum):
                continue
            try:
                optimizer._check_assignment(group, 'momentum', float(momentum))
            except ValueError as err:
                raise ValueError(f'{type(self).__name__} cycles the momentum (cycle_momentum=True), '
                                 f'but {err}; or pass cycle_momentum=False') from err

    def _bind_children(self, optimizer: Any) -> None:
        """Composites point their children at ``optimizer``."""

    def _check_new_group(self, hyperparams: Mapping) -> None:
        """Refuse, before the optimizer adds it, a group this scheduler cannot drive.

        That is a group past the end of a per-group list, or one with ``momentum=0``
        when this scheduler cycles the momentum and the optimizer keeps no momentum
        buffer for it.
        """
        groups = len(self.optimizer.param_groups)
        for name, count in self._group_lists().items():
            if count <= groups:
                raise ValueError(
                    f'{type(self).__name__}: {name} has {count} values (one per param group) and the '
                    f'optimizer already has {groups} param group{"s" if groups != 1 else ""}, so a new group '
                    f'would have none; list one value per group when building the scheduler, or give a '
                    f'single value for all groups')
        if self._momentum_key == 'momentum' and hyperparams.get('momentum') == 0 and \
                not hasattr(self.optimizer, '_add_momentum_buffers'):
            raise ValueError(f'{type(self).__name__} cycles the momentum (cycle_momentum=True), but the new '
                             f'group has momentum=0 and would keep no momentum buffer; give it momentum > 0 '
                             f'or pass cycle_momentum=False')

    def _group_added(self, group: Any) -> None:
        """Called by the optimizer after ``add_param_group``: schedule the new group."""
        index = group.index
        base = _f32(self._group_base(index, group.initial_lr))
        self._bases.value = (*self._bases.value, base)
        values = self._read_values()
        mine = {'lr': values['lr'][index:index + 1],
                'momentum': None if values['momentum'] is None else values['momentum'][index:index + 1]}
        values = self._start(mine, (base,), (index,), self._state())
        self._write_values(values, [group])
        if self._momentum_key == 'momentum':
            self._check_momentum(self.optimizer, [group], values['momentum'])

    def state_dict(self) -> dict:
        """The counters, every group's base lr and current lr, as arrays.

        A scheduler inside a SequentialLR or ChainedScheduler has only its own counters
        (the composite's ``state_dict()['schedulers'][i]``): the lrs belong to the
        composite, which (or whose optimizer) a checkpoint should hold.
        """
        if self._parent is not None:
            return self._state()
        return {**self._state(), 'base_lrs': list(self._bases.value),
                'lrs': list(self._read_values()['lr'])}

    def check_state_dict(self, state_dict: Any) -> None:
        """Raise ``KeyError`` or ``ValueError`` naming the entry unless ``state_dict`` fits."""
        if self._parent is not None:
            self._checked_counters(state_dict)
        else:
            self._check_state_dict(state_dict)

    def _checked_counters(self, state_dict: Any, where: str = 'lr_scheduler') -> dict:
        """A composite's child's state dict (its own counters), checked; raise on any mismatch."""
        checked = _checked_tree(where, state_dict, self._state())
        check_number(f"{where}['last_epoch']", checked['last_epoch'], low=0)
        return checked

    def _check_state_dict(self, state_dict: Any, where: str = 'lr_scheduler') -> dict:
        """The values of ``state_dict``, checked against this scheduler; raise on any mismatch."""
        if not isinstance(state_dict, Mapping):
            raise ValueError(f'{where} must be a dict, got {described(state_dict)}')
        checked = _checked_tree(where, state_dict, self.state_dict())
        for key in ('base_lrs', 'lrs'):
            for i, lr in enumerate(checked[key]):
                check_number(f'{where}[{key!r}][{i}]', lr, low=0.0)
        check_number(f"{where}['last_epoch']", checked['last_epoch'], low=0)
        return checked

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore :meth:`state_dict` output, after checking all of it (nothing changes on error).

        A scheduler inside a SequentialLR or ChainedScheduler restores its own counters only.
        """
        if self._parent is not None:
            self._write_state(self._checked_counters(state_dict))
            return
        checked = self._check_state_dict(state_dict)
        self._write_state({key: value for key, value in checked.items() if key not in ('base_lrs', 'lrs')})
        self._bases.value = tuple(checked['base_lrs'])
        self._write_values({'lr': tuple(checked['lrs']), 'momentum': None})

    # -- plotting support -----------------------------------------------------------------------
    def _trajectory(self, steps: int) -> np.ndarray:
        """Every group's lr at steps ``0 .. steps - 1`` from a fresh start, shape (steps, groups)."""
        bases = self._root()._bases.value
        groups = tuple(range(len(bases)))

        def run(bases):
            values = self._begin({'lr': bases, 'momentum': None}, bases, groups)

            def body(carry, _):
                state, values = carry
                new = self._advance(state, values, bases, groups)
                return _like(new, carry), values['lr']

            return jax.lax.scan(body, (self._fresh(0), values), None, length=steps)[1]

        return np.stack([np.asarray(lr) for lr in jax.jit(run)(bases)], axis=1)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(base_lr={_to_python(self.base_lr)!r}, '
                f'last_epoch={_to_python(self.last_epoch.value)!r})')


def _checked_tree(where: str, saved: Any, template: Any) -> Any:
    """``saved`` with ``template``'s structure, shapes and dtypes, or an error naming the entry."""
    if isinstance(template, Mapping):
        if not isinstance(saved, Mapping):
            raise ValueError(f'{where} must be a dict, got {described(saved)}')
        missing = [f'{where}[{key!r}]' for key in template if key not in saved]
        if missing:
            raise StateDictKeyError(f'{", ".join(missing)} is missing from the scheduler state')
        extra = [f'{where}[{key!r}]' for key in sorted(set(saved) - set(template), key=repr)]
        if extra:
            raise StateDictKeyError(f'{", ".join(extra)}: not an entry of this scheduler\'s state; its '
                                    f'entries are {", ".join(map(repr, template))}')
        return {key: _checked_tree(f'{where}[{key!r}]', saved[key], sub) for key, sub in template.items()}
    if isinstance(template, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(template):
            raise ValueError(f'{where} must be a list of {len(template)} entries (one per param group or '
                             f'scheduler), got {described(saved)}')
        return [_checked_tree(f'{where}[{i}]', s, t) for i, (s, t) in enumerate(zip(saved, template))]
    return checked_array(where, saved, template)


# -- torch's schedulers ------------------------------------------------------------------------------

class StepLR(LRScheduler):
    r"""Decay the lr by ``gamma`` every ``step_size`` steps (torch.optim.lr_scheduler.StepLR).

    ``lr_t = b_g * gamma ** floor(t / step_size)``; stepping multiplies the group's
    current lr by ``gamma`` at every multiple of ``step_size`` (torch's chainable form).

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.StepLR(base_lr=0.1, step_size=2, gamma=0.5)
    >>> [round(float(sched(t)), 6) for t in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, step_size: int = 30, gamma: float = 0.1, last_epoch: int = 0):
        self.step_size = _int('step_size', step_size, 1)
        self.gamma = check_number('gamma', gamma, low=0.0)
        super().__init__(base_lr, last_epoch)

    def _closed(self, base, epoch, group):
        return base * jnp.power(_f32(self.gamma), epoch // self.step_size)

    def _recursive(self, lr, base, epoch, group):
        return jnp.where((epoch > 0) & (epoch % self.step_size == 0), lr * self.gamma, lr)


class MultiStepLR(LRScheduler):
    r"""Decay the lr by ``gamma`` at each milestone (torch.optim.lr_scheduler.MultiStepLR).

    ``lr_t = b_g * gamma ** (number of milestones <= t)``; a milestone listed twice
    decays twice.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.MultiStepLR(base_lr=1.0, milestones=[1, 3], gamma=0.1)
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [1.0, 0.1, 0.1, 0.01]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, milestones: Sequence[int] = (30, 60, 90), gamma: float = 0.1,
                 last_epoch: int = 0):
        if not isinstance(milestones, (list, tuple)):
            raise ValueError(f'milestones must be a list of integers, got {milestones!r}')
        self.milestones = sorted(_int(f'milestones[{i}]', m, 0) for i, m in enumerate(milestones))
        self.gamma = check_number('gamma', gamma, low=0.0)
        super().__init__(base_lr, last_epoch)

    def _count(self, epoch, reached: Callable) -> jax.Array:
        if not self.milestones:
            return jnp.zeros((), I32)
        return jnp.sum(reached(jnp.asarray(self.milestones, I32), epoch)).astype(I32)

    def _closed(self, base, epoch, group):
        return base * jnp.power(_f32(self.gamma), self._count(epoch, jnp.less_equal))

    def _recursive(self, lr, base, epoch, group):
        return lr * jnp.power(_f32(self.gamma), self._count(epoch, jnp.equal))


class ConstantLR(LRScheduler):
    r"""Scale the lr by ``factor`` for the first ``total_iters`` steps (torch's ConstantLR).

    ``lr_t = b_g * factor`` for ``t < total_iters``, then ``b_g``; stepping divides the
    current lr by ``factor`` at ``total_iters``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.ConstantLR(base_lr=0.1, factor=0.5, total_iters=2)
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [0.05, 0.05, 0.1, 0.1]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, factor: float = 1.0 / 3, total_iters: int = 5,
                 last_epoch: int = 0):
        self.factor = check_number('factor', factor, low=0.0, high=1.0, low_open=True)
        self.total_iters = _int('total_iters', total_iters, 1)
        super().__init__(base_lr, last_epoch)

    def _closed(self, base, epoch, group):
        return base * jnp.where(epoch < self.total_iters, self.factor, 1.0)

    def _recursive(self, lr, base, epoch, group):
        restore = jnp.where(epoch == self.total_iters, 1.0 / self.factor, 1.0)
        return lr * jnp.where(epoch == 0, self.factor, restore)


class LinearLR(LRScheduler):
    r"""Scale the lr linearly from ``start_factor`` to ``end_factor`` (torch's LinearLR).

    ``lr_t = b_g * (s + (e - s) * min(t, total_iters) / total_iters)`` with ``s, e`` the
    start and end factors; stepping applies torch's ratio of consecutive factors.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.LinearLR(base_lr=0.1, start_factor=0.5, total_iters=2)
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [0.05, 0.075, 0.1, 0.1]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = 0):
        self.start_factor = check_number('start_factor', start_factor, low=0.0, high=1.0, low_open=True)
        self.end_factor = check_number('end_factor', end_factor, low=0.0, high=1.0)
        self.total_iters = _int('total_iters', total_iters, 1)
        super().__init__(base_lr, last_epoch)

    def _closed(self, base, epoch, group):
        done = jnp.minimum(epoch, self.total_iters) / self.total_iters
        return base * (self.start_factor + (self.end_factor - self.start_factor) * done)

    def _recursive(self, lr, base, epoch, group):
        change = self.end_factor - self.start_factor
        ratio = 1.0 + change / (self.total_iters * self.start_factor + (epoch - 1) * change)
        return jnp.where(epoch == 0, lr * self.start_factor,
                         jnp.where(epoch > self.total_iters, lr, lr * ratio))


class ExponentialLR(LRScheduler):
    r"""Decay the lr by ``gamma`` every step (torch.optim.lr_scheduler.ExponentialLR).

    ``lr_t = b_g * gamma ** t``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.ExponentialLR(base_lr=1.0, gamma=0.5)
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [1.0, 0.5, 0.25, 0.125]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, gamma: float = 0.95, last_epoch: int = 0):
        self.gamma = check_number('gamma', gamma, low=0.0)
        super().__init__(base_lr, last_epoch)

    def _closed(self, base, epoch, group):
        return base * jnp.power(_f32(self.gamma), epoch)

    def _recursive(self, lr, base, epoch, group):
        return jnp.where(epoch == 0, lr, lr * self.gamma)


class PolynomialLR(LRScheduler):
    r"""Decay the lr polynomially to zero over ``total_iters`` steps (torch's PolynomialLR).

    ``lr_t = b_g * (1 - min(t, total_iters) / total_iters) ** power``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.PolynomialLR(base_lr=0.1, total_iters=4, power=2.0)
    >>> [round(float(sched(t)), 6) for t in range(6)]
    [0.1, 0.05625, 0.025, 0.00625, 0.0, 0.0]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, total_iters: int = 5, power: float = 1.0, last_epoch: int = 0):
        self.total_iters = _int('total_iters', total_iters, 1)
        self.power = check_number('power', power, low=0.0)
        super().__init__(base_lr, last_epoch)

    def _closed(self, base, epoch, group):
        remaining = (self.total_iters - jnp.minimum(epoch, self.total_iters)) / self.total_iters
        return base * jnp.power(_f32(remaining), self.power)

    def _recursive(self, lr, base, epoch, group):
        left = _f32(self.total_iters - epoch)
        ratio = jnp.power(left / jnp.maximum(left + 1, 1), self.power)
        return jnp.where((epoch == 0) | (epoch > self.total_iters), lr, lr * ratio)


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from ``b_g`` to ``eta_min`` over ``T_max`` steps (torch's CosineAnnealingLR).

    ``lr_t = eta_min + (b_g - eta_min) * (1 + cos(pi t / T_max)) / 2``; past ``T_max`` the
    cosine continues, rising back to ``b_g`` at ``2 T_max``, as torch's. Stepping uses
    torch's recursive form, which continues from the group's current lr.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.CosineAnnealingLR(base_lr=1.0, T_max=2)
    >>> [round(float(sched(t)), 6) for t in range(5)]
    [1.0, 0.5, 0.0, 0.5, 1.0]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, T_max: int = 50, eta_min: float = 0.0, last_epoch: int = 0):
        self.T_max = _int('T_max', T_max, 1)
        self.eta_min = check_number('eta_min', eta_min, low=0.0)
        super().__init__(base_lr, last_epoch)

    def _closed(self, base, epoch, group):
        return self.eta_min + (base - self.eta_min) * _cos_weight(epoch, self.T_max)

    def _recursive(self, lr, base, epoch, group):
        before = _cos_weight(epoch - 1, self.T_max)
        at_bottom = before == 0  # torch's branch (t - 1 - T_max) % (2 T_max) == 0
        ratio = _cos_weight(epoch, self.T_max) / jnp.where(at_bottom, 1.0, before)
        rise = lr + (base - self.eta_min) * _cos_weight(self.T_max - 1, self.T_max)
        stepped = jnp.where(at_bottom, rise, ratio * (lr - self.eta_min) + self.eta_min)
        return jnp.where(epoch == 0, lr, stepped)


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing with warm restarts (SGDR; torch's CosineAnnealingWarmRestarts).

    ``lr = eta_min + (b_g - eta_min) * (1 + cos(pi T_cur / T_i)) / 2``, where ``T_cur``
    counts the steps since the last restart and the ``i``-th cycle lasts
    ``T_i = T_0 * T_mult ** i`` steps. ``step(epoch)`` accepts fractional epochs.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.CosineAnnealingWarmRestarts(base_lr=1.0, T_0=2, T_mult=2)
    >>> [round(float(sched(t)), 6) for t in range(7)]
    [1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0]
    """

    __module__ = 'stateopt'
    _extra_counters = ('T_cur', 'T_i')

    def __init__(self, base_lr: LRs = 1e-3, T_0: int = 10, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = 0):
        self.T_0 = _int('T_0', T_0, 1)
        self.T_mult = _int('T_mult', T_mult, 1)
        self.eta_min = check_number('eta_min', eta_min, low=0.0)
        starts, lengths, cycle = [0], [self.T_0], self.T_0
        while self.T_mult > 1 and starts[-1] + cycle * self.T_mult < 2 ** 31:
            starts.append(starts[-1] + cycle)
            cycle *= self.T_mult
            lengths.append(cycle)
        self._cycle_starts, self._cycle_lengths = starts, lengths
        super().__init__(base_lr, last_epoch)

    def _position(self, epoch: Any) -> tuple[jax.Array, jax.Array]:
        """``(T_cur, T_i)`` at ``epoch`` (an integer or fractional epoch)."""
        epoch = _f32(epoch)
        if self.T_mult == 1:
            return jnp.mod(epoch, self.T_0), jnp.asarray(self.T_0, I32)
        cycle = jnp.sum(epoch >= jnp.asarray(self._cycle_starts[1:], F32)).astype(I32)
        start = jnp.asarray(self._cycle_starts, F32)[cycle]
        return epoch - start, jnp.asarray(self._cycle_lengths, I32)[cycle]

    def _fresh(self, epoch):
        t_cur, t_i = self._position(epoch)
        return {'last_epoch': jnp.asarray(epoch, I32), 'T_cur': t_cur, 'T_i': t_i}

    def _lr(self, base, state):
        return self.eta_min + (base - self.eta_min) * _cos_weight(state['T_cur'], state['T_i'])

    def _closed(self, base, epoch, group):
        return self._lr(base, self._fresh(epoch))

    def _start(self, values, bases, groups, state):
        return {**values, 'lr': tuple(_f32(self._lr(base, state)) for base in bases)}

    def _begin(self, values, bases, groups):
        return self._start(values, bases, groups, self._fresh(0))

    def _epoch_input(self, epoch):
        if is_traced(epoch):
            return _f32(epoch)
        return _f32(check_number('epoch', epoch, low=0.0))

    def _advance(self, state, values, bases, groups, epoch=None, metric=None):
        if epoch is None:
            t_cur = state['T_cur'] + 1
            restart = t_cur >= state['T_i']
            state = {'last_epoch': optax.safe_increment(state['last_epoch']),
                     'T_cur': jnp.where(restart, jnp.mod(t_cur, _f32(state['T_i'])), t_cur),
                     'T_i': jnp.where(restart, state['T_i'] * self.T_mult, state['T_i'])}
        else:
            t_cur, t_i = self._position(epoch)
            state = {'last_epoch': jnp.floor(epoch).astype(I32), 'T_cur': t_cur, 'T_i': t_i}
        return state, self._start(values, bases, groups, state)


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

    def _closed(self, base, epoch, group):
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

    def _closed(self, base, epoch, group):
        return jax.lax.fori_loop(1, jnp.asarray(epoch, I32) + 1,
                                 lambda i, lr: lr * self._factor(i, group), _f32(base))

    def _recursive(self, lr, base, epoch, group):
        return jnp.where(epoch == 0, lr, lr * self._factor(epoch, group))

    def _restart(self, values, bases, groups):
        zero = jnp.asarray(0, I32)
        return {**values, 'lr': tuple(lr * self._factor(zero, g) for lr, g in zip(values['lr'], groups))}


class _CyclesMomentum(LRScheduler):
    """Schedulers that set absolute lrs and cycle the momentum (or Adam's beta1) with them."""

    _absolute = True

    @property
    def _cycles_momentum(self) -> bool:
        return self.cycle_momentum

    def _set_momenta(self, cycle_momentum: bool, base_momentum: Any, max_momentum: Any) -> None:
        if not isinstance(cycle_momentum, bool):
            raise ValueError(f'cycle_momentum must be True or False, got {cycle_momentum!r}')
        self.cycle_momentum = cycle_momentum
        self.base_momentums = self._per_group_param('base_momentum', base_momentum, low=0.0, high=1.0)
        self.max_momentums = self._per_group_param('max_momentum', max_momentum, low=0.0, high=1.0)


class OneCycleLR(_CyclesMomentum):
    r"""The 1cycle policy (torch.optim.lr_scheduler.OneCycleLR).

    The lr anneals from ``max_lr / div_factor`` up to ``max_lr`` over the first
    ``pct_start * total_steps - 1`` steps, then down to ``max_lr / div_factor /
    final_div_factor`` at step ``total_steps - 1`` (``three_phase``: up, back down to the
    initial lr, then to the final lr). Each phase anneals by
    ``end + (start - end) (1 + cos(pi p)) / 2`` (``'cos'``) or linearly, with ``p`` the
    fraction of the phase done. The momentum (or Adam's beta1) cycles the opposite way
    between ``max_momentum`` and ``base_momentum`` when the optimizer has one. The lrs
    are absolute, as in torch: ``max_lr`` (one value, or one per group) sets every
    group's. From step ``total_steps - 1`` on the lr stays at the final lr (torch
    extrapolates the last phase at ``total_steps``, possibly below zero, then raises).

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.OneCycleLR(max_lr=1.0, total_steps=5, pct_start=0.4,
    ...                             anneal_strategy='linear', div_factor=10.0, final_div_factor=10.0)
    >>> [round(float(sched(t)), 6) for t in range(5)]
    [0.1, 1.0, 0.67, 0.34, 0.01]
    """

    __module__ = 'stateopt'
    _torch_params = ('max_lr', 'total_steps', 'epochs', 'steps_per_epoch', 'pct_start', 'anneal_strategy',
                     'cycle_momentum', 'base_momentum', 'max_momentum', 'div_factor', 'final_div_factor',
                     'three_phase', 'last_epoch')

    def __init__(self, max_lr: LRs = 0.01, total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3, anneal_strategy: str = 'cos',
                 div_factor: float = 25.0, final_div_factor: float = 1e4, last_epoch: int = 0, *,
                 three_phase: bool = False, cycle_momentum: bool = True,
                 base_momentum: LRs = 0.85, max_momentum: LRs = 0.95):
        if total_steps is not None:
            self.total_steps = _int('total_steps', total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = _int('epochs', epochs, 1) * _int('steps_per_epoch', steps_per_epoch, 1)
        else:
            raise ValueError('OneCycleLR needs total_steps, or both epochs and steps_per_epoch')
        self.max_lrs = self._per_group_param('max_lr', max_lr, low=0.0, low_open=True)
        self.pct_start = check_number('pct_start', pct_start, low=0.0, high=1.0)
        self.anneal_strategy = _choice('anneal_strategy', anneal_strategy, ('cos', 'linear'))
        self.div_factor = check_number('div_factor', div_factor, low=0.0, low_open=True)
        self.final_div_factor = check_number('final_div_factor', final_div_factor, low=0.0, low_open=True)
        if not isinstance(three_phase, bool):
            raise ValueError(f'three_phase must be True or False, got {three_phase!r}')
        self.three_phase = three_phase
        self._set_momenta(cycle_momentum, base_momentum, max_momentum)
        warm = float(self.pct_start * self.total_steps) - 1
        ends = [warm, 2 * warm, self.total_steps - 1.0] if three_phase else [warm, self.total_steps - 1.0]
        starts = [0.0, *ends[:-1]]
        if any(end == start for start, end in zip(starts, ends)):
            raise ValueError(f'pct_start={pct_start!r} with total_steps={self.total_steps} gives a phase '
                             f'of zero steps; change pct_start')
        self._phases = list(zip(starts, ends))
        super().__init__([m / self.div_factor for m in self.max_lrs], last_epoch)

    def _anneal(self, start, end, epoch, first, last):
        if self.anneal_strategy == 'cos':
            return end + (start - end) * jnp.square(jnp.sin(jnp.pi / 2 * (last - epoch) / (last - first)))
        return start + (end - start) * (epoch - first) / (last - first)

    def _along(self, points: list, epoch: Any) -> jax.Array:
        """The value at ``epoch`` annealing through ``points`` (one per phase boundary)."""
        epoch = _f32(epoch)
        first, last = self._phases[-1]
        value = self._anneal(points[-2], points[-1], epoch, first, last)
        for i in reversed(range(len(self._phases) - 1)):
            first, last = self._phases[i]
            phase = self._anneal(points[i], points[i + 1], epoch, first, last)
            value = jnp.where(epoch <= last, phase, value)
        return jnp.where(epoch >= self.total_steps - 1, points[-1], value)

    def _closed(self, base, epoch, group):
        peak = _pick(self.max_lrs, group)
        initial = peak / self.div_factor
        points = [initial, peak, initial] if self.three_phase else [initial, peak]
        return self._along([*points, initial / self.final_div_factor], epoch)

    def _momentum(self, state, group):
        low, high = _pick(self.base_momentums, group), _pick(self.max_momentums, group)
        points = [high, low, high, high] if self.three_phase else [high, low, high]
        return self._along(points, state['last_epoch'])


class CyclicLR(_CyclesMomentum):
    r"""Cyclical learning rates (torch.optim.lr_scheduler.CyclicLR).

    With ``C = step_size_up + step_size_down``, cycle ``c = 1 + floor(t / C)`` and
    ``x = (t mod C)``, the height is ``h = x / step_size_up`` while rising and
    ``(C - x) / step_size_down`` while falling, and ``lr = base_lr + (max_lr - base_lr) * h
    * s``, with ``s = 1`` (``'triangular'``), ``1 / 2 ** (c - 1)`` (``'triangular2'``),
    ``gamma ** t`` (``'exp_range'``) or ``scale_fn`` of ``c`` or ``t`` (by ``scale_mode``).
    The momentum cycles as ``max_momentum - (max_momentum - base_momentum) * h * s`` when
    the optimizer has one. The lrs are absolute, as in torch: ``base_lr`` and ``max_lr``
    (one value, or one per group) set every group's.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.CyclicLR(base_lr=0.1, max_lr=0.5, step_size_up=2, mode='triangular2')
    >>> [round(float(sched(t)), 6) for t in range(7)]
    [0.1, 0.3, 0.5, 0.3, 0.1, 0.2, 0.3]
    """

    __module__ = 'stateopt'
    _torch_params = ('base_lr', 'max_lr', 'step_size_up', 'step_size_down', 'mode', 'gamma', 'scale_fn',
                     'scale_mode', 'cycle_momentum', 'base_momentum', 'max_momentum', 'last_epoch')

    def __init__(self, base_lr: LRs = 1e-3, max_lr: LRs = 0.01, step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = 'triangular', gamma: float = 1.0,
                 scale_fn: Callable | None = None, scale_mode: str = 'cycle', last_epoch: int = 0, *,
                 cycle_momentum: bool = True, base_momentum: LRs = 0.8, max_momentum: LRs = 0.9):
        self._per_group_param('base_lr', base_lr, low=0.0)
        self.max_lrs = self._per_group_param('max_lr', max_lr, low=0.0)
        self.step_size_up = _int('step_size_up', step_size_up, 1)
        self.step_size_down = self.step_size_up if step_size_down is None else \
            _int('step_size_down', step_size_down, 1)
        if scale_fn is None:
            self.mode = _choice('mode', mode, ('triangular', 'triangular2', 'exp_range'))
            scale_mode = 'iterations' if mode == 'exp_range' else 'cycle'
        elif not callable(scale_fn):
            raise ValueError(f'scale_fn must be a function or None, got {scale_fn!r}')
        else:
            self.mode = mode
        self.scale_fn = scale_fn
        self.scale_mode = _choice('scale_mode', scale_mode, ('cycle', 'iterations'))
        self.gamma = check_number('gamma', gamma, low=0.0, low_open=True)
        self._set_momenta(cycle_momentum, base_momentum, max_momentum)
        super().__init__(base_lr, last_epoch)

    def _height(self, epoch: Any) -> jax.Array:
        """``h * s`` at ``epoch``."""
        epoch = jnp.asarray(epoch, I32)
        size = self.step_size_up + self.step_size_down
        cycle = epoch // size + 1
        position = _f32(epoch % size)
        rising = position <= self.step_size_up
        height = jnp.where(rising, position / self.step_size_up, (size - position) / self.step_size_down)
        if self.scale_fn is not None:
            scale = self.scale_fn(cycle if self.scale_mode == 'cycle' else epoch)
        elif self.mode == 'triangular':
            scale = 1.0
        elif self.mode == 'triangular2':
            scale = jnp.power(_f32(0.5), cycle - 1)
        else:
            scale = jnp.power(_f32(self.gamma), epoch)
        return height * _f32(scale)

    def _closed(self, base, epoch, group):
        low, high = _pick(self._base_list, group), _pick(self.max_lrs, group)
        return low + (high - low) * self._height(epoch)

    def _momentum(self, state, group):
        low, high = _pick(self.base_momentums, group), _pick(self.max_momentums, group)
        return high - (high - low) * self._height(state['last_epoch'])


class ReduceLROnPlateau(LRScheduler):
    r"""Reduce the lr when a metric stops improving (torch.optim.lr_scheduler.ReduceLROnPlateau).

    ``step(metric)``: a metric better than ``best`` (for ``mode='min'``: below
    ``best * (1 - threshold)``, or ``best - threshold`` with ``threshold_mode='abs'``)
    becomes ``best`` and resets the count of bad steps; otherwise the count grows.
    During ``cooldown`` steps after a reduction the count stays 0. When it exceeds
    ``patience``, each group's lr becomes ``max(lr * factor, min_lr_g)`` if that lowers
    it by more than ``eps``. The comparisons and counters are ``jnp`` operations, so
    this steps inside ``jit`` (and inside SequentialLR and ChainedScheduler).

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.ReduceLROnPlateau(base_lr=1.0, factor=0.5, patience=1)
    >>> for loss in [1.0, 1.0, 1.0, 1.0, 1.0]:
    ...     sched.step(loss)
    >>> sched.get_last_lr()
    [0.25]
    """

    __module__ = 'stateopt'
    _extra_counters = ('best', 'num_bad_epochs', 'cooldown_counter')
    _torch_params = ('mode', 'factor', 'patience', 'threshold', 'threshold_mode', 'cooldown', 'min_lr', 'eps')

    def __init__(self, base_lr: LRs = 1e-3, mode: str = 'min', factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = 'rel', cooldown: int = 0,
                 min_lr: LRs = 0.0, eps: float = 1e-8, last_epoch: int = 0):
        self.mode = _choice('mode', mode, ('min', 'max'))
        self.factor = check_number('factor', factor, low=0.0, high=1.0, high_open=True)
        self.patience = _int('patience', patience, 0)
        self.threshold = check_number('threshold', threshold, low=0.0)
        self.threshold_mode = _choice('threshold_mode', threshold_mode, ('rel', 'abs'))
        self.cooldown = _int('cooldown', cooldown, 0)
        self.min_lrs = self._per_group_param('min_lr', min_lr, low=0.0)
        self.eps = check_number('eps', eps, low=0.0)
        super().__init__(base_lr, last_epoch)

    @property
    def _uses_metric(self) -> bool:
        return True

    def _fresh(self, epoch):
        worst = math.inf if self.mode == 'min' else -math.inf
        return {'last_epoch': jnp.asarray(epoch, I32), 'best': _f32(worst),
                'num_bad_epochs': jnp.asarray(0, I32), 'cooldown_counter': jnp.asarray(0, I32)}

    def _closed(self, base, epoch, group):
        return base

    def _recursive(self, lr, base, epoch, group):
        return lr

    def _value(self, count, base):
        return self._root()._read_values()['lr'][0]

    def _is_better(self, metric, best):
        sign = 1.0 if self.mode == 'max' else -1.0
        if self.threshold_mode == 'rel':
            return sign * metric > sign * best * (1.0 + sign * self.threshold)
        return sign * metric > sign * best + self.threshold

    def _advance(self, state, values, bases, groups, epoch=None, metric=None):
        epoch = optax.safe_increment(state['last_epoch']) if epoch is None else epoch
        if metric is None:  # a schedule preview: no metric, no reduction
            return {**state, 'last_epoch': epoch}, values
        better = self._is_better(metric, state['best'])
        bad = jnp.where(better, 0, state['num_bad_epochs'] + 1)
        cooling = state['cooldown_counter'] > 0
        cooldown = jnp.where(cooling, state['cooldown_counter'] - 1, state['cooldown_counter'])
        bad = jnp.where(cooling, 0, bad)
        reduce = bad > self.patience
        lrs = []
        for lr, g in zip(values['lr'], groups):
            lowered = jnp.maximum(lr * self.factor, _pick(self.min_lrs, g))
            lrs.append(jnp.where(reduce & (lr - lowered > self.eps), lowered, lr))
        state = {'last_epoch': jnp.asarray(epoch, I32), 'best': jnp.where(better, metric, state['best']),
                 'num_bad_epochs': jnp.where(reduce, 0, bad),
                 'cooldown_counter': jnp.where(reduce, self.cooldown, cooldown)}
        return state, {**values, 'lr': tuple(lrs)}

    def step(self, metric: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Observe ``metric`` (a scalar, traced or not) and reduce the lrs on a plateau."""
        self._require_root('step')
        self._run(None if epoch is None else self._epoch_input(epoch), _metric_input(metric))


def _metric_input(metric: Any) -> jax.Array:
    if metric is None:
        raise ValueError('this scheduler reduces the lr on a plateau of a metric: call step(metric)')
    value = jnp.asarray(metric, F32)
    if value.shape != ():
        raise ValueError(f'metric must be a scalar, got an array of shape {value.shape}')
    return value


# -- schedules from braintools and optax -------------------------------------------------------------

class ExponentialDecayLR(LRScheduler):
    r"""optax's exponential decay, with an optional staircase and floor (or ceiling).

    ``lr_t = b_g * decay_rate ** (max(t - transition_begin, 0) / decay_steps)``, the
    exponent floored when ``staircase``; ``end_value`` bounds it (below when
    ``decay_rate < 1``, above otherwise).

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.ExponentialDecayLR(base_lr=1.0, decay_steps=2, decay_rate=0.25, staircase=True)
    >>> [round(float(sched(t)), 6) for t in range(5)]
    [1.0, 1.0, 0.25, 0.25, 0.0625]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, decay_steps: int = 1000, decay_rate: float = 0.96,
                 transition_begin: int = 0, staircase: bool = False, end_value: float | None = None,
                 last_epoch: int = 0):
        self.decay_steps = _int('decay_steps', decay_steps, 1)
        self.decay_rate = check_number('decay_rate', decay_rate, low=0.0, low_open=True)
        self.transition_begin = _int('transition_begin', transition_begin, 0)
        if not isinstance(staircase, bool):
            raise ValueError(f'staircase must be True or False, got {staircase!r}')
        self.staircase = staircase
        self.end_value = None if end_value is None else check_number('end_value', end_value, low=0.0)
        super().__init__(base_lr, last_epoch)

    def _closed(self, base, epoch, group):
        exponent = _f32(jnp.maximum(epoch - self.transition_begin, 0)) / self.decay_steps
        lr = base * jnp.power(_f32(self.decay_rate), jnp.floor(exponent) if self.staircase else exponent)
        if self.end_value is None:
            return lr
        bound = jnp.maximum if self.decay_rate < 1 else jnp.minimum
        return bound(lr, self.end_value)


class WarmupScheduler(LRScheduler):
    r"""Linear warm-up from ``warmup_start_lr`` to the base lr, then constant.

    ``lr_t = warmup_start_lr + (b_g - warmup_start_lr) * min(t / warmup_epochs, 1)``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.WarmupScheduler(base_lr=0.1, warmup_epochs=4)
    >>> [round(float(sched(t)), 6) for t in range(6)]
    [0.0, 0.025, 0.05, 0.075, 0.1, 0.1]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, warmup_epochs: int = 5, warmup_start_lr: float = 0.0,
                 last_epoch: int = 0):
        self.warmup_epochs = _int('warmup_epochs', warmup_epochs, 0)
        self.warmup_start_lr = check_number('warmup_start_lr', warmup_start_lr, low=0.0)
        super().__init__(base_lr, last_epoch)

    def _closed(self, base, epoch, group):
        done = jnp.minimum(_f32(epoch) / max(self.warmup_epochs, 1), 1.0)
        return self.warmup_start_lr + (base - self.warmup_start_lr) * done


class WarmupCosineSchedule(LRScheduler):
    r"""Linear warm-up to the base lr, then cosine decay to ``eta_min`` at ``total_steps``.

    ``lr_t = s + (b_g - s) t / W`` for ``t < W`` (``s`` = ``warmup_start_lr``, ``W`` =
    ``warmup_steps``), then ``eta_min + (b_g - eta_min) (1 + cos(pi p)) / 2`` with
    ``p = min((t - W) / (total_steps - W), 1)``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.WarmupCosineSchedule(base_lr=1.0, warmup_steps=2, total_steps=4)
    >>> [round(float(sched(t)), 6) for t in range(6)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, warmup_steps: int = 1000, total_steps: int = 10000,
                 warmup_start_lr: float = 0.0, eta_min: float = 0.0, last_epoch: int = 0):
        self.warmup_steps = _int('warmup_steps', warmup_steps, 0)
        self.total_steps = _int('total_steps', total_steps, self.warmup_steps + 1)
        self.warmup_start_lr = check_number('warmup_start_lr', warmup_start_lr, low=0.0)
        self.eta_min = check_number('eta_min', eta_min, low=0.0)
        super().__init__(base_lr, last_epoch)

    def _closed(self, base, epoch, group):
        warm = self.warmup_start_lr + (base - self.warmup_start_lr) * _f32(epoch) / max(self.warmup_steps, 1)
        decay = self.total_steps - self.warmup_steps
        done = jnp.clip(epoch - self.warmup_steps, 0, decay)
        cosine = self.eta_min + (base - self.eta_min) * _cos_weight(done, decay)
        return jnp.where(epoch < self.warmup_steps, warm, cosine)


class PiecewiseConstantSchedule(LRScheduler):
    r"""Constant lrs between step boundaries.

    ``values[k]`` is group 0's lr from ``boundaries[k - 1]`` (inclusive) to
    ``boundaries[k]``; every other group keeps its ratio to group 0:
    ``lr_t = values[k(t)] * b_g / base_lr``.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.PiecewiseConstantSchedule(base_lr=0.1, boundaries=[2, 3],
    ...                                           values=[0.1, 0.01, 0.001])
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [0.1, 0.1, 0.01, 0.001]
    """

    __module__ = 'stateopt'

    def __init__(self, base_lr: LRs = 1e-3, boundaries: Sequence[int] | None = None,
                 values: Sequence[float] | None = None, last_epoch: int = 0):
        boundaries = [1000, 2000] if boundaries is None else boundaries
        values = [1.0, 0.1, 0.01] if values is None else values
        if not isinstance(boundaries, (list, tuple)):
            raise ValueError(f'boundaries must be a list of integers, got {boundaries!r}')
        if not isinstance(values, (list, tuple)) or len(values) != len(boundaries) + 1:
            raise ValueError(f'values must be a list of len(boundaries) + 1 = {len(boundaries) + 1} '
                             f'numbers, got {values!r}')
        self.boundaries = [_int(f'boundaries[{i}]', b, 0) for i, b in enumerate(boundaries)]
        if self.boundaries != sorted(self.boundaries):
            raise ValueError(f'boundaries must be in increasing order, got {list(boundaries)}')
        self.values = [check_number(f'values[{i}]', v, low=0.0) for i, v in enumerate(values)]
        _per_group('base_lr', base_lr, low=0.0, low_open=True)
        super().__init__(base_lr, last_epoch)

    def _closed(self, base, epoch, group):
        phase = jnp.searchsorted(jnp.asarray(self.boundaries, I32), epoch, side='right')
        return jnp.asarray(self.values, F32)[phase] * (base / self._base_list[0])


# -- composition ---------------------------------------------------------------------------------------

class _Composite(LRScheduler):
    """A scheduler made of child schedulers that share the groups' lrs."""

    def _adopt(self, schedulers: Any) -> None:
        if not isinstance(schedulers, (list, tuple)) or not schedulers:
            raise ValueError(f'schedulers must be a non-empty list of schedulers, got {schedulers!r}')
        seen = set()
        for i, child in enumerate(schedulers):
            if not isinstance(child, LRScheduler):
                raise ValueError(f'schedulers[{i}] is a {type(child).__name__}, not a stateopt scheduler')
            if id(child) in seen:
                raise ValueError(f'schedulers[{i}] appears twice; pass distinct schedulers')
            seen.add(id(child))
            if child._parent is not None or child.optimizer is not None:
                raise ValueError(f'schedulers[{i}] is already attached or part of another scheduler; build '
                                 f'the schedulers of a {type(self).__name__} without the optimizer and give '
                                 f'the optimizer to the {type(self).__name__}')
            epoch = child.last_epoch.value
            if not is_traced(epoch) and epoch != 0:
                raise ValueError(f'schedulers[{i}] has been stepped (last_epoch={int(epoch)}); '
                                 f'pass fresh schedulers')
        relative = [(i, c) for i, c in enumerate(schedulers) if not c._absolute]
        for i, child in relative[1:]:
            first, other = relative[0]
            if child._base_list != other._base_list:
                raise ValueError(
                    f'schedulers[{i}] has base_lr={_shown(child._base_list)}, but schedulers[{first}] has '
                    f'base_lr={_shown(other._base_list)}; the schedulers of a {type(self).__name__} '
                    f'share each group\'s base lr')
        _check_lengths(type(self).__name__, {f'schedulers[{i}].{name}': count
                                             for i, child in enumerate(schedulers)
                                             for name, count in child._group_lists().items()})
        self._schedulers = list(schedulers)
        self._absolute = not relative
        self._base_list = (relative[0][1] if relative else schedulers[0])._base_list
        for child in self._schedulers:
            child._parent = self
            child._write_state(child._fresh(0))
            child._bases = child._lrs = None

    @property
    def schedulers(self) -> list[LRScheduler]:
        """The child schedulers."""
        return list(self._schedulers)

    def _group_lists(self):
        return {f'schedulers[{i}].{name}': count for i, child in enumerate(self._schedulers)
                for name, count in child._group_lists().items()}

    def _given_base(self):
        return next((base for child in self._schedulers if (base := child._given_base()) is not None), None)

    def _rebase(self, lr):
        for child in self._schedulers:
            child._rebase(lr)
        super()._rebase(lr)

    def _tree(self):
        yield self
        for child in self._schedulers:
            yield from child._tree()

    def _attach_torch_form(self, optimizer):
        """Take group 0's base lr from ``optimizer`` too, then attach; on error free the children."""
        _check_optimizer(optimizer, f'{type(self).__name__}(..., optimizer)')
        lr = optimizer.param_groups[0].initial_lr
        given = self._given_base()
        saved = [(scheduler, scheduler._base_list) for scheduler in self._tree()]
        try:
            if given is not None and given != (lr,):
                raise ValueError(
                    f'{type(self).__name__} with an optimizer takes each group\'s base lr from the optimizer '
                    f'(group 0: {lr}), but its schedulers were built with base_lr={_shown(given)}; build '
                    f'them without base_lr')
            self._rebase(lr)
            self._setup_states(0)
            self.attach_optimizer(optimizer)
        except Exception:
            for scheduler, base_list in saved:
                scheduler._base_list = base_list
            for child in self._schedulers:
                child._setup_states(0)
            raise

    @property
    def _cycles_momentum(self) -> bool:
        return any(child._cycles_momentum for child in self._schedulers)

    @property
    def _uses_metric(self) -> bool:
        return any(child._uses_metric for child in self._schedulers)

    def _group_base(self, group, initial_lr):
        if self._absolute:
            return self._schedulers[0]._group_base(group, initial_lr)
        return initial_lr

    def _counters(self):
        children = [child._counters() for child in self._schedulers]
        return {'last_epoch': self.last_epoch, 'schedulers': children}

    def _fresh(self, epoch):
        return {'last_epoch': jnp.asarray(epoch, I32),
                'schedulers': [child._fresh(0) for child in self._schedulers]}

    def _setup_composite(self, start: int) -> None:
        self._setup_states(0)
        for _ in range(start):
            self._run(None, None)

    def _simulate(self, values: dict, bases: tuple, groups: tuple, count: Any) -> dict:
        """``values`` after ``count`` metric-free steps from a fresh start."""
        start = (self._fresh(0), self._begin({**values, 'lr': bases}, bases, groups))
        if not is_traced(count) and count == 0:
            return start[1]

        def body(_, carry):
            return _like(self._advance(*carry, bases, groups), carry)

        return jax.lax.fori_loop(0, jnp.asarray(count, I32), body, _like(start, start))[1]

    def _start(self, values, bases, groups, state):
        return self._simulate(values, tuple(map(_f32, bases)), groups, state['last_epoch'])

    def _restart(self, values, bases, groups):
        return self._begin({**values, 'lr': bases}, bases, groups)

    def _value(self, count, base):
        return self._simulate({'lr': (base,), 'momentum': None}, (_f32(base),), (0,), count)['lr'][0]

    def _bind_children(self, optimizer):
        for child in self._schedulers:
            child.optimizer = optimizer
            child._bind_children(optimizer)

    def step(self, metric: Any = None) -> None:  # type: ignore[override]
        """Advance one step; ``metric`` feeds the ReduceLROnPlateau schedulers inside."""
        self._require_root('step')
        if self._uses_metric:
            metric = _metric_input(metric)
        elif metric is not None:
            raise ValueError(f'this {type(self).__name__} holds no ReduceLROnPlateau; call step() '
                             f'without a metric')
        self._run(None, metric)


def _shown(base_list: tuple) -> Any:
    return base_list[0] if len(base_list) == 1 else list(base_list)


class SequentialLR(_Composite):
    r"""Run ``schedulers[i]`` from ``milestones[i - 1]`` on (torch.optim.lr_scheduler.SequentialLR).

    At step ``t`` the scheduler ``i = number of milestones <= t`` is active, at its own
    step ``t - milestones[i - 1]``; at its milestone it starts afresh (torch's
    ``_update_lr(0)``), then steps on from the lr it set. The switch is traced
    (``jnp.where`` over the candidates), so it is exact inside ``jit``. Any scheduler
    may be a child, ReduceLROnPlateau included: then call ``step(metric)``. A child's
    ``state_dict`` holds its own counters. torch's form,
    ``SequentialLR(optimizer, schedulers, milestones)``, takes children built without
    the optimizer (nor ``base_lr``: the optimizer's lrs are the base lrs).

    Examples
    --------
    >>> import stateopt
    >>> warmup = stateopt.LinearLR(base_lr=1.0, start_factor=0.5, total_iters=2)
    >>> decay = stateopt.ExponentialLR(base_lr=1.0, gamma=0.5)
    >>> sched = stateopt.SequentialLR([warmup, decay], milestones=[2])
    >>> [round(float(sched(t)), 6) for t in range(5)]
    [0.5, 0.75, 1.0, 0.5, 0.25]
    """

    __module__ = 'stateopt'

    def __init__(self, schedulers: Sequence[LRScheduler], milestones: Sequence[int], last_epoch: int = 0):
        if not isinstance(milestones, (list, tuple)):
            raise ValueError(f'milestones must be a list of integers, got {milestones!r}')
        self.milestones = [_int(f'milestones[{i}]', m, 1) for i, m in enumerate(milestones)]
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError(f'milestones must be strictly increasing, got {list(milestones)}')
        if isinstance(schedulers, (list, tuple)) and len(schedulers) != len(self.milestones) + 1:
            raise ValueError(f'SequentialLR needs one scheduler more than milestones; got '
                             f'{len(schedulers)} schedulers and {len(self.milestones)} milestones')
        self._adopt(schedulers)
        self._setup_composite(_int('last_epoch', last_epoch, 0))

    def _begin(self, values, bases, groups):
        return self._schedulers[0]._begin(values, bases, groups)

    def _advance(self, state, values, bases, groups, epoch=None, metric=None):
        step = optax.safe_increment(state['last_epoch'])
        active = jnp.searchsorted(jnp.asarray(self.milestones, I32), step, side='right')
        children, chosen = [], values
        for i, (child, own) in enumerate(zip(self._schedulers, state['schedulers'])):
            new_state, new_values = child._advance(own, values, bases, groups, None, metric)
            if i > 0:
                switching = step == self.milestones[i - 1]
                new_state = _where(switching, child._fresh(0), new_state)
                new_values = _where(switching, child._restart(values, bases, groups), new_values)
            children.append(_like(_where(active == i, new_state, own), own))
            chosen = _where(active == i, new_values, chosen)
        return {'last_epoch': step, 'schedulers': children}, chosen


class ChainedScheduler(_Composite):
    r"""Step every scheduler in turn on the same lrs (torch.optim.lr_scheduler.ChainedScheduler).

    Each step, each scheduler transforms the lr the previous one left, as in torch:
    the recursive ones multiply it (so ``ExponentialLR`` after ``ConstantLR`` gives
    their product), the closed-form ones (LambdaLR, CyclicLR, OneCycleLR,
    CosineAnnealingWarmRestarts and the braintools schedules) set it. Any scheduler
    may be chained, ReduceLROnPlateau included: then call ``step(metric)``. Given
    ``optimizer`` (torch's signature), it attaches to it, every group's base lr being
    its lr there; the children are then built without the optimizer (nor ``base_lr``).

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.ChainedScheduler([
    ...     stateopt.ConstantLR(base_lr=1.0, factor=0.5, total_iters=2),
    ...     stateopt.ExponentialLR(base_lr=1.0, gamma=0.9)])
    >>> [round(float(sched(t)), 6) for t in range(4)]
    [0.5, 0.45, 0.81, 0.729]
    """

    __module__ = 'stateopt'

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: OptaxOptimizer | None = None):
        self._adopt(schedulers)
        self._setup_composite(0)
        if optimizer is not None:
            self._attach_torch_form(optimizer)

    def _begin(self, values, bases, groups):
        for child in self._schedulers:
            values = child._begin(values, bases, groups)
        return values

    def _advance(self, state, values, bases, groups, epoch=None, metric=None):
        children = []
        for child, own in zip(self._schedulers, state['schedulers']):
            own_new, values = child._advance(own, values, bases, groups, None, metric)
            children.append(_like(own_new, own))
        return {'last_epoch': optax.safe_increment(state['last_epoch']), 'schedulers': children}, values
