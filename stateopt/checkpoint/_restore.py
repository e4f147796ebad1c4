"""Restoring a checkpoint into a target: every entry checked first, then all of it committed."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import jax
import numpy as np

from .._braintools import NotBraintoolsFile, read_braintools_checkpoint
from ._format import (
    CheckpointError,
    CheckpointMismatchError,
    _describe,
    _entries_of,
    _is_array,
    _is_key_array,
    _is_stateful,
    _KeyData,
    _read,
    _shown_entry,
    _StoredArray,
    is_state,
)


class LoadResult(NamedTuple):
    """What :func:`load_checkpoint` restored.

    Attributes
    ----------
    tree : Any
        The target with every plain value (array or scalar) replaced by the saved
        one; States, optimizers and schedulers are the target's own objects,
        restored in place. Mappings come back as ``dict``.
    missing_keys : list of str
        Entries of the target that the checkpoint lacks (left as they were).
    unexpected_keys : list of str
        Entries of the checkpoint that the target lacks (ignored).
    """

    tree: Any
    missing_keys: list[str]
    unexpected_keys: list[str]


# -- restoring -----------------------------------------------------------------------------

@dataclass
class _RestorePlan:
    """What a load will write, gathered while everything is checked."""

    states: list = field(default_factory=list)     # (path, State, new value)
    objects: list = field(default_factory=list)    # (path, object, state dict)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)


def _mismatch(path: tuple, saved: Any, template: Any) -> CheckpointMismatchError:
    return CheckpointMismatchError(f'{_shown_entry(path)}: the checkpoint has {_describe(saved)}, '
                                   f'the target has {_describe(template)}')


def _restore(template: Any, saved: Any, path: tuple, plan: _RestorePlan, relaxed: bool) -> Any:
    """The restored counterpart of ``template``; States and objects are queued in ``plan``.

    ``relaxed`` allows missing and unexpected dict entries (recorded in ``plan``);
    inside a State's value every entry must match.
    """
    if is_state(template):
        value = _restore(template.value, saved, path, plan, relaxed=False)
        plan.states.append((path, template, value))
        return template
    if isinstance(template, Mapping):
        if not isinstance(saved, dict):
            raise _mismatch(path, saved, template)
        if not relaxed and saved.keys() != template.keys():
            raise CheckpointMismatchError(
                f'{_shown_entry(path)}: the checkpoint has the keys {sorted(map(repr, saved))}, the '
                f'target has {sorted(map(repr, template))}')
        restored = {}
        for key, child in template.items():
            if key in saved:
                restored[key] = _restore(child, saved[key], path + (key,), plan, relaxed)
            else:
                plan.missing.append(path + (key,))
                restored[key] = child
        plan.unexpected.extend(path + (key,) for key in saved if key not in template)
        return restored
    if isinstance(template, (list, tuple)):
        if type(saved) is not (list if isinstance(template, list) else tuple) \
                or len(saved) != len(template):
            raise _mismatch(path, saved, template)
        items = [_restore(t, s, path + (i,), plan, relaxed)
                 for i, (t, s) in enumerate(zip(template, saved))]
        if isinstance(template, list):
            return items
        return type(template)(*items) if hasattr(template, '_fields') else tuple(items)
    if _is_key_array(template) or _is_array(template):
        return _restored_array(template, saved, path)
    if template is None or isinstance(template, (bool, int, float, complex, str, bytes)):
        if type(saved) is not type(template):
            raise _mismatch(path, saved, template)
        return saved
    if _is_stateful(template):
        state_dict = _restore_state_dict(template.state_dict(), saved, path,
                                         callable(getattr(template, 'check_state_dict', None)))
        plan.objects.append((path, template, state_dict))
        return template
    children = _entries_of(template)
    if children is None:
        raise TypeError(f'{_shown_entry(path)} of the target is a {type(template).__name__}, which a '
                        f'checkpoint cannot restore')
    pairs, treedef = children
    if not isinstance(saved, dict) or set(saved) != {key for key, _ in pairs}:
        raise _mismatch(path, saved, dict(pairs))
    items = [_restore(child, saved[key], path + (key,), plan, relaxed=False) for key, child in pairs]
    return jax.tree_util.tree_unflatten(treedef, items)


#: What a saved array is: read from a file, read by orbax, or not read yet (an orbax checkpoint's,
#: being checked).
_SAVED_ARRAYS = (np.ndarray, jax.Array, _StoredArray)


def _restored_array(template: Any, saved: Any, path: tuple) -> Any:
    """``saved`` with ``template``'s type, dtype and sharding, after checking it fits.

    An array not read yet (a :class:`_StoredArray`) is returned as it is, told to be read
    like ``template`` (a PRNG key array's data like ``template``'s key data).
    """
    if _is_key_array(template):
        impl = str(jax.random.key_impl(template))
        data = jax.random.key_data(template)
        if not isinstance(saved, _KeyData) or saved.impl != impl or saved.data.shape != data.shape:
            raise _mismatch(path, saved, template)
        if isinstance(saved.data, _StoredArray):
            saved.data.like = data
            return saved
        return jax.device_put(jax.random.wrap_key_data(saved.data, impl=impl), template.sharding)
    if not isinstance(saved, _SAVED_ARRAYS):
        raise _mismatch(path, saved, template)
    dtype = np.dtype(template.dtype)
    if tuple(saved.shape) != np.shape(template) or saved.dtype != dtype.newbyteorder('='):
        raise CheckpointMismatchError(
            f'{_shown_entry(path)}: the checkpoint has shape {tuple(saved.shape)} and dtype '
            f'{np.dtype(saved.dtype)}, the target has shape {tuple(np.shape(template))} and dtype {dtype}')
    if isinstance(saved, _StoredArray):
        saved.like = template
        return saved
    if isinstance(template, jax.Array):
        return jax.device_put(saved, template.sharding)
    if isinstance(template, np.generic):
        return saved[()]
    return np.array(saved, dtype=dtype)


def _restore_state_dict(template: Any, saved: Any, path: tuple, checks_itself: bool) -> Any:
    """An object's saved state dict, with its arrays placed like the object's current ones.

    Arrays found where the current state dict has arrays of the same shape and dtype
    get their dtype and sharding. One whose shape or dtype differs is refused here,
    unless the object ``checks_itself`` (has ``check_state_dict``): then it is passed
    on as it is, for the object to accept (an int32 count for an int64 one) or to
    refuse naming the entry in its own terms. Everything else is left for the
    object's own ``load_state_dict`` to check.
    """
    if isinstance(template, Mapping) and isinstance(saved, dict):
        return {key: _restore_state_dict(template[key], value, path + (key,), checks_itself)
                if key in template else value for key, value in saved.items()}
    if isinstance(template, (list, tuple)) and isinstance(saved, (list, tuple)) \
            and len(template) == len(saved):
        items = [_restore_state_dict(t, s, path + (i,), checks_itself)
                 for i, (t, s) in enumerate(zip(template, saved))]
        return items if isinstance(saved, list) else tuple(items)
    if _is_key_array(template) and isinstance(saved, _KeyData):
        return _restored_array(template, saved, path)
    if _is_array(template) and not _is_key_array(template) and isinstance(saved, _SAVED_ARRAYS):
        fits = tuple(saved.shape) == np.shape(template) \
            and saved.dtype == np.dtype(template.dtype).newbyteorder('=')
        return saved if checks_itself and not fits else _restored_array(template, saved, path)
    return saved


def _strictly(method: Any, strict: bool) -> Any:
    """``method``, told ``strict=False`` when it is not strict and has that parameter."""
    if strict:
        return method
    try:
        takes_strict = 'strict' in inspect.signature(method).parameters
    except (TypeError, ValueError):
        takes_strict = False
    return partial(method, strict=False) if takes_strict else method


def _commit_plan(plan: _RestorePlan, name: str, strict: bool) -> None:
    """Write everything in ``plan``, or nothing.

    Objects with a ``check_state_dict`` method check their state dicts before
    anything is written. Should an object still refuse its state dict while
    loading, everything written before it is put back. With ``strict=False``,
    objects whose methods take ``strict`` are given ``strict=False``.
    """
    for path, obj, state_dict in plan.objects:
        check = getattr(obj, 'check_state_dict', None)
        if callable(check):
            try:
                _strictly(check, strict)(state_dict)
            except (KeyError, ValueError, TypeError) as exc:
                raise _refused(name, path, exc) from None
    undo = [partial(setattr, state, 'value', state.value) for _, state, _ in plan.states]
    undo += [partial(obj.load_state_dict, obj.state_dict()) for _, obj, _ in plan.objects]
    writes = [(path, partial(setattr, state, 'value', value)) for path, state, value in plan.states]
    writes += [(path, partial(_strictly(obj.load_state_dict, strict), state_dict))
               for path, obj, state_dict in plan.objects]
    for done, (path, write) in enumerate(writes):
        try:
            write()
        except BaseException as exc:
            error = _refused(name, path, exc) if isinstance(exc, (KeyError, ValueError, TypeError)) else exc
            for (written, _), restore in reversed(list(zip(writes[:done], undo))):
                try:
                    restore()
                except Exception as undo_error:     # an object refusing its own state: go on
                    error.add_note(f'{_shown_entry(written)} could not be put back: {undo_error}')
            if error is exc:
                raise
            raise error from exc


def _refused(name: str, path: tuple, exc: Exception) -> CheckpointMismatchError:
    """An object's refusal of its state dict; a KeyError's message without the quotes it adds."""
    reason = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    return CheckpointMismatchError(f'{name} does not fit the target at {_shown_entry(path)}: {reason}')


def _read_any(name: str) -> Any:
    """A stateopt checkpoint's contents, or the tree of a braintools msgpack checkpoint.

    braintools' files (``braintools.file.msgpack_save``) have no checksum to verify; their
    optimizer state dicts are read by each optimizer's ``load_state_dict``.
    """
    try:
        return _read(name)
    except CheckpointError as error:
        if 'not a stateopt checkpoint' not in str(error):
            raise
        try:
            return read_braintools_checkpoint(name)
        except NotBraintoolsFile:
            raise error from None
        except ValueError as braintools_error:   # starts as braintools' files do, but is not one
            raise CheckpointError(f'{error}; it starts like a braintools msgpack checkpoint but cannot '
                                  f'be read as one: {braintools_error}') from None


def load_checkpoint(path: str | os.PathLike, target: Any, *, strict: bool = True) -> LoadResult:
    """Restore ``target`` from the checkpoint file ``path``, all or nothing.

    The file's checksum is verified first; then every entry is checked against
    ``target`` (structure, keys, shapes, dtypes, PRNG implementations, and each
    optimizer's and scheduler's own checks); only when all of it fits is anything
    written. States get their saved values as jax arrays with the dtype and
    sharding of their current ones; optimizers and schedulers get their saved
    state dicts (step counts, moments, param groups' hyper-parameters and learning
    rates, the attached scheduler), so training resumes bit-identically. Plain
    arrays and numbers come back in the returned tree.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_checkpoint`.
    target : pytree
        The template to restore into, shaped like what was saved (see
        :func:`save_checkpoint`).
    strict : bool
        If False, entries of ``target`` that the checkpoint lacks are left as
        they are and entries the target lacks are ignored, both reported in the
        result; and objects whose ``load_state_dict`` takes ``strict`` are given
        ``strict=False`` (an optimizer then accepts the state of another optimizer
        class whose groups and slots fit, with a warning). Within a State's value
        every entry must be present either way.

    Returns
    -------
    LoadResult
        ``(tree, missing_keys, unexpected_keys)``.

    Raises
    ------
    CheckpointError
        The file is corrupt, truncated, not a checkpoint (a directory, a FIFO or a
        device is refused without being read), or of a newer format.
    CheckpointMismatchError
        The file does not fit ``target``; the message names the entry. Nothing
        in ``target`` has changed.
    FileNotFoundError
        There is no file at ``path``.

    Examples
    --------
    >>> import os, tempfile, jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.ones(2))
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     path = os.path.join(directory, 'run.msgpack')
    ...     stateopt.save_checkpoint(path, {'model': {'w': w}})
    ...     result = stateopt.load_checkpoint(path, {'model': {'w': w}, 'epoch': 0},
    ...                                       strict=False)
    >>> result.missing_keys
    ['epoch']
    """
    name = os.fspath(path)
    plan, tree = _checked(name, target, _read_any(name), strict)
    _commit_plan(plan, name, strict)
    return LoadResult(tree, [_shown_entry(p) for p in plan.missing],
                      [_shown_entry(p) for p in plan.unexpected])


def _checked(name: str, target: Any, saved: Any, strict: bool) -> tuple[_RestorePlan, Any]:
    """What restoring the checkpoint ``name`` (its contents ``saved``) into ``target`` writes,
    and the restored tree, once every entry is checked; nothing is written yet."""
    plan = _RestorePlan()
    try:
        tree = _restore(target, saved, (), plan, relaxed=True)
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(f'{name} does not fit the target at {exc}') from None
    missing = [_shown_entry(p) for p in plan.missing]
    unexpected = [_shown_entry(p) for p in plan.unexpected]
    if strict and (missing or unexpected):
        problems = [f'the checkpoint lacks {", ".join(missing)}'] if missing else []
        problems += [f'the target lacks {", ".join(unexpected)}'] if unexpected else []
        raise CheckpointMismatchError(f'{name} does not fit the target: {"; ".join(problems)}; '
                                      f'pass strict=False to load the entries both have')
    return plan, tree
