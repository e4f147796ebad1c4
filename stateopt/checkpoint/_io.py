"""Writing checkpoints atomically: temporary files, locks, cleanup, kept permissions, background saves."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
import threading
import warnings
from functools import partial
from typing import Any

from ._format import _encode, _frame, _inline_array, _payload

try:
    import fcntl
except ImportError:       # Windows: the temporaries of killed saves are left in place
    fcntl = None

_TOKEN_BYTES = 6           # random bytes in a temporary file's name


# -- writing -------------------------------------------------------------------------------

def _save_error(path: str, target: str, exc: OSError) -> OSError:
    """``exc``, met while saving ``path`` (which writes ``target``), as an error of the same
    kind that names ``path`` and says what to do."""
    directory = os.path.dirname(target)
    where = f'{path} (a symbolic link to {target})' if os.path.islink(path) else path
    advice = {
        errno.ENOENT: f'the directory {directory} does not exist; create it first (os.makedirs)',
        errno.ENOTDIR: f'a part of {directory} is not a directory; pass a path in a directory',
        errno.EROFS: 'it is on a read-only file system; save to a writable location',
        errno.EACCES: f'no permission to write files in the directory {directory}; save elsewhere or '
                      f'make the directory writable',
        errno.ENOSPC: 'no space left on the device; free some space or save elsewhere (the file that '
                      'was there is intact)',
        errno.EDQUOT: 'the disk quota is exceeded; free some space or save elsewhere (the file that '
                      'was there is intact)',
        errno.EISDIR: 'it is a directory; pass a file name, for example one inside it',
        errno.EEXIST: 'it exists; pass overwrite=True to replace it',
        errno.ENAMETOOLONG: 'the name is too long for the file system; pass a shorter one',
        errno.ELOOP: 'its symbolic links form a loop; fix the links or pass another path',
    }
    advice[errno.EPERM] = advice[errno.EACCES]
    reason = advice.get(exc.errno) or f'{exc.strerror or exc}; the file that was there is intact'
    message = f'cannot save the checkpoint {where}: {reason}'
    if exc.errno is None:
        return OSError(message)
    try:
        return type(exc)(exc.errno, message)
    except TypeError:                       # an OSError subclass with other arguments
        return OSError(exc.errno, message)


def _target(path: str, overwrite: bool) -> str:
    """The file a save to ``path`` writes: ``path``, or what its chain of symbolic links
    points to (existing or not). Refuses what the save must not write, naming ``path``."""
    try:
        target = os.path.realpath(path, strict=True)
    except FileNotFoundError:
        target = os.path.realpath(path)
    except OSError as exc:                   # a loop of links
        raise _save_error(path, os.path.abspath(path), exc) from None
    if os.path.isdir(target):
        raise _save_error(path, target, IsADirectoryError(errno.EISDIR, 'is a directory'))
    if not overwrite and os.path.lexists(path):
        if not os.path.exists(target):
            raise FileExistsError(errno.EEXIST, f'cannot save the checkpoint {path}: it is a symbolic link '
                                                f'to {target}, which does not exist; pass overwrite=True '
                                                f'to write {target}')
        raise _save_error(path, target, FileExistsError(errno.EEXIST, 'exists'))
    return target


def _name_max(directory: str) -> int:
    try:
        limit = os.pathconf(directory, 'PC_NAME_MAX')
    except (AttributeError, OSError, ValueError):
        return 255
    return limit if limit and limit > 0 else 255


def _temporaries(target: str) -> tuple[str, re.Pattern]:
    """The name prefix of ``target``'s temporary files, and the pattern of their names.

    A temporary is ``.<name>.<tag>-<random>.tmp`` beside ``target``: ``<tag>`` (8 hex
    digits of the SHA-256 of the whole name) tells the checkpoint apart, and ``<name>``
    is cut (at a character) to keep the whole within the file system's limit on names.
    """
    directory, name = os.path.split(target)
    raw = os.fsencode(name)
    tag = hashlib.sha256(raw).hexdigest()[:8]
    room = max(0, _name_max(directory) - len(f'..{tag}-.tmp') - 2 * _TOKEN_BYTES)
    if room < len(raw):
        while room and raw[room] & 0xC0 == 0x80:     # not inside a UTF-8 sequence
            room -= 1
        raw = raw[:room]
    prefix = f'.{os.fsdecode(raw)}.{tag}-'
    return prefix, re.compile(re.escape(prefix) + f'[0-9a-f]{{{2 * _TOKEN_BYTES}}}' + re.escape('.tmp'))


def _remove_stale(directory: str, pattern: re.Pattern) -> None:
    """Remove the temporaries of this checkpoint that no process is writing.

    A save holds an exclusive ``flock`` on its temporary until it is renamed, so one
    whose lock can be taken was left by a save that was killed. Without ``fcntl``
    nothing is removed.
    """
    if fcntl is None:
        return
    try:
        names = [entry.name for entry in os.scandir(directory) if pattern.fullmatch(entry.name)]
    except OSError:
        return
    flags = os.O_RDWR | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_NOFOLLOW', 0)
    for name in names:
        temporary = os.path.join(directory, name)
        try:
            descriptor = os.open(temporary, flags)
        except OSError:
            continue
        try:
            status = os.fstat(descriptor)
            if stat.S_ISREG(status.st_mode):
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)     # raises if a save is writing it
                if os.path.samestat(status, os.lstat(temporary)):
                    os.remove(temporary)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def _create_temporary(directory: str, prefix: str) -> tuple[str, int]:
    """A new temporary file and its descriptor, locked until it is closed (see _remove_stale)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0)
    while True:
        temporary = os.path.join(directory, f'{prefix}{secrets.token_hex(_TOKEN_BYTES)}.tmp')
        descriptor = os.open(temporary, flags, 0o666)
        if fcntl is None:
            return temporary, descriptor
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:          # another save took it for stale and removes it: a new name
            os.close(descriptor)
            with contextlib.suppress(OSError):
                os.remove(temporary)
            continue
        except OSError:                  # no locks here: no save can take a temporary for stale either
            return temporary, descriptor
        if os.fstat(descriptor).st_nlink:                # not removed by another save in between
            return temporary, descriptor
        os.close(descriptor)


