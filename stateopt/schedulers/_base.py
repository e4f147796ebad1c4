"""The scheduler base: the rule, its counters in OptimStates, and one compiled step.

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

The other jobs of the class live beside it, one module each: the optimizer protocol
(``_protocol.py``), torch's form (``_torch.py``), state dicts (``_saved.py``) and the
generated Parameters sections (``_docs.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._base import NodeMeta
from .._groups import to_python as _to_python
from .._hyper import check_number
from .._state import OptimState, deepcopy_owning_states, is_state
from .._state_dict import described
from .._trace import inside_jax_transform, is_traced
from ._common import I32, LRs, _check_lengths, _f32, _int, _like, _per_group, _pick
from ._docs import _document_parameters
from ._protocol import Driving
from ._saved import SchedulerStateDicts
from ._torch import TorchForm, _torch_form


class LRScheduler(TorchForm, Driving, SchedulerStateDicts, brainstate.graph.Node, metaclass=NodeMeta):
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

    def _join(self, parent: LRScheduler) -> None:
        """Become a child of the composite ``parent``: fresh counters; the parent holds the values."""
        self._parent = parent
        self._write_state(self._counters_at(0))
        self._bases = self._lrs = None

    def _write_state(self, state: dict) -> None:
        holders = jax.tree.leaves(self._counters(), is_leaf=is_state)
        for holder, value in zip(holders, jax.tree.leaves(state)):
            holder.value = value


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


