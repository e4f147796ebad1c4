"""OptaxOptimizer: registration, param groups, the compiled step and state dicts."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._base import Optimizer
from ._decay import resolve_decay_mask
from ._donation import RAW as _RAW
from ._donation import held_elsewhere, mark_unread
from ._groups import ParamGroup, ParamGroups, lr_shown, to_python
from ._hyper import (
    DECAY_DOCS,
    GRAD_CLIP_NORM,
    GRAD_CLIP_VALUE,
    LR,
    WEIGHT_DECAY,
    WEIGHT_DECAY_MASK,
    Hyperparameters,
    Param,
    is_traced,
)
from ._loop import LOOP_SETTINGS, Loop, accumulator_dtype
from ._packed import PackedBuffer, is_packed_view
from ._placement import STATE_SHARDING, Layout, mesh_of, placed, slot_shardings, state_targets
from ._precision import PRECISION_SETTINGS, master_of, working_value
from ._slots import Probes, Slot, slots_of
from ._state import (
    OptimState,
    UniqueStateManager,
    deepcopy_owning_states,
    flatten_states,
    param_name,
    shown_key,
    unflatten,
)
from ._state_dict import StateDicts
from ._step import Plan, Stepping, chain_update

__all__ = ['OPTIMIZER_SETTINGS', 'OptaxOptimizer', 'ParamGroup', 'ParamGroups', 'BASE_HYPERPARAMS',
           'check_direction']

#: Hyper-parameters every optimizer has, for the optimizers declared without a table.
BASE_HYPERPARAMS: dict[str, Param] = {param.name: param for param in (LR, WEIGHT_DECAY, GRAD_CLIP_NORM,
                                                                      GRAD_CLIP_VALUE)}


class OptaxOptimizer(Stepping, StateDicts, Optimizer):
    """A stateful optimizer over brainstate States, with param groups.

    The shared chain (see :func:`stateopt._step.chain_update`) runs around the
    optimizer's algorithm for every param group: global-norm clipping across all
    groups, element-wise clipping, ``maximize``, coupled or decoupled weight decay,
    and the learning rate.

    ``tx`` sees each param group as a dict ``{param name: value}`` (names as
    :func:`stateopt.param_name` gives them, ``'l1.weight'``), so a pytree mask or label
    tree (``optax.masked``, ``optax.multi_transform``) is keyed by those names and must
    fit every group; a callable mask (``lambda params: {name: value.ndim > 1 for name,
    value in params.items()}``) fits any group.

    A schedule given as ``lr`` is checked where its value can be seen: an eager step
    refuses a negative (or NaN) value before changing anything; inside a compiled step
    (``brainstate.transform.jit``, ``donating_jit``) it is not seen, and a negative value
    is applied as it is (the step ascends), so check the schedule (``opt.get_last_lr()``
    reads it). Assigning a number to ``group['lr']`` replaces a group's schedule (see
    :attr:`ParamGroup.lr_schedule`).

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
    #: Left out of brainstate's graph: the constant scheduler ``lr_scheduler`` makes on first use,
    #: so reading ``opt.lr_scheduler`` never changes what ``brainstate.graph.states(opt)`` finds.
    #: The settings of the whole optimizer (``scope='optimizer'``) hold callables such as
    #: SOFO's model, whose States are the model's, not the optimizer's: left out too.
    graph_invisible_attrs = ('_constant', '_settings')

    #: The constructor's hyper-parameters, in signature order (see stateopt._hyper).
    hyperparameters = Hyperparameters(
        Param('tx', None, lambda name, value: value if value is None else _direction(name, value),
              'The update direction, without a learning rate: ``optax.scale_by_adam()`` (the default '
              'when ``None``), ``optax.scale_by_lion()``, ... The optimizer applies ``lr``, weight decay '
              'and clipping around it; a complete optax optimizer (``optax.adam(1e-3)``, whose updates '
              'already point downhill) is refused.', type='optax.GradientTransformation or None',
              dynamic=False),
        LR, WEIGHT_DECAY, maximize=False)
    #: name -> declaration of every hyper-parameter a param group keeps (made from the table).
    _hyperparams: dict[str, Param] = hyperparameters.stored()
    #: Attributes holding what is compiled for this optimizer (bound to it): a copy starts without.
    _caches: tuple[str, ...] = ('_plan',)
    #: name -> declaration of every setting of the whole optimizer (``scope='optimizer'``).
    _setting_params: dict[str, Param] = {}
    _settings: dict[str, Any] = {}
    #: how weight_decay enters the chain: 'coupled' (L2 on the gradient), 'decoupled', or None
    #: (the algorithm applies it inside its direction, as LAMB's trust ratio does).
    #: A static ``decoupled_weight_decay=True`` hyper-parameter makes a group decoupled.
    _decay = 'coupled'
    #: True when the algorithm's direction already includes the learning rate.
    _lr_in_algorithm = False
    #: Why the optimizer cannot accumulate gradients (it then takes no gradient_accumulation_steps),
    #: or None: every optimizer stepping on gradients can.
    _no_accumulation: str | None = None
    #: Why the optimizer's per-parameter state cannot be stored in a narrower dtype (it then takes
    #: no state_dtype), or None.
    _no_state_dtype: str | None = None
    #: True when the algorithm applies weight decay itself (``_decay = None``) and takes
    #: ``hp['weight_decay_mask']`` there (see :func:`stateopt._decay.decay_mask_fn`).
    _masks_own_decay = False
    #: True when the algorithm's rule is element-wise (no norm, factored moment or other
    #: quantity per array): it then runs the same on a :class:`stateopt.PackedParams` buffer.
    _elementwise = False
    #: The names of the slots of the algorithm's state, ``{name: path in the state}``
    #: (``{'exp_avg': 'mu'}``), as state dicts and checkpoints key them; an undeclared
    #: slot (of a ``tx`` given here) is named by its path. See :mod:`stateopt._slots`.
    slots: dict[str, str] = {}
    #: The declared slots no run makes negative (second moments and other accumulators of
    #: squares or absolute values, step sizes, averaging weights): a loaded state dict with a
    #: negative value there is refused. A name covers the slots under it too.
    never_negative: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if 'hyperparameters' in vars(cls):
            _declare(cls)

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
        return deepcopy_owning_states(self, memo, caches=self._caches)

    # -- construction --------------------------------------------------------------
    @classmethod
    def _resolve(cls, defaults: dict) -> dict:
        """The constructor's hyper-parameters with the defaults that depend on others filled in (override)."""
        return defaults

    def _setup(self, **defaults: Any) -> None:
        defaults = self._resolve(defaults)
        lr = defaults['lr']
        self._scheduler = lr if _is_scheduler(lr) else None
        if self._scheduler is not None:
            defaults['lr'] = float(self._scheduler.base_lr)
        self.defaults = self._validated(defaults)
        self._registry = UniqueStateManager()
        self.step_count = OptimState(jnp.zeros((), jnp.int32))
        self._loop = Loop(self._settings.get('gradient_accumulation_steps', 1),
                          self._settings.get('skip_nonfinite', False))
        if self._loop.accumulate > 1:
            #: the sum of the gradients since the last applied step, one per registered State
            self.accumulated_grads = OptimState(())
            #: how many ``update`` calls have been summed into ``accumulated_grads``
            self.micro_step = OptimState(jnp.zeros((), jnp.int32))
        if self._loop.skip_nonfinite:
            #: how many steps were skipped for non-finite gradients
            self.skipped_steps = OptimState(jnp.zeros((), jnp.int32))
        if self._settings.get('master_dtype') is not None:
            #: per registered State, the master copy of each of its arrays (None: no master)
            self.master_params = OptimState(())
        self._groups: list[ParamGroup] = [ParamGroup(self, [], self.defaults, explicit=False)]
        self.opt_state = OptimState((self._init_group_state(self._groups[0], {}),))
        mark_unread(self._own_states())     # made here: nobody else holds them
        self._plan: Plan | None = None
        if self._scheduler is not None:
            self._scheduler.attach_optimizer(self)

    @classmethod
    def _validated(cls, hyperparams: dict, base: dict | None = None) -> dict:
        """``base`` updated with ``hyperparams``, each checked by its declaration."""
        specs = cls._hyperparams
        unknown = [name for name in hyperparams if name not in specs]
        wide = [name for name in unknown if name in cls._setting_params]
        if wide:
            raise ValueError(f'{", ".join(map(repr, wide))} of {cls.__name__} is a setting of the whole '
                             f'optimizer (it applies to every registered param at once), not of one '
                             f'param group; give it to the constructor')
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
    def register_trainable_weights(self, states: Any = None, *, param_states: Any = None) -> OptaxOptimizer:
        """Register the States to train, in the default param group; return ``self``.

        ``param_states`` is braintools' name for ``states``.

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
        states = _one_of('register_trainable_weights', states, param_states=param_states)
        new = self._registry.plan_merge(states)
        _check_values(new)
        self._check_packed(new, self._groups[0]._static.get('weight_decay_mask'))
        _strengthen(new)
        self._commit(new, moved=[], new_group=None)
        self._registry.note_aliases(states)
        return self

    def add_param_group(self, states: Any = None, **hyperparams: Any) -> ParamGroup:
        """Give ``states`` their own param group with ``hyperparams`` overridden.

        ``params=`` is braintools' name for ``states``.

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
        if 'params' in hyperparams:
            states = _one_of('add_param_group', states, params=hyperparams.pop('params'))
        states, hyperparams = _torch_group(states, hyperparams)
        if self._scheduler is not None and callable(hyperparams.get('lr')):
            raise ValueError('a group cannot have its own lr schedule or scheduler; the optimizer\'s '
                             'scheduler drives every group')
        hp = self._validated(hyperparams, base=self.defaults)
        if self._scheduler is not None:
            self._scheduler.check_new_group(hp)
            if self._cycled == 'momentum':
                self._check_cycled(self._scheduler, None, hp.get('momentum'))
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
                        f'the State at key {shown_key(path)} (registered as '
                        f'{param_name(self._registry.path_of(state))!r}) is already in param '
                        f'group {owner.index}; a State can be in one group only'
                    )
                moved.append(position)
            else:
                fresh.append((path, state))
        new = self._registry.plan_merge(dict(_unflat_pairs(fresh))) if fresh else []
        _check_values(new)
        self._check_packed(new + [(self._registry.paths[i], self._registry.states[i]) for i in moved],
                           hp.get('weight_decay_mask'))
        _strengthen(new)
        group = ParamGroup(self, [], hp, explicit=True)
        group.overridden = frozenset(hyperparams)
        self._commit(new, moved=moved, new_group=group)
        if self._scheduler is not None:
            self._scheduler.group_added(group)
        return group

    @classmethod
    def _check_packed(cls, pairs: list, mask: Any = None) -> None:
        """Refuse a State a :class:`PackedParams` holds, and a packed buffer for a rule that is not
        element-wise or in a group with a weight-decay ``mask``."""
        for path, state in pairs:
            if is_packed_view(state):
                raise TypeError(
                    f'the State at key {shown_key(path)} is held by a stateopt.PackedParams: its value '
                    f'lives in the PackedParams\' buffer. Register the PackedParams itself '
                    f'(opt.register_trainable_weights(packed)) and take gradients with '
                    f'grad_states=packed. Nothing was registered')
            if isinstance(state, PackedBuffer) and not cls._elementwise:
                raise TypeError(
                    f'{cls.__name__} updates each parameter array as a whole (norms, factored moments '
                    f'or curvature per array), so it cannot run on the packed buffer at key '
                    f'{shown_key(path)}; register the States unpacked, or use an element-wise optimizer '
                    f'({", ".join(packable_optimizers())}). Nothing was registered')
            if isinstance(state, PackedBuffer) and mask is not None:
                raise ValueError(
                    f'the packed buffer at key {shown_key(path)} would be one array to a weight_decay_mask, '
                    f'not the parameters it holds; pack the arrays to decay and the others apart (two '
                    f'PackedParams) and give the second a group with weight_decay=0. Nothing was registered')

    def _group_of(self, position: int) -> ParamGroup:
        return self._groups[self._group_index(position)]

    def _group_index(self, position: int) -> int:
        for index, group in enumerate(self._groups):
            if position in group._positions:
                return index
        raise LookupError(position)

    def _commit(self, new: list, moved: list[int], new_group: ParamGroup | None) -> None:
        """Register ``new``, move ``moved`` into ``new_group``, and rebuild the states."""
        if self._loop.accumulate > 1 and (new or moved):
            micro = _RAW(self.micro_step)
            if is_traced(micro) or int(micro) != 0:
                raise ValueError(
                    f'{type(self).__name__} has summed the gradients of {micro} of its '
                    f'{self._loop.accumulate} update calls (gradient_accumulation_steps='
                    f'{self._loop.accumulate}); register States or add param groups between applied steps '
                    f'(when opt.micro_step is 0), so that every parameter steps on the mean of the same '
                    f'calls. Nothing was changed')
        own = self._own_states()
        held = [held_elsewhere(state) for state in own]     # read since written: a caller may hold them
        start, old_mesh = len(self._registry), vars(self).get('_mesh')
        for path, state in new:
            self._registry._add(path, state)
        try:
            # the mesh of the first sharded parameter: the registered ones' stays, or the new ones give it
            self._mesh = old_mesh if old_mesh is not None else mesh_of([_RAW(state) for _, state in new])
            self._rebuild_groups(start, moved, new_group, old_mesh)
            # arrays made now are held by nobody else: the first step may donate them, not copy them
            mark_unread([state for state, was_held in zip(own, held) if not was_held])
        except BaseException:
            self._registry._truncate(start)     # nothing changes
            self._mesh = old_mesh
            raise

    def _rebuild_groups(self, start: int, moved: list[int], new_group: ParamGroup | None,
                        old_mesh: Any) -> None:
        """Rebuild the states of the groups that change (the default group when States join it, the
        groups States move out of, ``new_group``); every other group keeps its state as it is, so
        the cost is linear in the groups."""
        fresh = list(range(start, len(self._registry)))
        old = _RAW(self.opt_state)
        groups = [*self._groups, *([new_group] if new_group is not None else [])]
        changed = {}    # index in groups -> (new positions, [(old group, its state, keeps group slots)])
        if new_group is None:
            changed[0] = (self._groups[0]._positions + fresh, [(self._groups[0], old[0], True)])
        else:
            owners = {position: self._group_index(position) for position in moved}
            left = list(dict.fromkeys(owners.values()))   # the groups States leave, the first one's first
            for index in left:
                group = groups[index]
                changed[index] = ([p for p in group._positions if owners.get(p) != index],
                                  [(group, old[index], True)])
            # the new group keeps the group slots (a step count) of the group its first State leaves
            changed[len(groups) - 1] = (moved + fresh, [(groups[index], old[index], index == left[0])
                                                        for index in left])
        states = [*old, *([None] if new_group is not None else [])]
        for index, (positions, sources) in changed.items():
            states[index] = self._rebuild_group_state(groups[index], positions, sources)
        for index, (positions, _) in changed.items():
            groups[index]._positions = positions
        self._groups = groups
        self.opt_state.value = tuple(states)
        if self._mesh is not None:      # counts, hyper-parameters: replicated over the parameters' mesh
            counters = (self.step_count, *self._step_states().values())
            # a new mesh moves every group's; otherwise those of the groups made before are there already
            hypers = [group._hyper for group in (groups if self._mesh is not old_mesh else
                                                 [groups[index] for index in changed])]
            for state in (*counters, *hypers):
                state.value = placed(_RAW(state), self._mesh)
        master = self._settings.get('master_dtype')
        if master is not None and fresh:
            self.master_params.value = (*_RAW(self.master_params), *(
                self._master_of(_RAW(self._registry.states[i]), master) for i in fresh))
        if self._loop.accumulate > 1 and fresh:
            dtype = self._settings.get('accumulation_dtype')
            self.accumulated_grads.value = (*_RAW(self.accumulated_grads), *(
                jax.tree.map(lambda v: jnp.zeros_like(v, accumulator_dtype(v, dtype)),   # v's sharding
                             _RAW(self._registry.states[i])) for i in fresh))
        self._place_per_parameter()
        self._invalidate()

    @staticmethod
    def _master_of(value: Any, master: Any) -> tuple | None:
        masters = master_of(value, master)
        return None if all(entry is None for entry in masters) else masters

    def _working_values(self, positions: list[int]) -> dict:
        """``{param name: value}`` the step works on (the master copies, where there are)."""
        names, states = self._registry.names, self._registry.states
        master = self._settings.get('master_dtype')
        if master is None:
            return {names[i]: _RAW(states[i]) for i in positions}
        masters = _RAW(self.master_params)     # a State registered now has none yet: made from its value
        return {names[i]: working_value(value, masters[i] if i < len(masters) else
                                        self._master_of(value, master))
                for i in positions for value in [_RAW(states[i])]}

    def _own_states(self) -> list:
        """The States whose values the optimizer makes: its state, step count and :meth:`_step_states`."""
        return [self.opt_state, self.step_count, *self._step_states().values()]

    def _step_states(self) -> dict:
        """The optimizer's States the step carries besides its state and count, ``{name: State}``:
        the loop layer's (:mod:`stateopt._loop`) and the master weights (:mod:`stateopt._precision`)."""
        states = {}
        if 'master_params' in vars(self):
            states['master_params'] = self.master_params
        if self._loop.accumulate > 1:
            states.update(accumulated_grads=self.accumulated_grads, micro_step=self.micro_step)
        if self._loop.skip_nonfinite:
            states['skipped_steps'] = self.skipped_steps
        return states

    def _init_group_state(self, group: ParamGroup, values: dict) -> Any:
        """The algorithm's state for ``values``, the tree ``{param name: value}`` of one group.

        An empty group whose algorithm cannot start from an empty tree (a ``tx`` with a
        pytree mask) has no state (``None``) until it holds parameters.
        """
        hp = {name: to_python(group[name]) if name != 'lr' else group.initial_lr
              for name in self._hyperparams}
        def check_mask(traced: dict) -> None:
            # every array has an entry, and a function mask decides without the numbers, as in the step
            resolve_decay_mask(hp.get('weight_decay_mask'), traced)

        if hp.get('weight_decay_mask') is not None:
            jax.eval_shape(check_mask, values)
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

    def _rebuild_group_state(self, group: ParamGroup, positions: list[int], sources: list) -> Any:
        """The group's new state over ``positions``; every slot a parameter had keeps its value.

        ``sources`` lists ``(old group, its state, keeps group slots)`` for each group it takes
        parameters from: their slots, and the group slots (a step count) of the one marked, carry
        over. Only these groups are read: linear in the groups.
        """
        state = self._with_state_dtype(group, positions, self._created_state(group, positions))
        known = {}
        for old_group, old, group_slots in sources:
            # the positions it had: a group's own are rewritten only once every new state is built
            for slot, leaf in zip(self._slots(old_group, old_group._positions, old), jax.tree.leaves(old)):
                if slot.owner is not None or group_slots:
                    known[slot.owner, slot.key] = leaf
        leaves, treedef = jax.tree.flatten(state)
        carried = [
            old if old is not None and np.shape(old) == np.shape(leaf)
            and jnp.result_type(old) == jnp.result_type(leaf) else leaf
            for slot, leaf in zip(self._slots(group, positions, state), leaves)
            for old in [known.get((slot.owner, slot.key))]]
        if vars(self).get('_mesh') is not None:     # a slot kept from elsewhere goes where this group's go
            carried = [jax.device_put(old, leaf.sharding) if old is not leaf and _moved(old, leaf) else old
                       for old, leaf in zip(carried, leaves)]
        return self._placed(treedef.unflatten(carried))

    def _created_state(self, group: ParamGroup, positions: list[int]) -> Any:
        """The algorithm's fresh state for ``group`` over ``positions``, made on the parameters' mesh."""
        values, mesh = self._working_values(positions), vars(self).get('_mesh')
        targets = self._targets(group, positions)
        if mesh is None:
            return self._init_group_state(group, values)

        def init(values: dict) -> Any:
            return self._init_group_state(group, values)

        abstract = jax.eval_shape(init, values)
        slots = self._slots(group, positions, abstract)
        return jax.jit(init, out_shardings=slot_shardings(abstract, slots, targets, mesh))(values)

    def _targets(self, group: ParamGroup, positions: list[int]) -> dict:
        """``{param name: [Target, ...]}``: where the per-parameter state of ``positions`` goes
        (the group's ``state_sharding``, :mod:`stateopt._placement`)."""
        setting, mesh = group._static.get('state_sharding'), vars(self).get('_mesh')
        if setting is None and mesh is None:
            return {}
        names, states = self._registry.names, self._registry.states
        return {names[i]: state_targets(setting, names[i], _RAW(states[i]), mesh) for i in positions}

    def _place_per_parameter(self) -> None:
        """Put the master weights and gradient accumulators where their group's state goes."""
        if vars(self).get('_mesh') is None:
            return
        where = {}
        for group in self._groups:
            for position, targets in zip(group._positions, self._targets(group, group._positions).values()):
                where[position] = [target.sharding for target in targets]

        def place(array: Any, sharding: Any) -> Any:
            return jax.device_put(array, sharding) if array is not None and _moved(array, sharding) else array

        if 'master_params' in vars(self):        # one entry per parameter leaf, None where none is kept
            self.master_params.value = tuple(
                entry if entry is None else tuple(map(place, entry, where[position]))
                for position, entry in enumerate(_RAW(self.master_params)))
        if self._loop.accumulate > 1:           # shaped like each parameter's value
            self.accumulated_grads.value = tuple(
                jax.tree.unflatten(jax.tree.structure(entry), list(map(place, jax.tree.leaves(entry),
                                                                       where[position])))
                for position, entry in enumerate(_RAW(self.accumulated_grads)))

    def _placed(self, value: Any) -> Any:
        """``value`` replicated over the parameters' mesh, if they have one (:mod:`stateopt._placement`)."""
        return placed(value, vars(self).get('_mesh'))

    def _with_state_dtype(self, group: ParamGroup, positions: list[int], state: Any) -> Any:
        """``state`` with its per-parameter floating slots in ``state_dtype`` (if one is set)."""
        dtype = self._settings.get('state_dtype')
        if dtype is None:
            return state
        leaves, treedef = jax.tree.flatten(state)
        owned = [slot.owner is not None and jnp.issubdtype(leaf.dtype, jnp.floating)
                 for slot, leaf in zip(self._slots(group, positions, state), leaves)]
        return treedef.unflatten([leaf.astype(dtype) if own else leaf for own, leaf in zip(owned, leaves)])

    def _slots(self, group: ParamGroup, positions: list[int], state: Any) -> list[Slot]:
        """Whose each leaf of ``state`` (the state of ``group`` over ``positions``) is, and its name."""
        values = self._working_values(positions)
        return slots_of(lambda values: self._init_group_state(group, values), values, state,
                        self._declared_slots(group), vars(self).setdefault('_probes', Probes()),
                        self._structure_key(group))

    def _structure_key(self, group: ParamGroup) -> tuple | None:
        """What, besides its parameters' shapes, decides the structure of ``group``'s state: its
        hyper-parameters but the lr (whether momentum is 0 decides whether there is a momentum
        buffer; a group's lr decides nothing of it). ``None`` if unhashable."""
        key = tuple((name, to_python(group[name])) for name in self._hyperparams if name != 'lr')
        try:
            hash(key)
        except TypeError:   # a dict mask, a list
            return None
        return key

    def _declared_slots(self, group: ParamGroup) -> dict[str, str]:
        """``{slot name: path in the state}`` of ``group``'s state (the class's :attr:`slots`)."""
        return type(self).slots

    def _never_negative(self, group: ParamGroup) -> tuple[str, ...]:
        """The slots of ``group``'s state that no run makes negative (the class's :attr:`never_negative`)."""
        return type(self).never_negative

    def _group_state(self, group: ParamGroup) -> Any:
        """The algorithm's state of ``group``, read without marking it read."""
        return _RAW(self.opt_state)[group.index]

    def _refresh_group_states(self) -> None:
        """Create every group's state anew, keeping each slot that still fits.

        For algorithms whose state depends on more than the group's own values (SGD's
        momentum buffer, when an attached scheduler starts cycling the momentum).
        """
        self._probes = Probes()     # the structures found so far may no longer hold
        self.opt_state.value = tuple(
            self._rebuild_group_state(group, group._positions, [(group, old, True)])
            for group, old in zip(self._groups, _RAW(self.opt_state)))
        self._invalidate()

    def _invalidate(self) -> None:
        self._plan = None
        self._record_layout()

    def _record_layout(self) -> None:
        """Note where every array the step writes is, for the step to keep it there (:class:`Layout`).

        Only on a mesh, and only from concrete values (a change made inside a trace keeps the
        layout noted before it).
        """
        if vars(self).get('_mesh') is None:
            self._layout = None
            return
        params = [_RAW(state) for state in self._registry.states]
        carried = {name: _RAW(state) for name, state in self._step_states().items()}
        every = (params, _RAW(self.opt_state), _RAW(self.step_count), carried)
        if not any(is_traced(leaf) for leaf in jax.tree.leaves(every)):
            self._layout = Layout.of(*every)


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
        """The lr scheduler (:attr:`lr_scheduler`); a callable schedule given as ``lr`` when there is none.

        As in braintools, a number ``lr`` reads as a constant scheduler; the number itself is
        ``param_groups[i]['lr']`` (and :attr:`current_lr`, :attr:`base_lr`).
        """
        scheduler = self.lr_scheduler
        return scheduler if scheduler is not None else self.defaults['lr']

    @property
    def lr_scheduler(self) -> Any:
        """The scheduler driving the lrs; for a number ``lr``, a constant one (braintools' ``ConstantLR``).

        The constant scheduler (``ConstantLR(base_lr=lr, factor=1.0, total_iters=0)``,
        made on first use) reads and sets the groups' lrs as an attached one does
        (``get_last_lr``, ``apply``, ``current_lrs``) and never changes them when
        stepped; it is not saved in the state dict, and attaching a real scheduler
        replaces it. ``None`` only while a group follows its own callable schedule.
        """
        if self._scheduler is not None:
            return self._scheduler
        if any(group.lr_schedule is not None for group in self._groups):
            return None
        if vars(self).get('_constant') is None:
            from .schedulers import ConstantLR
            self._constant = ConstantLR.following(self)
        return self._constant

    @property
    def schedulers(self) -> list:
        """The schedulers driving this optimizer, ``[lr_scheduler]`` or ``[]`` (braintools' name)."""
        return [] if self._scheduler is None else [self._scheduler]

    def add_scheduler(self, scheduler: Any) -> None:
        """Let ``scheduler`` drive every group's lr from now on (braintools' ``add_scheduler``).

        The same as building the optimizer with ``lr=scheduler``: group 0 continues from
        the scheduler's lr, the others from their own base lr. An optimizer has one
        scheduler; to combine several, pass a SequentialLR or ChainedScheduler.

        Parameters
        ----------
        scheduler : LRScheduler
            A scheduler built without an optimizer.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> opt = stateopt.SGD(lr=0.1).register_trainable_weights(
        ...     {'w': brainstate.ParamState(jnp.zeros(2))})
        >>> opt.add_scheduler(stateopt.StepLR(base_lr=0.1, step_size=1, gamma=0.5))
        >>> opt.lr_scheduler.step(); opt.get_last_lr()
        [0.05]
        """
        if not _is_scheduler(scheduler):
            raise TypeError(f'add_scheduler takes a stateopt scheduler (such as stateopt.StepLR(...)), got '
                            f'{type(scheduler).__name__}: {scheduler!r}')
        scheduler.attach_optimizer(self)

    def lr_apply(self, apply_fn: Callable[[Any], Any]) -> None:
        """Set every group's lr to ``apply_fn(lr)`` (braintools' ``lr_apply``: ``lr_scheduler.apply``).

        Parameters
        ----------
        apply_fn : callable
            ``lr -> new lr``.

        Examples
        --------
        >>> import stateopt
        >>> opt = stateopt.Adam(lr=0.1)
        >>> opt.lr_apply(lambda lr: lr * 0.5)
        >>> opt.get_last_lr()
        [0.05]
        """
        scheduler = self.lr_scheduler
        if scheduler is None:
            raise ValueError('lr_apply: a param group follows its own lr schedule, which a function of the '
                             'current lr cannot change; assign param_groups[i][\'lr\'] instead')
        scheduler.apply(apply_fn)

    @property
    def tx(self) -> optax.GradientTransformation:
        """The default group's step as an optax transformation (braintools' ``tx``; :meth:`default_tx`)."""
        return self.default_tx()

    def default_tx(self) -> optax.GradientTransformation:
        """The default group's whole step as one optax transformation, with its current hyper-parameters.

        Clipping, ``maximize``, weight decay, the algorithm and the lr, as :meth:`update`
        applies them to a group of its own; the updates it returns are ``new - params``, for
        ``optax.apply_updates``. A snapshot: later changes of the hyper-parameters are not
        seen, and an attached scheduler's lr is the one of now.

        Examples
        --------
        >>> import jax.numpy as jnp, optax, stateopt
        >>> tx = stateopt.SGD(lr=0.5).default_tx()
        >>> params = {'w': jnp.array([1.0])}
        >>> updates, _ = tx.update({'w': jnp.array([1.0])}, tx.init(params), params)
        >>> optax.apply_updates(params, updates)['w'].tolist()
        [0.5]
        """
        group = self._groups[0]
        if group.lr_schedule is not None:
            raise ValueError('default_tx: the default group follows a callable lr schedule, which needs the '
                             'step count; use optax.inject_hyperparams around the algorithm instead')
        hp = {key: group[key] for key in self._hyperparams}
        algorithm = type(self)._algorithm(hp)
        options = type(self)._chain_options(hp)

        def update(updates, state, params=None, **extra_args):
            if params is None:
                raise ValueError(f'{type(self).__name__}.default_tx needs params (the step reads them)')
            new, state = chain_update(algorithm, updates, state, params, extra_args=extra_args, **options)
            return jax.tree.map(jnp.subtract, new, params), state

        return optax.GradientTransformationExtraArgs(algorithm.init, update)

    @property
    def param_groups_opt_states(self) -> list:
        """Every param group's algorithm state, in group order (braintools' ``param_groups_opt_states``).

        Read-only values: ``state_dict`` / ``load_state_dict`` change them.
        """
        return list(_RAW(self.opt_state))

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
        return [to_python(group['lr']) for group in self._groups]


    # -- hyper-parameters as attributes (braintools' surface) -----------------------------
    def __getattr__(self, name: str) -> Any:
        """A hyper-parameter's value in the default group: ``opt.betas``, ``opt.momentum``, ..."""
        hyperparams = type(self)._hyperparams
        if name in hyperparams and '_groups' in vars(self):
            return to_python(self._groups[0][name])
        if name in type(self)._setting_params and '_settings' in vars(self):
            return self._settings[name]
        raise AttributeError(f'{type(self).__name__!r} object has no attribute {name!r}')

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self)._hyperparams and name != 'lr' and '_groups' in vars(self):
            self._set_default(name, value)
        elif name in type(self)._setting_params and '_settings' in vars(self):
            raise ValueError(f'{name!r} is fixed when the {type(self).__name__} is built (it shapes the '
                             f'compiled step, which a jitted train step would keep using); build a new '
                             f'{type(self).__name__}({name}=...) instead')
        else:
            super().__setattr__(name, value)

    @property
    def param_states(self) -> UniqueStateManager:
        """The registered States, as a new :class:`UniqueStateManager` (braintools' ``param_states``).

        A copy: register States with :meth:`register_trainable_weights` or
        :meth:`add_param_group`.
        """
        return UniqueStateManager(self._registry.to_pytree())

    def _set_default(self, name: str, value: Any) -> None:
        """``opt.<name> = value``: the new default, set in every group that did not override it.

        Every group checks the value first (a static hyper-parameter is refused there), so a
        refusal changes nothing.
        """
        groups = [group for group in self._groups if name not in group.overridden]
        for group in groups:
            value = group.check(name, value)
        for group in groups:
            group.assign(name, value)
        self.defaults[name] = value

    # -- the scheduler protocol ------------------------------------------------------------
    #: The hyper-parameter the attached scheduler varies besides the lr, or None.
    _cycled: str | None = None

    def scheduler_attached(self, scheduler: Any, cycles: str | None = None, first: Any = None) -> None:
        """Be driven by ``scheduler`` from now on (a scheduler calls this when it attaches).

        The scheduler then reads ``param_groups``, sets values with
        :meth:`ParamGroup.assign` and is told of new groups through its
        ``check_new_group(hyperparams)`` and ``group_added(group)``.

        Parameters
        ----------
        scheduler : LRScheduler
            The scheduler.
        cycles : {'momentum', 'betas', None}
            The hyper-parameter it varies besides the lr.
        first : sequence, optional
            The first value of ``cycles`` for each group, checked before anything changes.

        Raises
        ------
        ValueError
            Another scheduler drives this optimizer, or a group cannot vary ``cycles``
            (a group created with ``momentum=0`` keeps no momentum buffer). Nothing changes.
        """
        if self._scheduler not in (None, scheduler):
            raise ValueError(
                f'the optimizer is already driven by a {type(self._scheduler).__name__}, and an '
                f'optimizer has one lr scheduler. To combine schedulers, build them without the optimizer '
                f'and give it to the composite: SequentialLR(optimizer, [first, second, ...], '
                f'milestones=[...]) or ChainedScheduler([first, second, ...], optimizer)')
        if cycles == 'momentum':
            for group, value in zip(self._groups, first or ()):
                self._check_cycled(scheduler, group, value)
        self._scheduler, self._cycled = scheduler, cycles

    def _check_cycled(self, scheduler: Any, group: ParamGroup | None, value: Any) -> None:
        """Refuse ``group`` (None: a group about to be added) if it cannot follow the cycled momentum."""
        if value is None or is_traced(value):
            return
        try:
            if group is not None:
                self._check_assignment(group, 'momentum', float(value))
            elif value == 0:
                raise ValueError('the new group has momentum=0 and would keep no momentum buffer; give it '
                                 'momentum > 0')
        except ValueError as err:
            raise ValueError(f'{type(scheduler).__name__} cycles the momentum (cycle_momentum=True), '
                             f'but {err}; or pass cycle_momentum=False') from err

    def __repr__(self) -> str:
        """The class, group 0's lr as it is now, the other constructor values, and the sizes."""
        shown = ', '.join([f'{k}={lr_shown(self._groups[0]) if k == "lr" else repr(to_python(v))}'
                           for k, v in self.defaults.items() if k != 'tx' or v is not None] +
                          [f'{k}={"<array>" if hasattr(v, "shape") else repr(v)}'
                           for k, v in self._settings.items() if not callable(v)
                           and not (k in _SETTING_DEFAULTS and v == _SETTING_DEFAULTS[k])])
        return (f'{type(self).__name__}({shown}; {len(self._registry)} params in '
                f'{len(self._groups)} groups, step {int(_RAW(self.step_count))})')