def _keep_ownership(descriptor: int, previous: os.stat_result) -> None:
    """Give the new file the owner, group and mode of the file it replaces, where allowed."""
    now = os.fstat(descriptor)
    if hasattr(os, 'fchown') and (now.st_uid, now.st_gid) != (previous.st_uid, previous.st_gid):
        try:
            os.fchown(descriptor, previous.st_uid, previous.st_gid)
        except PermissionError:                          # not the owner: keep the group if one may
            with contextlib.suppress(PermissionError):
                os.fchown(descriptor, -1, previous.st_gid)
    if hasattr(os, 'fchmod'):
        os.fchmod(descriptor, stat.S_IMODE(previous.st_mode))


def _write_all(descriptor: int, pieces: list) -> None:
    for piece in pieces:
        view = memoryview(piece).cast('B')
        while view:
            view = view[os.write(descriptor, view):]


def _write_atomic(path: str, pieces: list, overwrite: bool) -> None:
    """Write ``pieces`` to a new file beside the file ``path`` names, fsync it, and rename it
    over that file (the end of ``path``'s symbolic links, which stay); errors name ``path``."""
    target = _target(path, overwrite)
    directory = os.path.dirname(target)
    prefix, pattern = _temporaries(target)
    try:
        _remove_stale(directory, pattern)
        temporary, descriptor = _create_temporary(directory, prefix)
    except OSError as exc:
        raise _save_error(path, target, exc) from None
    try:
        try:
            previous = os.stat(target)
        except FileNotFoundError:
            previous = None
        if previous is not None:
            _keep_ownership(descriptor, previous)
        _write_all(descriptor, pieces)
        os.fsync(descriptor)
        if overwrite:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)     # refuses to replace an existing file, atomically
            os.remove(temporary)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if isinstance(exc, OSError):
            raise _save_error(path, target, exc) from None
        raise
    finally:
        os.close(descriptor)                # releases the lock, once the temporary is renamed
    if hasattr(os, 'O_DIRECTORY'):
        try:
            directory_descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory_descriptor)
            finally:
                os.close(directory_descriptor)
        except OSError as exc:
            raise _save_error(path, target, exc) from None


