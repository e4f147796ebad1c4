"""A scheduler's state dict: its counters and, unless it is part of a composite, the base and current lrs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._hyper import check_number
from .._state_dict import StateDictKeyError, checked_array, described


class SchedulerStateDicts:
    """The part of :class:`LRScheduler` that saves, checks and restores its state."""

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
        self._set_bases(tuple(checked['base_lrs']))
        self._write_values({'lr': tuple(checked['lrs']), 'momentum': None})


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

