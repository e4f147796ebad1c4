"""The scheduler base: counters in OptimStates, one compiled step, state dicts, the protocol.

A schedule overrides the rule: :meth:`LRScheduler.lr_at` (closed form) and, where torch's
chainable form differs, :meth:`LRScheduler.next_lr`. The rest is machinery, overridden
only by schedulers with counters beyond the step (warm restarts, the plateau, the
composites), each for one moment of a run:

- ``_counters_at(epoch)``: the counters after ``epoch`` steps (a fresh start is 0);
- ``_advance(...)``: one step, from the counters and values now to the next;
- ``_initial_step(...)``: torch's step at construction, applied to the values at epoch 0;
- ``_joining_values(...)``: the values of groups that join at the current counters (at
  attachment, or a group added mid-run);
- ``_values_on_switch(...)``: the values a SequentialLR's next scheduler starts from;
- ``_schedule_lr(count, base)``: group 0's lr at ``count``, the scheduler as an optax schedule.
"""

from __future__ import annotations

import functools
import inspect
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._base import NodeMeta
from .._groups import to_python as _to_python
from .._hyper import check_number, inside_jax_transform, is_traced
from .._state import OptimState, deepcopy_owning_states, is_state
from .._state_dict import StateDictKeyError, checked_array, described

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