# -- helpers ------------------------------------------------------------------------------


#: The settings of the whole optimizer that every optimizer takes (the training-loop and precision layers).
OPTIMIZER_SETTINGS = (*LOOP_SETTINGS, *PRECISION_SETTINGS)
_SETTING_DEFAULTS = {param.name: param.default for param in OPTIMIZER_SETTINGS}


def _refused(cls: type[OptaxOptimizer]) -> dict[str, str | None]:
    """``{setting: why cls refuses it, or None}`` of the settings an optimizer may refuse."""
    return {'gradient_accumulation_steps': cls._no_accumulation, 'accumulation_dtype': cls._no_accumulation,
            'state_dtype': cls._no_state_dtype}


def _moved(old: Any, leaf: Any) -> bool:
    """Whether the concrete array ``old`` is not where ``leaf`` (an array, or a Sharding) says."""
    where = getattr(leaf, 'sharding', leaf)
    return not is_traced(old) and isinstance(old, jax.Array) and old.sharding != where


def _is_scheduler(value: Any) -> bool:
    return hasattr(value, 'attach_optimizer') and hasattr(value, 'base_lr')


def _declare(cls: type[OptaxOptimizer]) -> None:
    """Make ``cls``'s constructor, hyper-parameter checks and docs from its ``hyperparameters`` table."""
    table = cls.hyperparameters
    names = [param.name for param in table.params]
    if 'weight_decay' in names and 'weight_decay_mask' not in names and (
            cls._decay is not None or cls._masks_own_decay):
        table = cls.hyperparameters = table.with_keyword(WEIGHT_DECAY_MASK)   # every decaying chain takes one
    for param in (*OPTIMIZER_SETTINGS, STATE_SHARDING):     # every optimizer takes these settings
        if param.name not in [param.name for param in table.params] and not _refused(cls).get(param.name):
            table = cls.hyperparameters = table.with_keyword(param)
    signature = table.signature()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            if 'weight_decay_mask' in kwargs and 'weight_decay_mask' not in signature.parameters \
                    and 'weight_decay' in signature.parameters:
                raise TypeError(f'{type(self).__name__} applies its weight decay inside its algorithm (not '
                                f'in the shared chain), so it takes no weight_decay_mask; set '
                                f'weight_decay=0 to turn the decay off') from None
            for name, reason in _refused(type(self)).items():
                if reason and name in kwargs and name not in signature.parameters:
                    raise TypeError(f'{type(self).__name__} takes no {name}: {reason}') from None
            raise TypeError(f'{type(self).__name__}(): {exc}; its signature is '
                            f'{type(self).__name__}{inspect.signature(type(self))}') from None
        bound.apply_defaults()
        self._settings = {name: param.check(name, bound.arguments[name])
                          for name, param in table.settings().items()}
        self._setup(**table.resolve(bound.arguments))

    __init__.__signature__ = signature
    __init__.__qualname__ = f'{cls.__qualname__}.__init__'
    __init__.__module__ = cls.__module__
    __init__.__doc__ = f'A new {cls.__name__}; the parameters are documented on the class.'
    cls.__init__ = __init__
    cls._hyperparams = table.stored()
    cls._setting_params = table.settings()
    doc = inspect.cleandoc(cls.__doc__ or '')
    if '\nParameters\n----------' in doc:
        raise TypeError(f'{cls.__name__} documents its parameters by hand; its hyperparameters table does')
    body, examples = (doc.split('\nExamples\n--------', 1) + [''])[:2]
    shared_decay = 'weight_decay' in cls._hyperparams and table['weight_decay'].doc == WEIGHT_DECAY.doc
    docs = {'weight_decay': DECAY_DOCS[cls._decay]} if shared_decay else {}
    cls.__doc__ = f'{body.rstrip()}\n\n{table.document(docs)}\n' + \
        (f'\nExamples\n--------{examples}' if examples else '')


