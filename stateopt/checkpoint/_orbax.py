"""Checkpoints of sharded and multi-host state: a directory of steps written by orbax-checkpoint.

A step holds two orbax items. ``tree`` is a JSON file (as Python's ``json`` writes it:
NaN and infinities as ``NaN`` and ``Infinity``), ``{'format': 'stateopt-orbax-tree',
'format_version': 1, 'stateopt_version': ..., 'tree': ...}``, the saved tree in the
encoding of a checkpoint file's payload (see :mod:`stateopt.checkpoint`) in which each
array is ``['stored', dtype name, [dim, ...], name]`` and bytes are
``['bytes', base64 text]``. ``arrays`` is an orbax PyTree of those arrays by name, each
written and read by the processes that hold its shards. An array with no elements has
no data (its name is None) and a tree without arrays has no ``arrays`` item.
"""

from __future__ import annotations

import base64
import numbers
import os
from typing import Any

import jax
import numpy as np

from .._version import __version__
from ._format import (
    _DTYPES,
    CheckpointError,
    _checked_dtype,
    _Corrupt,
    _decode,
    _describe,
    _encode,
    _KeyData,
    _shown_entry,
    _StoredArray,
)
from ._restore import LoadResult, _checked, _commit_plan

TREE_FORMAT = 'stateopt-orbax-tree'
TREE_FORMAT_VERSION = 1
_TREE, _ARRAYS = 'tree', 'arrays'


def _orbax() -> Any:
    """The ``orbax.checkpoint`` module; ImportError saying how to install it."""
    try:
        import orbax.checkpoint as ocp
    except ImportError as exc:
        raise ImportError("stateopt.OrbaxCheckpointManager needs orbax-checkpoint, which is not "
                          "installed: pip install 'stateopt[orbax]' (or pip install orbax-checkpoint)"
                          ) from exc
    return ocp


def _orbax_dtypes() -> frozenset[str]:
    """The names of the dtypes orbax stores: those of a checkpoint file that tensorstore
    (which writes orbax's arrays) knows."""
    import tensorstore

    def known(name: str) -> bool:
        try:
            tensorstore.dtype(name)
        except ValueError:
            return False
        return True

    return frozenset(name for name in _DTYPES if known(name))


class _ArrayStore:
    """The arrays of a target being saved, collected by name while its tree is encoded."""

    def __init__(self, dtypes: frozenset[str]) -> None:
        self.dtypes = dtypes
        self.arrays: dict[str, Any] = {}

    def __call__(self, array: Any, path: tuple) -> list:
        dtype = _checked_dtype(array, path)
        if dtype.name not in self.dtypes:
            raise TypeError(f'{_shown_entry(path)} is an array of dtype {dtype}, which orbax cannot store; '
                            f'cast it to one of {", ".join(sorted(self.dtypes))}, or save it with '
                            f'save_checkpoint')
        shape = [int(dim) for dim in array.shape]
        if not isinstance(array, jax.Array):      # a copy: the caller may change it once save returns
            array = np.array(array, dtype=dtype.newbyteorder('='))
        if array.size == 0:                       # orbax stores no arrays without elements
            return ['stored', dtype.name, shape, None]
        name = str(len(self.arrays))
        self.arrays[name] = array
        return ['stored', dtype.name, shape, name]


def _json_ready(node: Any) -> Any:
    """An encoded tree with its bytes as ``['bytes', base64 text]``, for JSON."""
    if isinstance(node, list):
        return [_json_ready(item) for item in node]
    if isinstance(node, bytes):
        return ['bytes', base64.b64encode(node).decode('ascii')]
    return node


def _stored_arrays(node: Any) -> list[_StoredArray]:
    """The arrays of a decoded tree, in order."""
    if isinstance(node, _StoredArray):
        return [node]
    if isinstance(node, _KeyData):
        return _stored_arrays(node.data)
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, (list, tuple)):
        return [array for item in node for array in _stored_arrays(item)]
    return []


def _with_arrays(node: Any, values: dict[int, Any]) -> Any:
    """A decoded tree with each array replaced by its value read (``values`` by ``id``)."""
    if isinstance(node, _StoredArray):
        return values[id(node)]
    if isinstance(node, _KeyData):
        return _KeyData(node.impl, _with_arrays(node.data, values))
    if isinstance(node, dict):
        return {key: _with_arrays(value, values) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_with_arrays(item, values) for item in node)
    return node