def _write(path: str, encoded: Any, overwrite: bool) -> None:
    _write_atomic(path, _frame(_payload(encoded)), overwrite)


# -- background saves ----------------------------------------------------------------------

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_failed: list[CheckpointSave] = []       # background saves that failed and were not reported yet


def _forget_executor() -> None:
    """In a forked child the writer thread is gone: start a new one on the next save."""
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()
    _failed.clear()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_forget_executor)


def _unreported() -> list[CheckpointSave]:
    """The failed background saves nobody has heard of, marked as reported now."""
    with _executor_lock:
        failures = [save for save in _failed if not save._reported]
        _failed.clear()
        for save in failures:
            save._reported = True
    return failures


def _raise_unreported(path: str, call: str) -> None:
    """Raise the error of a failed background save that nobody waited for, if there is one."""
    failures = _unreported()
    if not failures:
        return
    error = failures[0]._future.exception()
    error.add_note(f'save_checkpoint_async({failures[0].path!r}) failed in the background and nobody '
                   f'waited for it; {call}({path!r}) reports it and saved nothing')
    for other in failures[1:]:
        other_error = other._future.exception()
        error.add_note(f'save_checkpoint_async({other.path!r}) failed as well: '
                       f'{type(other_error).__name__}: {other_error}')
    raise error


def _warn_unreported() -> None:
    """At exit (after the writer has finished): warn of failed saves nobody has heard of."""
    for save in _unreported():
        error = save._future.exception()
        warnings.warn(f'save_checkpoint_async({save.path!r}) failed in the background and nobody waited '
                      f'for it: {type(error).__name__}: {error}', RuntimeWarning, stacklevel=1)


atexit.register(_warn_unreported)


def _wait_for_queued() -> None:
    """Block until every save queued so far is written (or has failed)."""
    with _executor_lock:
        executor = _executor
    if executor is not None:
        executor.submit(int).result()


def _submit(path: str | os.PathLike, target: Any, overwrite: bool, copy: bool,
            call: str) -> CheckpointSave:
    """Encode ``target`` now and queue the write; saves are written in call order."""
    global _executor
    path = os.fspath(path)
    _raise_unreported(path, call)
    _target(path, overwrite)
    encoded = _encode(target, (), partial(_inline_array, copy=copy))
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix='stateopt-checkpoint')
        future = _executor.submit(_write, path, encoded, overwrite)
    return CheckpointSave(path, future)