def _direction(name: str, tx: Any) -> Any:
    """``tx`` if it is an update direction (see :func:`check_direction`)."""
    check_direction(tx)
    return tx


def check_direction(tx: Any) -> None:
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


def _one_of(method: str, states: Any, **alias: Any) -> Any:
    """``states``, or the value given under braintools' name for it (not both, and one of them)."""
    (name, value), = alias.items()
    if states is not None and value is not None:
        raise TypeError(f'{method} takes states or {name}= (its braintools name), not both')
    if states is None and value is None:
        raise TypeError(f'{method} needs the States to register: {method}(states) or {method}({name}=states)')
    return states if value is None else value


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


def packable_optimizers() -> list[str]:
    """The public optimizers whose rule is element-wise, which a :class:`stateopt.PackedParams` can use."""
    found, stack = set(), [OptaxOptimizer]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls._elementwise and cls.__module__ == 'stateopt' and not cls.__name__.startswith('_'):
            found.add(cls.__name__)
    return sorted(found)


def _check_values(pairs: list) -> None:
    """Every new parameter must hold floating-point arrays."""
    for path, state in pairs:
        for leaf in jax.tree.leaves(_RAW(state)):
            dtype = jnp.result_type(leaf)
            if not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(f'the State at key {shown_key(path)} holds a {dtype} array; '
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


_declare(OptaxOptimizer)