def _without(tree: Any, paths: list[tuple]) -> None:
    """Remove the dict entries at ``paths`` from ``tree`` (the ones a target lacks)."""
    for path in paths:
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]


class OrbaxCheckpointManager:
    """Numbered checkpoints in a directory, written and read by orbax-checkpoint, for
    sharded and multi-host state.

    Every process of a run constructs the manager and calls each method with the same
    arguments: each process writes and reads the shards of the arrays it holds, and
    orbax makes a step appear whole or not at all (a save interrupted midway leaves
    no step behind). The targets are those of :func:`save_checkpoint`: dicts, lists
    and tuples of States (stored as their values), optimizers, schedulers and EMAs
    (anything with ``state_dict()`` and ``load_state_dict()``, stored as its state
    dict), arrays, PRNG key arrays, numbers, strings, bytes and None.

    :meth:`restore` behaves like :func:`load_checkpoint`: it checks the saved tree
    against the target (structure, keys, shapes, dtypes, PRNG implementations), reads
    every array with the dtype and sharding of the target's current array, so that
    each process reads only its own shards and a step saved on one mesh is restored
    exactly onto another, lets each optimizer check its state dict, and only then
    writes anything; on any error every target is left as it was.

    Parameters
    ----------
    directory : str or os.PathLike
        Where the steps go (one subdirectory each, named by the step); created by
        the first save. Any path orbax takes, ``gs://`` included.
    max_to_keep : int or None
        Keep this many of the latest steps and delete older ones as new ones are
        saved; None keeps every step.
    async_save : bool
        If True, :meth:`save` returns once the arrays are copied to host memory and
        writes in the background; :meth:`wait` waits for the write. Training steps
        taken after ``save`` returns do not change what is written.

    Raises
    ------
    ImportError
        orbax-checkpoint is not installed (``pip install 'stateopt[orbax]'``).
    ValueError
        ``max_to_keep`` is not None or a positive int.
    NotADirectoryError
        ``directory`` exists and is not a directory.

    Examples
    --------
    >>> import tempfile, jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.arange(3.0))
    >>> opt = stateopt.AdamW(lr=0.1, weight_decay=0.01).register_trainable_weights({'w': w})
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     with stateopt.OrbaxCheckpointManager(directory, max_to_keep=2) as manager:
    ...         for step in (1, 2, 3):
    ...             opt.update({'w': jnp.ones(3)})
    ...             manager.save(step, {'model': {'w': w}, 'optimizer': opt})
    ...         manager.wait()
    ...         steps = manager.all_steps()
    ...         _ = manager.restore({'model': {'w': w}, 'optimizer': opt}, step=2)
    >>> steps, int(opt.step_count.value)
    ([2, 3], 2)

    Each AdamW step moved ``w`` by ``-0.1 * (1 + 0.01 * w)``; step 2's weights are back:

    >>> [round(float(value), 4) for value in w.value]
    [-0.1999, 0.7981, 1.7961]
    """

    __module__ = 'stateopt'

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = None,
                 async_save: bool = True):
        ocp = _orbax()
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(
                max_to_keep, numbers.Integral) or max_to_keep < 1):
            raise ValueError(f'max_to_keep is {max_to_keep!r}; pass a positive int (the number of '
                             f'latest steps to keep) or None to keep every step')
        name = os.fspath(directory)
        manager = ocp.CheckpointManager(
            name if '://' in name else os.path.abspath(name),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=False,
                                                 enable_async_checkpointing=bool(async_save)),
            item_handlers={_TREE: ocp.JsonCheckpointHandler(), _ARRAYS: ocp.PyTreeCheckpointHandler()})
        if manager.directory.exists() and not manager.directory.is_dir():
            manager.close()
            raise NotADirectoryError(f'{manager.directory} is a file, not a directory of checkpoints; pass '
                                     f'a directory (a new one is created by the first save)')
        self._ocp = ocp
        self._dtypes = _orbax_dtypes()
        self._manager = manager
        self._directory = manager.directory
        self._max_to_keep = max_to_keep
        self._async_save = bool(async_save)

    @property
    def directory(self) -> str:
        """The directory of the steps, as an absolute path."""
        return str(self._directory)

    def all_steps(self) -> list[int]:
        """The saved steps, in increasing order (a step being saved in the background
        included)."""
        return sorted(int(step) for step in self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The latest saved step, or None if there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, target: Any) -> None:
        """Save ``target`` as ``step``.

        With ``async_save`` it returns once the arrays are copied to host memory (a
        save still being written is waited for first). Steps are saved in increasing
        order and never replaced, as with orbax. Nothing is written if ``target`` holds
        something a checkpoint cannot store.

        Parameters
        ----------
        step : int
            A step after the latest saved one (``0`` or more).
        target : pytree
            What to save, as for :func:`save_checkpoint`.

        Raises
        ------
        ValueError
            ``step`` is not an int of 0 or more, or not after the latest step saved
            (naming both); or a value in ``target`` a checkpoint cannot store, naming
            its place.
        TypeError
            A value in ``target`` a checkpoint cannot store, naming its place.
        """
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f'the step is {step!r}; pass an int of 0 or more')
        step = int(step)
        latest = self.latest_step()
        if latest is not None and step <= latest:
            exists = f'step {step} exists in {self.directory}' if step in self.all_steps() else \
                f'step {step} is before the latest step, {latest}, in {self.directory}'
            raise ValueError(f'cannot save step {step}: {exists}, and saved steps are never replaced or '
                             f'inserted before later ones; save a step after {latest}, or use another '
                             f'directory')
        store = _ArrayStore(self._dtypes)
        tree = _json_ready(_encode(target, (), store))
        header = {'format': TREE_FORMAT, 'format_version': TREE_FORMAT_VERSION,
                  'stateopt_version': __version__, 'tree': tree}
        items = {_TREE: self._ocp.args.JsonSave(header)}
        if store.arrays:
            items[_ARRAYS] = self._ocp.args.PyTreeSave(store.arrays)
        self._manager.save(step, args=self._ocp.args.Composite(**items), force=True)

    def wait(self) -> None:
        """Block until the save in the background, if any, is written; raise its error."""
        self._manager.wait_until_finished()

    def restore(self, target: Any, step: int | None = None, *, strict: bool = True) -> LoadResult:
        """Restore ``target`` from ``step`` (the latest if None), all or nothing.

        A save still being written is waited for first. Then the saved tree is
        checked against ``target``; the arrays are read with the dtype and sharding
        of the target's current ones (each process reads its own shards: nothing is
        gathered); optimizers, schedulers and EMAs check their state dicts; and only
        then is anything written, as :func:`load_checkpoint` does. States, optimizers,
        schedulers and EMAs are restored in place; plain values come back in the
        result's ``tree``.

        Parameters
        ----------
        target : pytree
            The template to restore into, shaped like what was saved.
        step : int or None
            The step to restore; None restores the latest.
        strict : bool
            As for :func:`load_checkpoint`: if False, entries that only the target
            or only the checkpoint has are reported instead of refused (and the
            arrays the target lacks are not read).

        Returns
        -------
        LoadResult
            ``(tree, missing_keys, unexpected_keys)``.

        Raises
        ------
        FileNotFoundError
            There is no step to restore (the directory has none, or not ``step``);
            the message lists the steps there are.
        CheckpointMismatchError
            The step does not fit ``target``; the message names the entry. Nothing
            has changed.
        CheckpointError
            The step is damaged (its tree or arrays are missing, unreadable, or do
            not agree with each other). Nothing has changed.
        """
        self.wait()
        steps = self.all_steps()
        if step is None:
            if not steps:
                there = '' if self._directory.exists() else ' (it does not exist)'
                raise FileNotFoundError(f'{self.directory} has no checkpoint to restore{there}; save '
                                        f'one first, or pass the directory the steps were saved in')
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(f'{self.directory} has no checkpoint of step {step!r}; its steps '
                                    f'are {steps}')
        name = f'{self._directory / str(step)}'
        saved = self._read_tree(step, name)
        plan, _ = _checked(name, target, saved, strict)
        _without(saved, plan.unexpected)
        plan_read, tree = _checked(name, target, self._read_arrays(step, name, saved), strict)
        _commit_plan(plan_read, name, strict)
        return LoadResult(tree, [_shown_entry(p) for p in plan.missing],
                          [_shown_entry(p) for p in plan.unexpected])

    def _read_tree(self, step: int, name: str) -> Any:
        """The decoded tree of ``step``, its arrays not read yet."""
        try:
            header = self._manager.restore(step, args=self._ocp.args.Composite(
                **{_TREE: self._ocp.args.JsonRestore()}))[_TREE]
        except (KeyError, FileNotFoundError):
            raise CheckpointError(f'{name} is incomplete or not a stateopt checkpoint: it has no '
                                  f'{_TREE} item') from None
        except Exception as exc:
            raise CheckpointError(f'{name} has an unreadable {_TREE}: {type(exc).__name__}: '
                                  f'{exc}') from None
        if not isinstance(header, dict) or header.get('format') != TREE_FORMAT or 'tree' not in header:
            raise CheckpointError(f'{name} is not a stateopt checkpoint: its {_TREE} is not a '
                                  f'{TREE_FORMAT}')
        if header.get('format_version') != TREE_FORMAT_VERSION:
            raise CheckpointError(f'{name} has tree format version {header.get("format_version")!r}; this '
                                  f'stateopt ({__version__}) reads version {TREE_FORMAT_VERSION}: it was '
                                  f'written by a newer stateopt, or it is corrupt')
        try:
            return _decode(header['tree'], (), stored=True)
        except _Corrupt as exc:
            raise CheckpointError(f'{name} is corrupt: {exc}') from None

    def _read_arrays(self, step: int, name: str, saved: Any) -> Any:
        """``saved`` with its arrays read: like their target arrays where they have one
        (dtype and sharding), as numpy arrays where not."""
        stored = _stored_arrays(saved)
        values = {id(array): np.zeros(array.shape, array.dtype) for array in stored if array.name is None}
        named = [array for array in stored if array.name is not None]
        if not named:
            return _with_arrays(saved, values)
        try:
            metadata = self._manager.item_metadata(step)
        except Exception as exc:
            raise CheckpointError(f'{name} has {_ARRAYS} that cannot be read: {type(exc).__name__}: '
                                  f'{exc}') from None
        metadata = metadata[_ARRAYS] if metadata is not None and _ARRAYS in metadata.keys() else None
        if metadata is None:
            raise CheckpointError(f'{name} is incomplete: its tree has arrays, but it has no {_ARRAYS} '
                                  f'item')
        items, restore_args = {}, {}
        for array in named:
            found = metadata.get(array.name)
            if found is None or tuple(found.shape) != array.shape or np.dtype(found.dtype) != array.dtype:
                held = 'nothing' if found is None else \
                    f'a {np.dtype(found.dtype).name} array of shape {tuple(found.shape)}'
                raise CheckpointError(f'{name} is corrupt: its {_TREE} has {_describe(array)} at '
                                      f'{_shown_entry(array.path)}, its {_ARRAYS} hold {held} there')
            if isinstance(array.like, jax.Array):
                sharding = array.like.sharding
                items[array.name] = jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=sharding)
                restore_args[array.name] = self._ocp.ArrayRestoreArgs(
                    sharding=sharding, global_shape=array.shape, dtype=array.dtype)
            else:
                items[array.name] = np.empty(array.shape, array.dtype)
                restore_args[array.name] = self._ocp.RestoreArgs(restore_type=np.ndarray)
        try:
            read = self._manager.restore(step, args=self._ocp.args.Composite(**{
                _ARRAYS: self._ocp.args.PyTreeRestore(items, restore_args=restore_args,
                                                      partial_restore=True)}))[_ARRAYS]
        except Exception as exc:
            raise CheckpointError(f'{name} has {_ARRAYS} that cannot be read: {type(exc).__name__}: '
                                  f'{exc}') from None
        values.update((id(array), read[array.name]) for array in named)
        return _with_arrays(saved, values)

    def close(self) -> None:
        """Wait for the save in the background and release orbax's resources."""
        self._manager.close()

    def __enter__(self) -> OrbaxCheckpointManager:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f'OrbaxCheckpointManager({self.directory!r}, max_to_keep={self._max_to_keep}, '
                f'async_save={self._async_save})')