class CheckpointSave:
    """A checkpoint being written in the background (see :func:`save_checkpoint_async`).

    A failed write is reported once: by :meth:`wait`, or else by the next
    :func:`save_checkpoint` or :func:`save_checkpoint_async` call (which raises the
    error and saves nothing), or else by a ``RuntimeWarning`` when the interpreter
    exits. :meth:`wait` raises it whenever it is called.

    Examples
    --------
    >>> import os, tempfile, jax.numpy as jnp, stateopt
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     save = stateopt.save_checkpoint_async(os.path.join(directory, 'a.msgpack'),
    ...                                           {'x': jnp.ones(2)})
    ...     save.wait()
    ...     save.done()
    True
    """

    __module__ = 'stateopt'

    def __init__(self, path: str, future: concurrent.futures.Future):
        self.path = path
        self._future = future
        self._reported = False
        future.add_done_callback(self._finished)

    def _finished(self, future: concurrent.futures.Future) -> None:
        if future.exception() is not None:
            with _executor_lock:
                _failed.append(self)

    def done(self) -> bool:
        """Whether the write has finished (successfully or not)."""
        return self._future.done()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the file is written; raise the error the write met, if any.

        Raises
        ------
        TimeoutError
            The write has not finished after ``timeout`` seconds.
        OSError
            The write failed (the message names the path); the file that was
            there is intact.
        """
        try:
            self._future.result(timeout)
        except BaseException:
            if self._future.done():
                self._reported = True
            raise

    def __repr__(self) -> str:
        return f'CheckpointSave({self.path!r}, done={self.done()})'


def save_checkpoint(path: str | os.PathLike, target: Any, *, overwrite: bool = True) -> None:
    """Write ``target`` to the checkpoint file ``path``, atomically.

    ``target`` is a nested dict (or list or tuple) whose leaves are brainstate
    States, dicts of States (``model.states(brainstate.ParamState)``, tuple keys
    included), optimizers and schedulers (anything with ``state_dict()`` and
    ``load_state_dict()``), arrays (numpy, jax, typed PRNG keys), numbers, strings,
    bytes or None. The file (layout in :mod:`stateopt.checkpoint`) holds a header
    with the format name and version, the stateopt version and a SHA-256 checksum,
    then the msgpack payload. It is written to a temporary file in the same
    directory, flushed to disk and renamed over ``path``, so a crash at any moment
    leaves either the previous file or the new one, never a mix. A killed save may
    leave its hidden temporary (``.<name>.<tag>-<random>.tmp``) behind; the next
    save of the same checkpoint removes it (on systems with ``fcntl``), never one
    that another process is still writing.

    If ``path`` is a symbolic link (``latest.msgpack -> run-7.msgpack``), the file
    it points to (through any chain of links) is written and the link stays. A file
    that is replaced keeps its permissions, and its owner and group where the
    process may set them; a new file gets the umask's permissions.

    Saves queued with :func:`save_checkpoint_async` are written first; if one of
    them failed and nobody waited for it, this call raises its error and saves
    nothing (see :class:`CheckpointSave`).

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.
    target : pytree
        What to save, as described above.
    overwrite : bool
        If False, refuse to replace an existing file or to write through a
        symbolic link, atomically (this needs a file system with hard links).

    Raises
    ------
    FileExistsError
        ``overwrite=False`` and ``path`` exists (or is a symbolic link); nothing is
        written.
    TypeError, ValueError
        A value a checkpoint cannot store, naming its place in ``target``; nothing
        is written. A jax array on devices of several processes (of a multi-host
        run, sharded or replicated) is one: save multi-host state with
        :class:`OrbaxCheckpointManager`.
    OSError
        The file could not be written (a missing directory, a read-only file
        system, a full disk, ``path`` is a directory, ...): the message names
        ``path`` and says what to do; the previous file at ``path`` is intact and
        no temporary file is left.

    Examples
    --------
    >>> import os, tempfile, jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.arange(3.0))
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     path = os.path.join(directory, 'run.msgpack')
    ...     stateopt.save_checkpoint(path, {'model': {'w': w}, 'epoch': 3})
    ...     w.value = jnp.zeros(3)
    ...     result = stateopt.load_checkpoint(path, {'model': {'w': w}, 'epoch': 0})
    >>> w.value.tolist(), result.tree['epoch']
    ([0.0, 1.0, 2.0], 3)
    """
    _wait_for_queued()
    _submit(path, target, overwrite, copy=False, call='save_checkpoint').wait()


def save_checkpoint_async(path: str | os.PathLike, target: Any, *,
                          overwrite: bool = True) -> CheckpointSave:
    """Start :func:`save_checkpoint` in the background and return at once.

    The values are copied to host memory before this returns, so training steps
    taken afterwards do not change what is written. Saves are written one at a
    time, in call order, and pending saves finish before the interpreter exits.

    A failed write is reported once (see :class:`CheckpointSave`): by ``wait()``;
    else by the next ``save_checkpoint`` or ``save_checkpoint_async`` call, which
    raises its error and saves nothing (as orbax's ``AsyncCheckpointer`` does); else
    by a ``RuntimeWarning`` at exit naming the path and the error.

    Returns
    -------
    CheckpointSave
        ``wait()`` blocks until the file is written and raises any error the
        write met; ``done()`` tells whether it has finished.

    Raises
    ------
    FileExistsError, TypeError, ValueError
        As :func:`save_checkpoint`, at once, before anything is queued.
    OSError
        The error of an earlier background save that failed and that nobody
        waited for; nothing is queued.

    Examples
    --------
    >>> import os, tempfile, jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.ones(2))
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     path = os.path.join(directory, 'run.msgpack')
    ...     save = stateopt.save_checkpoint_async(path, {'w': w})
    ...     w.value = w.value * 5          # after the call: not in the file
    ...     save.wait()
    ...     _ = stateopt.load_checkpoint(path, {'w': w})
    >>> w.value.tolist()
    [1.0, 1.0]
    """
    return _submit(path, target, overwrite, copy=True, call='save_checkpoint_async')


