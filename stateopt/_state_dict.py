"""State dicts: everything needed to resume, keyed by parameter names, checked before anything loads."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _hyper
from ._braintools import from_braintools, is_braintools_state_dict
from ._donation import RAW as _RAW
from ._groups import ParamGroup, as_dynamic, to_python
from ._packed import packing_of
from ._slots import LAYOUT_VERSION
from ._state import ReadableKeyError
from ._trace import is_traced

__all__ = ['StateDict', 'StateDicts', 'StateDictKeyError']


class StateDict(dict):
    """An optimizer's state dict: stateopt's layout, which also answers braintools' keys.

    Its entries are those :meth:`StateDicts.state_dict` lists. Reading ``'lr'``,
    ``'base_lr'``, ``'opt_state'`` or ``'param_groups_opt_states'`` (braintools'
    layout) answers from them without storing anything twice: group 0's lr and base
    lr, ``{'state': ..., 'group_state': ...}``, and per group (``'0'``, ``'1'``, ...)
    the same restricted to its parameters. Those keys are not entries: iterating,
    saving and ``jax.tree`` see the layout only (``jax.tree.map`` returns a
    ``StateDict`` again).

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> opt = stateopt.Adam(lr=0.1).register_trainable_weights(
    ...     {'w': brainstate.ParamState(jnp.ones(2))})
    >>> sd = opt.state_dict()
    >>> 'opt_state' in sd, 'opt_state' in list(sd), round(float(sd['lr']), 6), sd['base_lr']
    (True, False, 0.1, 0.1)
    """

    __module__ = 'stateopt'
    #: braintools' keys, answered from the layout.
    BRAINTOOLS_KEYS = ('lr', 'base_lr', 'opt_state', 'param_groups_opt_states')

    def __init__(self, entries: Mapping = (), base_lr: Any = None):
        super().__init__(entries)
        self.base_lr = base_lr

    def __missing__(self, key: Any) -> Any:
        if key not in self.BRAINTOOLS_KEYS or 'param_groups' not in self:
            raise StateDictKeyError(key)
        groups = dict.__getitem__(self, 'param_groups')
        if key == 'lr':
            return groups[0]['lr']
        if key == 'base_lr':
            return groups[0]['lr'] if self.base_lr is None else self.base_lr
        state, group_state = dict.get(self, 'state', {}), dict.get(self, 'group_state', [])
        if key == 'opt_state':
            return {'state': state, 'group_state': group_state}
        return {str(i): {'state': {name: state[name] for name in group['params'] if name in state},
                         'group_state': group_state[i] if i < len(group_state) else {}}
                for i, group in enumerate(groups)}

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (key in self.BRAINTOOLS_KEYS
                                                and dict.__contains__(self, 'param_groups'))

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __reduce__(self):
        return StateDict, (dict(self), self.base_lr)


def _flatten_state_dict(sd: StateDict):
    keys = sorted(dict.keys(sd))
    children = [(jax.tree_util.DictKey(key), dict.__getitem__(sd, key)) for key in keys]
    return children, (tuple(keys), sd.base_lr)


def _unflatten_state_dict(aux, children) -> StateDict:
    keys, base_lr = aux
    return StateDict(zip(keys, children), base_lr=base_lr)


def _flatten_state_dict_leaves(sd: StateDict):
    children, aux = _flatten_state_dict(sd)
    return [value for _, value in children], aux


jax.tree_util.register_pytree_with_keys(StateDict, _flatten_state_dict, _unflatten_state_dict,
                                        flatten_func=_flatten_state_dict_leaves)


class StateDicts:
    """The state-dict part of :class:`stateopt.OptaxOptimizer`."""

    # -- state dicts -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume, keyed by parameter names (never by position).

        Returns
        -------
        dict
            ``version`` (the layout, see below); ``optimizer_class`` (the class name,
            ``'AdamW'``); ``step_count``; ``param_groups`` (each with its parameter names
            and its hyper-parameters); ``state`` (``{param name: {slot: array}}``, the
            moments); ``group_state`` (per group, the slots no parameter owns, like step
            counts); and ``lr_scheduler`` (the attached scheduler's state, or ``None``).
            With ``gradient_accumulation_steps > 1``, ``accumulation``: ``{'micro_step':
            count, 'grads': {param name: summed gradient}}``; with ``skip_nonfinite=True``,
            ``skipped_steps``; with ``master_dtype``, ``master_params`` (``{param name:
            master copy}``, ``None`` for an array that has none).

        Notes
        -----
        Slots are keyed by the names the optimizer declares (``exp_avg``,
        ``exp_avg_sq``, ``momentum_buffer``, ``step``, ... as torch names them where
        torch has the optimizer; ``exp_avg.weight`` for the ``'weight'`` entry of a
        parameter whose value is a dict). Layout version 1, without ``version``, keyed
        them by their path in the algorithm's state (``0.mu`` for Lamb's first moment):
        such state dicts and checkpoints keep loading, each slot found under its path.
        """
        names = self._registry.names
        groups, group_state, per_param = [], [], {}
        for group, state in zip(self._groups, self.opt_state.value):
            record = {'params': [names[i] for i in group._positions]}
            for key in self._hyperparams:
                if _in_state_dict(group, key):
                    record[key] = group[key]
            groups.append(record)
            slots = {}
            for slot, leaf in zip(self._slots(group, group._positions, state), jax.tree.leaves(state)):
                if slot.owner is None:
                    slots[slot.key] = leaf
                else:
                    per_param.setdefault(slot.owner, {})[slot.key] = leaf
            group_state.append(slots)
        loop = {}
        if self._loop.accumulate > 1:
            micro = self.micro_step.value      # at 0 the sum is what the last cycle left: nothing pending
            loop['accumulation'] = {'micro_step': micro, 'grads': dict(zip(names, jax.tree.map(
                lambda a: jnp.where(micro == 0, jnp.zeros_like(a), a), self.accumulated_grads.value)))}
        if self._loop.skip_nonfinite:
            loop['skipped_steps'] = self.skipped_steps.value
        if 'master_params' in vars(self):
            loop['master_params'] = {
                name: jax.tree.structure(_RAW(state)).unflatten(masters)
                for name, state, masters in zip(names, self._registry.states, self.master_params.value)
                if masters is not None}
        packing = packing_of(names, self._registry.paths, self._registry.states)
        if packing is not None:     # keyed by the parameters a buffer holds, as they are unpacked
            per_param = packing.expand_slots(per_param)
            groups = [{**record, 'params': packing.expand_names(record['params'])} for record in groups]
            if 'accumulation' in loop:
                loop['accumulation'] = {**loop['accumulation'],
                                        'grads': packing.expand(loop['accumulation']['grads'])}
            if 'master_params' in loop:
                loop['master_params'] = packing.expand(loop['master_params'])
        return StateDict({
            'version': LAYOUT_VERSION,
            'optimizer_class': type(self).__name__,
            'step_count': self.step_count.value,
            'param_groups': groups,
            'state': per_param,
            'group_state': group_state,
            'lr_scheduler': None if self._scheduler is None else self._scheduler.state_dict(),
            **loop,
        }, base_lr=to_python(self._groups[0].initial_lr))

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
        step_count, new_states, hyper_values, scheduler_state, other_class, loop_values = \
            self._checked_state_dict(state_dict, strict)
        if other_class is not None:
            warnings.warn(f'loading the state dict of {other_class!r} into {type(self).__name__!r} '
                          f'(strict=False): its groups, hyper-parameters and slots fit, but another '
                          f'algorithm wrote them', UserWarning, stacklevel=2)
        self.step_count.value = step_count
        self.opt_state.value = new_states
        for name, state in self._step_states().items():
            state.value = loop_values[name]
        for group, values in zip(self._groups, hyper_values):
            group._hyper.value = self._placed({**_RAW(group._hyper), **values})
        if self._scheduler is not None:
            self._scheduler.load_state_dict(scheduler_state)

    def check_state_dict(self, state_dict: Mapping, strict: bool = True) -> None:
        """Raise what :meth:`load_state_dict` would raise for ``state_dict``; change nothing."""
        self._checked_state_dict(state_dict, strict)

    def _checked_state_dict(self, state_dict: Mapping, strict: bool = True) -> tuple:
        """What :meth:`load_state_dict` writes, after checking all of it.

        ``(step count, optimizer states, dynamic hyper-parameters per group, scheduler
        state, the other optimizer class whose state dict this is or None, the loop
        layer's States' values ``{name: value}``)``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f'load_state_dict expects a dict (what state_dict() returns), got '
                            f'{described(state_dict)}')
        if is_braintools_state_dict(state_dict):   # written by braintools.optim: read as this optimizer's
            state_dict = from_braintools(self, state_dict)
        packing = packing_of(self._registry.names, self._registry.paths, self._registry.states)
        if packing is not None:
            state_dict = _collapsed(packing, state_dict, self._owned_slot_keys())
        required = ('step_count', 'param_groups', 'state', 'group_state', 'lr_scheduler')
        missing = [key for key in required if key not in state_dict]
        if missing:
            raise StateDictKeyError(f'the state dict has no {", ".join(missing)}; pass what '
                                    f'state_dict() returns')
        optional = ('optimizer_class', 'version', 'accumulation', 'skipped_steps', 'master_params')
        unknown = sorted(map(repr, set(state_dict) - {*required, *optional}))
        if unknown:
            raise StateDictKeyError(f'the state dict has the unknown entries {", ".join(unknown)}; its '
                                    f'entries are version, optimizer_class, {", ".join(required)}, and '
                                    f'accumulation, skipped_steps and master_params where the optimizer '
                                    f'has them')
        version = _checked_version(state_dict.get('version', 1))
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
                                 f'{described(slots)}')
        used = {**{(None, index): set() for index in range(count)},
                **{(name, None): set() for name in saved_state}}
        new_states = []
        for index, (group, current) in enumerate(zip(self._groups, _RAW(self.opt_state))):
            never_negative = self._never_negative(group)
            leaves, treedef = jax.tree.flatten(current)
            restored = []
            for found, leaf in zip(self._slots(group, group._positions, current), leaves):
                owner, slot = found.owner, found.key if version == LAYOUT_VERSION else found.v1_key
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
                          if _covers(never_negative, found.key) else None)
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
            raise ValueError(f'lr_scheduler holds {described(scheduler_state)}, but this optimizer has no '
                             f'lr scheduler; build it with the scheduler it was saved with (lr=scheduler)')
        if self._scheduler is not None:
            if scheduler_state is None:
                raise ValueError(f'lr_scheduler is None, but this optimizer has an lr scheduler (a '
                                 f'{type(self._scheduler).__name__}); the state dict was saved from an '
                                 f'optimizer without one')
            self._scheduler.check_state_dict(scheduler_state)
        loop_values = {**self._checked_loop(state_dict), **self._checked_masters(state_dict)}
        return step_count, tuple(new_states), hyper_values, scheduler_state, other_class, loop_values

    def _owned_slot_keys(self) -> dict[str, list]:
        """``{param name: [slot key, ...]}`` of the slots each parameter owns now."""
        keys: dict[str, list] = {}
        for group, state in zip(self._groups, _RAW(self.opt_state)):
            for slot in self._slots(group, group._positions, state):
                if slot.owner is not None:
                    keys.setdefault(slot.owner, []).append(slot.key)
        return keys

    def _checked_masters(self, state_dict: Mapping) -> dict:
        """``{'master_params': masters}`` from ``state_dict``, checked (``{}`` without master weights).

        A state dict saved without masters loads with masters made from the parameters, as at
        registration; masters load only into an optimizer that keeps them, since they hold more
        than the parameters do.
        """
        saved = state_dict.get('master_params')
        if 'master_params' not in vars(self):
            if saved is not None:
                raise ValueError(f'the state dict has master_params (the master copies of low-precision '
                                 f'parameters), but this {type(self).__name__} keeps none; build it with the '
                                 f'master_dtype it was saved with (for example master_dtype=jnp.float32)')
            return {}
        current = _RAW(self.master_params)
        names, states = self._registry.names, self._registry.states
        if saved is None:
            dtype = self._settings['master_dtype']
            return {'master_params': tuple(self._master_of(_RAW(state), dtype) for state in states)}
        expected = {name for name, masters in zip(names, current) if masters is not None}
        if not isinstance(saved, Mapping) or set(saved) != expected:
            got = sorted(map(repr, saved)) if isinstance(saved, Mapping) else described(saved)
            raise StateDictKeyError(f'master_params must hold the master copy of each low-precision param '
                                    f'({", ".join(map(repr, sorted(expected))) or "none"}), got {got}')
        restored = []
        for name, masters in zip(names, current):
            if masters is None:
                restored.append(None)
                continue
            where = f'master_params[{name!r}]'
            got, got_def = jax.tree.flatten(saved[name], is_leaf=lambda leaf: leaf is None)
            if len(got) != len(masters):
                raise ValueError(f'{where} has {len(got)} arrays, expected {len(masters)}')
            entries = []
            for at, (value, like) in enumerate(zip(got, masters)):
                if (value is None) != (like is None):
                    keeps = 'one' if like is not None else 'none'
                    raise ValueError(f'{where}: array {at} {"has no" if value is None else "has a"} master '
                                     f'copy, but this optimizer keeps {keeps}')
                entries.append(None if like is None else _checked_slot(where, value, like, None))
            restored.append(tuple(entries))
        return {'master_params': tuple(restored)}

    def _checked_loop(self, state_dict: Mapping) -> dict:
        """The values of the loop layer's States (:mod:`stateopt._loop`) in ``state_dict``, checked.

        A state dict saved without them (another setting, or before they existed) had no
        summed gradients and no skipped steps; one with summed gradients pending loads only
        into an optimizer that accumulates as many calls.
        """
        values = {}
        skipped = state_dict.get('skipped_steps')
        if self._loop.skip_nonfinite:
            now = _RAW(self.skipped_steps)
            values['skipped_steps'] = (jnp.zeros_like(now) if skipped is None else
                                       _checked_slot('skipped_steps', skipped, now, None))
        elif skipped is not None:
            raise ValueError(f'the state dict has skipped_steps ({described(skipped)}), but this '
                             f'{type(self).__name__} does not skip non-finite steps; build it with '
                             f'skip_nonfinite=True to keep the count')
        saved = state_dict.get('accumulation')
        if saved is None and self._loop.accumulate == 1:
            return values
        if saved is not None and (not isinstance(saved, Mapping) or set(saved) != {'micro_step', 'grads'}):
            raise ValueError(f"accumulation must be a dict {{'micro_step': count, 'grads': {{param name: "
                             f"array}}}}, got {described(saved)}")
        if self._loop.accumulate == 1:
            micro = _checked_slot('accumulation[\'micro_step\']', saved['micro_step'],
                                  jnp.zeros((), jnp.int32), None)
            if int(micro) != 0:
                raise ValueError(f'the state dict holds the gradients of {int(micro)} update calls not yet '
                                 f'stepped on (accumulation[\'micro_step\']), but this {type(self).__name__} '
                                 f'does not accumulate; build it with the gradient_accumulation_steps it was '
                                 f'saved with, or save at an applied step')
            return values
        current = _RAW(self.accumulated_grads)
        if saved is None:
            values.update(micro_step=jnp.zeros_like(_RAW(self.micro_step)),
                          accumulated_grads=jax.tree.map(jnp.zeros_like, current))
            return values
        micro = _checked_slot('accumulation[\'micro_step\']', saved['micro_step'], _RAW(self.micro_step),
                              None)
        if not is_traced(micro) and int(micro) >= self._loop.accumulate:
            raise ValueError(f'accumulation[\'micro_step\'] is {int(micro)}, but this {type(self).__name__} '
                             f'steps every {self._loop.accumulate} calls (gradient_accumulation_steps), so '
                             f'at most {self._loop.accumulate - 1} are summed between steps')
        names = self._registry.names
        grads = saved['grads']
        if not isinstance(grads, Mapping) or set(grads) != set(names):
            got = sorted(map(repr, grads)) if isinstance(grads, Mapping) else described(grads)
            raise StateDictKeyError(f"accumulation['grads'] must hold one summed gradient per registered "
                                    f"param ({', '.join(map(repr, names))}), got {got}")
        restored = []
        for name, now in zip(names, current):
            leaves, treedef = jax.tree.flatten(now)
            got, got_def = jax.tree.flatten(grads[name])
            if got_def != treedef:
                raise ValueError(f"accumulation['grads'][{name!r}] has the structure {got_def}, expected "
                                 f'{treedef}')
            restored.append(treedef.unflatten([
                _checked_slot(f"accumulation['grads'][{name!r}]", value, like, None)
                for value, like in zip(got, leaves)]))
        values.update(micro_step=micro, accumulated_grads=tuple(restored))
        return values

    def _checked_class(self, state_dict: Mapping, strict: bool) -> str | None:
        """The other optimizer class that wrote ``state_dict`` (None if this one), if allowed."""
        mine = type(self).__name__
        if 'optimizer_class' not in state_dict:
            return None
        saved = _plain_string(state_dict['optimizer_class'])
        if saved is None:
            raise ValueError(f'optimizer_class must be the name of the optimizer class that wrote the '
                             f'state dict, got {described(state_dict["optimizer_class"])}')
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
                             f'hyper-parameters, got {described(saved)}')
        if 'params' not in saved:
            raise StateDictKeyError(f"{where}['params'] is missing (the names of the group's parameters)")
        saved_names = _param_names(saved['params'])
        if saved_names is None:
            raise ValueError(f"{where}['params'] must be a list of parameter names, got "
                             f"{described(saved['params'])}")
        if sorted(saved_names) != sorted(group.names):
            raise ValueError(f"{where}['params'] holds the parameters {sorted(saved_names)}, but group "
                             f'{index} of this optimizer holds {sorted(group.names)}')
        values = {}
        for key, spec in self._hyperparams.items():
            if not _in_state_dict(group, key):
                continue
            entry = f'{where}[{key!r}]'
            if key not in saved and key in _ADDED_LATER:     # saved before it existed: it had the old value
                saved = {**saved, key: _ADDED_LATER[key]}
            if key not in saved:
                raise StateDictKeyError(f'{entry} is missing')
            current, value = group[key], saved[key]
            if key in group._static:
                if not _same_static(value, current):
                    raise ValueError(f'{entry} is {described(value)}, but this optimizer has {current!r}; '
                                     f'it is fixed when a group is created, so build the group with the '
                                     f'saved value to load this state dict')
                continue
            if isinstance(current, tuple):
                if not isinstance(value, (tuple, list)) or len(value) != len(current):
                    raise ValueError(f'{entry} must be {len(current)} numbers, got {described(value)}')
                value = tuple(_scalar(f'{entry}[{i}]', v) for i, v in enumerate(value))
            else:
                value = _scalar(entry, value)
            spec.check(entry, to_python(value))
            values[key] = as_dynamic(value)
        unknown = sorted(map(repr, set(saved) - set(self._hyperparams) - {'params'}))
        if unknown:
            raise StateDictKeyError(f'{where} has the unknown keys {", ".join(unknown)}; the '
                                    f'hyper-parameters of {type(self).__name__} are '
                                    f'{", ".join(map(repr, self._hyperparams))}')
        return values


def _collapsed(packing: Any, state_dict: Mapping, slot_keys: Mapping[str, list]) -> dict:
    """``state_dict`` with the entries keyed per parameter joined into the packed buffers' (see
    :mod:`stateopt._packed`); entries of the wrong kind are left for the checks to name."""
    out = dict(state_dict)
    if isinstance(out.get('state'), Mapping):
        out['state'] = packing.collapse_slots(out['state'], 'state', slot_keys)
    if isinstance(out.get('param_groups'), (list, tuple)):
        out['param_groups'] = [
            {**group, 'params': packing.collapse_names(list(group['params']))}
            if isinstance(group, Mapping) and _param_names(group.get('params')) is not None else group
            for group in out['param_groups']]
    saved = out.get('accumulation')
    if isinstance(saved, Mapping) and isinstance(saved.get('grads'), Mapping):
        out['accumulation'] = {**saved, 'grads': packing.collapse(saved['grads'], "accumulation['grads']")}
    if isinstance(out.get('master_params'), Mapping):
        out['master_params'] = packing.collapse(out['master_params'], 'master_params')
    return out


#: Hyper-parameters added after state dicts were first written, and the value older ones ran with.
_ADDED_LATER = {'weight_decay_mask': None}


def _in_state_dict(group: ParamGroup, key: str) -> bool:
    """Whether state dicts carry the group's hyper-parameter ``key``.

    They carry data: numbers, flags, strings. A schedule given as ``lr``, ``tx``, and
    static values that are functions, transforms or optimizers (a Lookahead's base
    optimizer, Sophia's Hessian estimator) are fixed by the code that builds the optimizer.
    """
    if key == 'tx' or (key == 'lr' and group._lr_schedule is not None):
        return False
    if key == 'state_sharding':     # where the state lives is no part of it: it loads onto any layout
        return False
    return key not in group._static or all(
        isinstance(leaf, (bool, int, float, str)) for leaf in jax.tree.leaves(group._static[key]))


class StateDictKeyError(ReadableKeyError):
    """A missing or unknown entry of a state dict, with a message that reads as written."""


def _covers(names: tuple[str, ...], slot: str) -> bool:
    return any(slot == name or slot.startswith(name + '.') for name in names)


def _checked_version(version: Any) -> int:
    """The layout version of a state dict (1 when it has none), if this stateopt reads it."""
    integer = not isinstance(version, bool) and np.ndim(version) == 0 and \
        np.issubdtype(np.asarray(version).dtype, np.integer)
    if not integer or not 1 <= int(version) <= LAYOUT_VERSION:
        raise ValueError(f'version is {described(version)}; this stateopt reads state-dict layouts 1 to '
                         f'{LAYOUT_VERSION} (a newer stateopt may have written it)')
    return int(version)


def _checked_per_group(name: str, saved: Any, count: int, what: str) -> list | tuple:
    """``saved``, a state dict's list with one entry per param group, or an error naming ``name``."""
    if not isinstance(saved, (list, tuple)):
        raise ValueError(f'{name} must be a list of {count} {what}, one per param group, got '
                         f'{described(saved)}')
    if len(saved) != count:
        raise ValueError(f'{name} holds {len(saved)} entries, but this optimizer has {count} param '
                         f'groups; add the same groups (add_param_group) before loading')
    return saved


def described(value: Any) -> str:
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
                         f'{described(saved_state)}')
    known = set(names)
    unknown = sorted((key for key in saved_state if key not in known), key=repr)
    if unknown:
        shown = ', '.join(map(repr, names[:8])) + (f', ... ({len(names)} in all)' if len(names) > 8 else '')
        raise StateDictKeyError(f'{", ".join(f"state[{key!r}]" for key in unknown)}: this optimizer has no '
                                f'parameter of that name; its parameters are {shown or "none"}')
    for key, slots in saved_state.items():
        if not isinstance(slots, Mapping):
            raise ValueError(f'state[{key!r}] must be a dict {{slot: array}}, got {described(slots)}')
    return saved_state


def checked_array(where: str, value: Any, like: Any) -> jax.Array:
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
        return _placed_like(jnp.asarray(value, dtype=dtype), like)
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
        raise ValueError(f'{where} must be {expected}, got {described(value)}')
    return _placed_like(jnp.asarray(value, dtype=dtype), like)


def _placed_like(array: jax.Array, like: Any) -> jax.Array:
    """``array`` on the devices of ``like`` when ``like`` is sharded over a mesh (a loaded slot keeps
    the layout of the one it replaces)."""
    sharding = getattr(like, 'sharding', None)
    if isinstance(sharding, jax.sharding.NamedSharding) and not is_traced(array) and \
            array.sharding != sharding:
        return jax.device_put(array, sharding)
    return array


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
    array = checked_array(where, value, like)
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
        raise ValueError(f'{where} must be a number, got {described(value)}')
    return float(np.asarray(value))