def _tree_where(condition: Any, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


def _like(new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.asarray(n, jnp.result_type(o)), new, old)



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


@runtime_checkable
class Driven(Protocol):
    """What a scheduler uses of the optimizer it drives: the public protocol, and nothing else.

    ``param_groups`` (each group's ``['lr']``, ``initial_lr``, ``index``, ``lr_schedule`` and
    ``assign(name, value)``), ``defaults`` (which momentum a cycling scheduler varies) and
    ``scheduler_attached(scheduler, cycles, first)``; the optimizer in turn calls the
    scheduler's ``check_new_group`` and ``group_added``. Every stateopt optimizer has it.

    Examples
    --------
    >>> import stateopt
    >>> from stateopt.schedulers import Driven
    >>> isinstance(stateopt.SGD(lr=0.1), Driven)
    True
    """

    param_groups: Any
    defaults: Any

    def scheduler_attached(self, scheduler: Any, cycles: str | None = None, first: Any = None) -> None:
        """Be driven by ``scheduler`` from now on."""


def _check_optimizer(value: Any, what: str) -> None:
    if not isinstance(value, Driven):
        raise TypeError(f'{what} expects a stateopt optimizer (such as stateopt.SGD(...) or '
                        f'stateopt.AdamW(...)), or an object with the same param_groups, defaults and '
                        f'scheduler_attached, got {type(value).__name__}: {value!r}')


def _torch_form(init: Callable) -> Callable:
    """``init``, also accepting torch's form with the optimizer first: ``StepLR(optimizer, 30)``.

    In that form the other arguments follow torch's signature, the scheduler takes each
    group's base lr from the optimizer (torch's ``initial_lr``) and attaches to it, as
    ``OptimizerClass(lr=scheduler)`` would.
    """

    @functools.wraps(init)
    def init_or_torch_form(self: LRScheduler, *args: Any, **kwargs: Any) -> None:
        if args and hasattr(args[0], 'param_groups'):
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


# -- the Parameters section of each scheduler, from its signature ---------------------------------

#: The docs of the parameters several schedulers share; a class's ``parameter_docs`` adds its own.
SHARED_PARAMETER_DOCS = {
    'base_lr': "Group 0's base lr. A list gives one lr per group to a scheduler used on its own; "
               "attached, each group takes its ``lr`` from ``add_param_group``.",
    'last_epoch': "Start as if stepped this many times (torch's fresh start, ``last_epoch=-1``, is 0 "
                  "here).",
    'gamma': 'The factor the lr is multiplied by at each decay.',
    'eta_min': 'The lowest lr of the cosine.',
    'total_iters': 'The steps the rule acts over; the lr stays at its end value after.',
    'lr_lambda': 'A function ``epoch -> factor`` (traceable with ``jnp``), or one per group.',
    'warmup_start_lr': 'The lr at step 0 of the warm-up.',
    'cycle_momentum': "Cycle the momentum (or Adam's beta1) opposite to the lr, when the optimizer "
                      'has one.',
    'base_momentum': 'The lowest momentum of the cycle (one value, or one per group).',
    'max_momentum': 'The highest momentum of the cycle (one value, or one per group).',
}

#: The annotations as the Parameters sections read them.
_TYPES = {
    'LRs': 'float or list of float', 'Sequence[int]': 'sequence of int',
    'Sequence[float] | None': 'sequence of float or None', 'Sequence[int] | None': 'sequence of int or None',
    'Callable | Sequence[Callable] | None': 'callable, list of callables or None',
    'Sequence[LRScheduler]': 'sequence of LRScheduler', 'Driven | None': 'OptaxOptimizer or None',
    'Callable | None': 'callable or None', 'int | None': 'int or None', 'float | None': 'float or None',
}


def _document_parameters(cls: type) -> None:
    """Insert the Parameters section, from the signature and the docs tables, before Examples."""
    doc = cls.__doc__ or ''
    if 'Parameters\n    ----------' in doc:
        return
    docs = {**SHARED_PARAMETER_DOCS, **vars(cls).get('parameter_docs', {})}
    lines = ['Parameters', '----------']
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.name not in docs:
            raise TypeError(f'{cls.__name__}: the parameter {param.name!r} has no doc; add it to '
                            f'{cls.__name__}.parameter_docs')
        kind = _TYPES.get(str(param.annotation), str(param.annotation))
        default = '' if param.default is inspect.Parameter.empty else f', default {param.default!r}'
        lines += [f'{param.name} : {kind}{default}',
                  *('    ' + line for line in textwrap.wrap(docs[param.name], 84))]
    section = textwrap.indent('\n'.join(lines), '    ').lstrip() + '\n\n    '  # placed after an indent
    at = doc.find('Examples\n    --------')
    cls.__doc__ = doc[:at] + section + doc[at:] if at >= 0 else doc.rstrip() + '\n\n    ' + section

# -- the base -------------------------------------------------------------------------------------

class LRScheduler(brainstate.graph.Node, metaclass=NodeMeta):
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
        if not cls.__name__.startswith('_'):
            _document_parameters(cls)

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
        fresh = self._counters_at(start)
        self.last_epoch = OptimState(fresh['last_epoch'])
        for name in self._extra_counters:
            setattr(self, name, OptimState(fresh[name]))
        bases = tuple(_f32(base) for base in self._base_list)
        groups = tuple(range(len(bases)))
        self._bases: OptimState | None = OptimState(bases)
        values = self._joining_values({'lr': bases, 'momentum': None}, bases, groups, fresh)
        self._lrs: OptimState | None = OptimState(values['lr'])

    # -- the rule (pure; override) ------------------------------------------------------------
    def lr_at(self, base: Any, epoch: Any, group: int) -> Any:
        """The rule in closed form: the lr at ``epoch`` of the group ``group`` whose base lr is ``base``.

        A pure ``jnp`` function of its arguments (they may be traced). One of the two
        hooks a schedule overrides; the other is :meth:`next_lr`.

        Examples
        --------
        >>> import stateopt
        >>> round(float(stateopt.StepLR(base_lr=1.0, step_size=2, gamma=0.5).lr_at(1.0, 4, 0)), 6)
        0.25
        """
        del epoch, group
        return base

    def next_lr(self, lr: Any, base: Any, epoch: Any, group: int) -> Any:
        """The rule in recursive form: the lr after a step to ``epoch`` from the current ``lr``.

        ``epoch == 0`` is the initial step. torch's chainable form, which differs from
        :meth:`lr_at` where another scheduler (a ChainedScheduler) changed the lr in
        between; by default the closed form.

        Examples
        --------
        >>> import stateopt
        >>> round(float(stateopt.ExponentialLR(base_lr=1.0, gamma=0.5).next_lr(0.3, 1.0, 1, 0)), 6)
        0.15
        """
        del lr
        return self.lr_at(base, epoch, group)

    def _momentum(self, state: dict, group: int) -> Any:
        """The momentum (or beta1) at ``state``, for schedulers that cycle it."""
        raise NotImplementedError

    @property
    def _cycles_momentum(self) -> bool:
        return False

    @property
    def _uses_metric(self) -> bool:
        return False

    def _counters_at(self, epoch: int) -> dict:
        """The counters after ``epoch`` steps."""
        return {'last_epoch': jnp.asarray(epoch, I32)}

    def _advance(self, state: dict, values: dict, bases: tuple, groups: tuple,
                 epoch: Any = None, metric: Any = None) -> tuple[dict, dict]:
        """One step: ``(counters, {'lr': lrs, 'momentum': momenta})`` after it, purely."""
        del metric
        if epoch is None:
            epoch = optax.safe_increment(state['last_epoch'])
            lrs = tuple(self.next_lr(lr, base, epoch, g)
                        for lr, base, g in zip(values['lr'], bases, groups))
        else:
            lrs = tuple(self.lr_at(base, epoch, g) for base, g in zip(bases, groups))
        state = {**state, 'last_epoch': jnp.asarray(epoch, I32)}
        return state, self._with_momentum(state, {**values, 'lr': tuple(map(_f32, lrs))}, groups)

    def _with_momentum(self, state: dict, values: dict, groups: tuple) -> dict:
        if not self._cycles_momentum or values['momentum'] is None:
            return values
        return {**values, 'momentum': tuple(_f32(self._momentum(state, g)) for g in groups)}

    def _joining_values(self, values: dict, bases: tuple, groups: tuple, state: dict) -> dict:
        """``values`` for groups that join at ``state`` with base lrs ``bases``."""
        lrs = tuple(_f32(self.lr_at(base, state['last_epoch'], g)) for base, g in zip(bases, groups))
        return self._with_momentum(state, {**values, 'lr': lrs}, groups)

    def _initial_step(self, values: dict, bases: tuple, groups: tuple) -> dict:
        """torch's initial step, applied to the current ``values`` at epoch 0."""
        zero = jnp.asarray(0, I32)
        lrs = tuple(_f32(self.next_lr(lr, base, zero, g))
                    for lr, base, g in zip(values['lr'], bases, groups))
        return self._with_momentum(self._counters_at(0), {**values, 'lr': lrs}, groups)

    def _values_on_switch(self, values: dict, bases: tuple, groups: tuple) -> dict:
        """The values this scheduler sets when a SequentialLR switches to it."""
        return self._joining_values(values, bases, groups, self._counters_at(0))

    def _schedule_lr(self, count: Any, base: Any) -> Any:
        """Group 0's lr at step ``count`` (the optax schedule)."""
        return self.lr_at(base, count, 0)

    def _group_base(self, group: int, initial_lr: float) -> float:
        if self._absolute or group < len(self._base_list) > 1:   # a list gives the listed groups' bases
            return _pick(self._base_list, group)
        return initial_lr

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
        return jax.tree.map(lambda state: state.value, self._counters(), is_leaf=is_state)

    def _write_state(self, state: dict) -> None:
        holders = jax.tree.leaves(self._counters(), is_leaf=is_state)
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
            group.assign('lr', lr)
        for group, momentum in zip(groups, values['momentum'] or ()):
            if self._momentum_key == 'betas':
                group.assign('betas', (momentum, group['betas'][1]))
            else:
                group.assign('momentum', momentum)

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

    def get_lr(self) -> list:
        """The lr of every group at the current step (braintools' and torch's name; as :meth:`get_last_lr`).

        Examples
        --------
        >>> import stateopt
        >>> sched = stateopt.StepLR(base_lr=1.0, step_size=1, gamma=0.5)
        >>> sched.step()
        >>> sched.get_lr()
        [0.5]
        """
        return self.get_last_lr()

    @property
    def current_lrs(self) -> CurrentLRs:
        """The lr of every group, as a State-like view: ``current_lrs.value`` reads them, assigning sets them.

        braintools keeps a copy in an OptimState; here the lrs live in one place (the
        attached optimizer's groups, or the scheduler itself), and this view reads and
        writes that place, so the copy can never disagree with the lr the step uses.

        Examples
        --------
        >>> import stateopt
        >>> sched = stateopt.ExponentialLR(base_lr=1.0, gamma=0.5)
        >>> sched.step()
        >>> [float(lr) for lr in sched.current_lrs.value]
        [0.5]
        """
        return CurrentLRs(self._root())

    def apply(self, apply_fn: Callable[[Any], Any]) -> None:
        """Set every group's lr to ``apply_fn(lr)`` of its current lr (braintools' ``apply``).

        The next :meth:`step` goes on as after any change of the lrs: a closed-form
        schedule computes its lr again, a recursive one (torch's chainable form:
        StepLR, ExponentialLR, ...) steps on from the lrs set here.

        Parameters
        ----------
        apply_fn : callable
            ``lr -> new lr`` (traceable with ``jnp`` inside ``jit``).

        Examples
        --------
        >>> import stateopt
        >>> sched = stateopt.StepLR(base_lr=1.0, step_size=10)
        >>> sched.apply(lambda lr: lr * 0.5)
        >>> sched.get_last_lr()
        [0.5]
        """
        self._require_root('apply')
        self._set_lrs([apply_fn(lr) for lr in self._read_values()['lr']], 'apply_fn(lr) for group {}')

    def _set_lrs(self, lrs: Sequence, where: str) -> None:
        """Set every group's lr to ``lrs`` (one each), refusing a negative one (``where`` names it)."""
        lrs = tuple(map(_f32, lrs))
        for i, lr in enumerate(lrs):
            if not is_traced(lr):
                check_number(where.format(i), float(lr), low=0.0)
        self._write_values({'lr': lrs, 'momentum': None})

    def step_epoch(self) -> None:
        """Advance one step (braintools' name for :meth:`step` with no arguments).

        Examples
        --------
        >>> import stateopt
        >>> sched = stateopt.StepLR(base_lr=1.0, step_size=1, gamma=0.5)
        >>> sched.step_epoch()
        >>> sched.get_last_lr()
        [0.5]
        """
        self.step()

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
        return _f32(self._schedule_lr(jnp.asarray(count), self._root()._bases.value[0]))

    def attach_optimizer(self, optimizer: Any) -> None:
        """Drive every param group of ``optimizer`` (done by ``OptimizerClass(lr=scheduler)``).

        Each group's lr becomes the schedule's value at the current step for that
        group's base lr; group 0 continues from this scheduler's own lr. A ``base_lr``
        list (braintools' form) gives the base lr of the groups it lists, in order;
        the others take their ``lr``. Afterwards the groups' lr States are the only copy
        of the lrs.

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
            group with its own lr schedule, a per-group list does not match the groups, or a
            group cannot vary the momentum this scheduler cycles. Nothing changes.
        """
        _check_optimizer(optimizer, f'{type(self).__name__}.attach_optimizer')
        self._require_root('attach')
        if self.optimizer is optimizer:
            return
        if self.optimizer is not None:
            raise ValueError(f'this {type(self).__name__} is already attached to another optimizer')
        groups = optimizer.param_groups
        for group in groups:
            if group.lr_schedule is not None:
                raise ValueError(
                    f'param group {group.index} has its own lr schedule (lr={group.lr_schedule!r}), which a '
                    f'scheduler cannot drive; give the optimizer a number lr (torch\'s form takes it as the '
                    f'base lr), or pass the scheduler as its lr=')
        self._check_group_lists(len(groups), pending=not any(group.names for group in groups))
        key = None
        if self._cycles_momentum:
            hyperparams = optimizer.defaults
            key = 'betas' if 'betas' in hyperparams else 'momentum' if 'momentum' in hyperparams else None
        bases = tuple(_f32(self._group_base(g, self.base_lr if g == 0 else group.initial_lr))
                      for g, group in enumerate(groups))
        values = self._joining_values(_group_values(groups, key), bases, tuple(range(len(groups))),
                                      self._state())
        own = tuple(self._lrs.value)
        optimizer.scheduler_attached(self, key, values['momentum'])
        self.optimizer, self._momentum_key = optimizer, key
        self._bases.value = bases
        self._lrs = None
        self._write_values({**values, 'lr': own + values['lr'][len(own):]})
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

    def _bind_children(self, optimizer: Any) -> None:
        """Composites point their children at ``optimizer``."""

    def check_new_group(self, hyperparams: Mapping) -> None:
        """Refuse, before the optimizer adds it, a group this scheduler cannot drive.

        Called by the optimizer's ``add_param_group`` with the new group's
        hyper-parameters; a group past the end of a per-group list is refused.

        Parameters
        ----------
        hyperparams : dict
            The new group's hyper-parameters, checked by the optimizer.
        """
        groups = len(self.optimizer.param_groups)
        for name, count in self._group_lists().items():
            if count <= groups:
                raise ValueError(
                    f'{type(self).__name__}: {name} has {count} values (one per param group) and the '
                    f'optimizer already has {groups} param group{"s" if groups != 1 else ""}, so a new group '
                    f'would have none; list one value per group when building the scheduler, or give a '
                    f'single value for all groups')

    def group_added(self, group: Any) -> None:
        """Schedule a new group from the current step (the optimizer calls this after ``add_param_group``).

        Parameters
        ----------
        group : ParamGroup
            The new group, ``optimizer.param_groups[-1]``.
        """
        index = group.index
        base = _f32(self._group_base(index, group.initial_lr))
        self._bases.value = (*self._bases.value, base)
        values = self._read_values()
        mine = {'lr': values['lr'][index:index + 1],
                'momentum': None if values['momentum'] is None else values['momentum'][index:index + 1]}
        values = self._joining_values(mine, (base,), (index,), self._state())
        self._write_values(values, [group])

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
            values = self._initial_step({'lr': bases, 'momentum': None}, bases, groups)

            def body(carry, _):
                state, values = carry
                new = self._advance(state, values, bases, groups)
                return _like(new, carry), values['lr']

            return jax.lax.scan(body, (self._counters_at(0), values), None, length=steps)[1]

        return np.stack([np.asarray(lr) for lr in jax.jit(run)(bases)], axis=1)

    def __deepcopy__(self, memo: dict) -> LRScheduler:
        """A copy owning copies of its counter States (and, attached, of its optimizer)."""
        return deepcopy_owning_states(self, memo, caches=('_compiled',))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(base_lr={_to_python(self.base_lr)!r}, '
                f'last_epoch={_to_python(self.last_epoch.value)!r})')


_document_parameters(LRScheduler)


class CurrentLRs:
    """A scheduler's per-group lrs as a State-like view (``LRScheduler.current_lrs``).

    ``value`` is the list of every group's lr; assigning a list (one lr per group) sets them.

    Examples
    --------
    >>> import stateopt
    >>> sched = stateopt.StepLR(base_lr=1.0, step_size=10)
    >>> sched.current_lrs.value = [0.25]
    >>> sched.get_last_lr()
    [0.25]
    """

    __module__ = 'stateopt'

    def __init__(self, scheduler: LRScheduler):
        self._scheduler = scheduler

    @property
    def value(self) -> list:
        """Every group's lr, as arrays."""
        return list(self._scheduler._read_values()['lr'])

    @value.setter
    def value(self, lrs: Sequence) -> None:
        current = self._scheduler._read_values()['lr']
        if not isinstance(lrs, (list, tuple)) or len(lrs) != len(current):
            raise ValueError(f'current_lrs.value takes a list of {len(current)} lrs (one per param group), '
                             f'got {described(lrs)}')
        self._scheduler._set_lrs(lrs, 'current_lrs.value[{}]')

    def __repr__(self) -> str:
        return f'CurrentLRs({[_to_python(lr) for lr in self.value]!r})'


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
