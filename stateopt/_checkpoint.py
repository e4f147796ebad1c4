"""msgpack checkpoints of States, optimizers, schedulers and arrays.

A checkpoint is one file, written atomically and verified before anything is
restored from it. Format version 1 lays the file out as follows (integers are
unsigned big-endian)::

    offset  size  field
    0       8     magic bytes  b'\\x89STOPT\\r\\n'
    8       4     format version (1)
    12      32    SHA-256 of bytes [0, 12) followed by bytes [44, end of file)
    44      4     header length H (at most 65536)
    48      H     header: a msgpack map {'format': 'stateopt-checkpoint',
                  'format_version': 1, 'stateopt_version': '<stateopt.__version__>'}
    48 + H  ...   payload: the msgpack encoding of the saved tree

The checksum covers every byte but its own (the header length included), so any
corruption or truncation is detected. A reader checks the magic bytes, the version
and the header before it reads the payload, so a file that is not a checkpoint
costs a few bytes of reading. In the payload every container is a msgpack array
whose first element names its kind, so keys of any hashable kind survive, tuple
keys included:

=====================  ===============================================================
Python value           msgpack encoding
=====================  ===============================================================
None, bool, int,       themselves (int from -2**63 to 2**64 - 1; float as float64)
float, str, bytes
complex                ``['complex', real, imag]``
dict (and any          ``['dict', key, value, key, value, ...]``; keys are None, bool,
Mapping)               int, float, str or tuples of those, encoded like values
list, tuple            ``['list', item, ...]``, ``['tuple', item, ...]``
array (numpy, jax,     ``['array', dtype name, [dim, ...], data]``, the data as raw
numpy scalar)          little-endian C-order bytes, for bool, (u)int8-64,
                       float16/32/64, complex64/128, bfloat16 and the other ml_dtypes types
typed PRNG key array   ``['key', implementation name, <its key_data as an array>]``
other pytree node      ``['dict', child key, child, ...]`` over its children
=====================  ===============================================================

A State is stored as its value, and an optimizer or a scheduler (any object with
``state_dict()`` and ``load_state_dict()``) as its state dict, so a file holds plain
data only: nothing in it is unpickled or executed. One array holds at most 4 GiB
(msgpack's limit for one binary).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import errno
import hashlib
import inspect
import math
import os
import re
import secrets
import stat
import struct
import threading
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import brainstate
import jax
import ml_dtypes
import msgpack
import numpy as np

from ._state import path_key
from ._version import __version__

try:
    import fcntl
except ImportError:       # Windows: the temporaries of killed saves are left in place
    fcntl = None

__all__ = [
    'CheckpointError', 'CheckpointMismatchError', 'CheckpointSave', 'LoadResult',
    'save_checkpoint', 'save_checkpoint_async', 'load_checkpoint',
]

FORMAT_NAME = 'stateopt-checkpoint'
FORMAT_VERSION = 1
MAGIC = b'\x89STOPT\r\n'
_PREFIX = struct.Struct('>8sI32sI')   # magic, format version, SHA-256, header length
_DIGEST = slice(12, 44)
#: Containers nest at most this deep, in a target and in a file.
MAX_DEPTH = 64
_INLINE_BYTES = 1 << 16    # larger arrays are written from their own buffers, uncopied
_MAX_HEADER = 1 << 16      # bytes a header may have
_TOKEN_BYTES = 6           # random bytes in a temporary file's name

_DTYPES = {np.dtype(t).name: np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, np.complex64, np.complex128)}
_DTYPES.update({name: np.dtype(getattr(ml_dtypes, name)) for name in (
    'bfloat16', 'float8_e3m4', 'float8_e4m3', 'float8_e4m3b11fnuz', 'float8_e4m3fn',
    'float8_e4m3fnuz', 'float8_e5m2', 'float8_e5m2fnuz', 'float8_e8m0fnu', 'float4_e2m1fn',
    'float6_e2m3fn', 'float6_e3m2fn', 'int2', 'int4', 'uint2', 'uint4') if hasattr(ml_dtypes, name)})


class CheckpointError(Exception):
    """A checkpoint file that cannot be read: corrupt, truncated, or not a checkpoint
    (another kind of file, a directory, a FIFO, a device).

    Every damaged file raises this class (or :class:`CheckpointMismatchError`);
    no other error escapes from reading one. A missing or unreadable file raises
    the usual ``OSError`` (``FileNotFoundError``, ``PermissionError``).
    """

    __module__ = 'stateopt'


class CheckpointMismatchError(CheckpointError):
    """An intact checkpoint that does not fit the target it is loaded into.

    Raised for missing or unexpected entries (with ``strict=True``), and for a
    different structure, shape, dtype or PRNG implementation, or a state dict the
    object refuses. The message names the entry, e.g. ``model/('l1', 'weight')/weight``.
    """

    __module__ = 'stateopt'


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


# -- naming and kinds ----------------------------------------------------------------------

def _where(path: tuple) -> str:
    """A path inside the tree as errors show it: ``model/('l1', 'weight')/weight``."""
    if not path:
        return '<root>'
    return '/'.join(key if isinstance(key, str) else repr(key) for key in path)


def _is_state(value: Any) -> bool:
    return isinstance(value, brainstate.State)


def _is_stateful(value: Any) -> bool:
    """An object restored through its own ``state_dict()`` / ``load_state_dict()``."""
    return callable(getattr(value, 'state_dict', None)) and \
        callable(getattr(value, 'load_state_dict', None))


def _is_key_array(value: Any) -> bool:
    return isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, np.generic, jax.Array))


@dataclass(frozen=True)
class _KeyData:
    """A decoded PRNG key array: its implementation name and raw key data."""

    impl: str
    data: np.ndarray


def _describe(value: Any) -> str:
    if isinstance(value, _KeyData):
        return f'a {value.impl} PRNG key array of shape {value.data.shape[:-1]}'
    if _is_key_array(value):
        return f'a {jax.random.key_impl(value)} PRNG key array of shape {value.shape}'
    if _is_array(value):
        return f'a {np.dtype(value.dtype).name} array of shape {tuple(np.shape(value))}'
    if isinstance(value, Mapping):
        return f'a dict of {len(value)} entries'
    if isinstance(value, (list, tuple)):
        return f'a {"list" if isinstance(value, list) else "tuple"} of {len(value)} items'
    if value is None:
        return 'None'
    return f'the {type(value).__name__} {value!r}'


def _children(node: Any) -> tuple[list, Any] | None:
    """``([(key, child), ...], treedef)`` of a registered pytree node, or None for a leaf."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:
        return None
    return [(path_key(path[0]), child) for path, child in pairs], treedef


# -- encoding ------------------------------------------------------------------------------

def _encode(node: Any, path: tuple, copy: bool) -> Any:
    """``node`` (a target) as msgpack-ready lists; arrays are read (and copied if ``copy``)."""
    if len(path) > MAX_DEPTH:
        raise ValueError(f'{_where(path[:MAX_DEPTH])} nests deeper than {MAX_DEPTH} levels')
    if _is_state(node):
        return _encode(node.value, path, copy)
    if isinstance(node, jax.core.Tracer):
        raise TypeError(f'{_where(path)} is a traced value; save checkpoints outside jit')
    if _is_key_array(node):
        data = _encode(jax.random.key_data(node), path, copy)
        return ['key', str(jax.random.key_impl(node)), data]
    if _is_array(node):
        return _encode_array(node, path, copy)
    if isinstance(node, Mapping):
        items = ['dict']
        for key, value in node.items():
            items.append(_encode_key(key, path))
            items.append(_encode(value, path + (key,), copy))
        return items
    if isinstance(node, (list, tuple)):
        kind = 'list' if isinstance(node, list) else 'tuple'
        return [kind] + [_encode(item, path + (i,), copy) for i, item in enumerate(node)]
    if node is None or isinstance(node, (bool, float, str, bytes)):
        return node
    if isinstance(node, int):
        if not -2 ** 63 <= node < 2 ** 64:
            raise ValueError(f'{_where(path)} is the int {node}, outside the 64-bit range a '
                             f'checkpoint stores; store it as a string')
        return node
    if isinstance(node, complex):
        return ['complex', node.real, node.imag]
    if _is_stateful(node):
        return _encode(node.state_dict(), path, copy)
    children = _children(node)
    if children is None:
        raise TypeError(f'{_where(path)} is a {type(node).__name__}, which a checkpoint cannot '
                        f'store; store States, optimizers, schedulers, arrays, numbers, strings '
                        f'and dicts, lists or tuples of them')
    return _encode(dict(children[0]), path, copy)


def _encode_key(key: Any, path: tuple) -> Any:
    if key is None or isinstance(key, (bool, int, float, str)):
        return _encode(key, path, False)
    if isinstance(key, tuple):
        return ['tuple'] + [_encode_key(part, path) for part in key]
    raise TypeError(f'{_where(path)} has the key {key!r} of type {type(key).__name__}; checkpoint '
                    f'keys are None, bools, ints, floats, strings or tuples of them')


def _encode_array(array: Any, path: tuple, copy: bool) -> list:
    array = np.asarray(array)
    name = array.dtype.name
    if _DTYPES.get(name) != array.dtype.newbyteorder('='):
        raise TypeError(f'{_where(path)} is an array of dtype {array.dtype}, which a checkpoint '
                        f'cannot store; the dtypes are {", ".join(_DTYPES)}')
    if array.nbytes >= 2 ** 32:
        raise ValueError(f'{_where(path)} is an array of {array.nbytes} bytes; a checkpoint stores '
                         f'arrays of up to 4 GiB (2**32 - 1 bytes) each: split it into several')
    little = array.dtype.newbyteorder('<')
    if array.dtype != little:
        array = array.astype(little, order='C')
    elif copy:
        array = np.array(array, order='C')
    else:
        array = np.asarray(array, order='C')
    return ['array', name, list(array.shape), memoryview(array.reshape(-1).view(np.uint8))]


# -- the file ------------------------------------------------------------------------------

def _payload(encoded: Any) -> list:
    """The msgpack encoding of ``encoded``, in pieces that leave large arrays' bytes uncopied."""
    packer = msgpack.Packer()
    pieces, run = [], bytearray()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            run.extend(packer.pack_array_header(len(node)))
            for item in node:
                walk(item)
        elif isinstance(node, memoryview) and node.nbytes > _INLINE_BYTES:
            run.extend(struct.pack('>BI', 0xC6, node.nbytes))     # msgpack's bin 32 header
            pieces.extend((bytes(run), node))
            run.clear()
        else:
            run.extend(packer.pack(node))

    walk(encoded)
    pieces.append(bytes(run))
    return pieces


def _frame(payload: list) -> list:
    """The file's bytes, in pieces: magic and version, checksum, header, payload."""
    header = msgpack.packb({'format': FORMAT_NAME, 'format_version': FORMAT_VERSION,
                            'stateopt_version': __version__})
    opening = struct.pack('>8sI', MAGIC, FORMAT_VERSION)
    rest = [struct.pack('>I', len(header)), header, *payload]
    digest = hashlib.sha256(opening)
    for piece in rest:
        digest.update(piece)
    return [opening, digest.digest(), *rest]


def _file_kind(path: str, status: os.stat_result) -> str:
    """What a file that is not a regular one is: ``a FIFO``, ``a symbolic link to a directory``."""
    mode = status.st_mode
    kind = ('a directory' if stat.S_ISDIR(mode) else 'a FIFO' if stat.S_ISFIFO(mode)
            else 'a character device' if stat.S_ISCHR(mode) else 'a block device' if stat.S_ISBLK(mode)
            else 'a socket' if stat.S_ISSOCK(mode) else 'not a regular file')
    return f'a symbolic link to {kind}' if os.path.islink(path) else kind


def _read_verified(path: str) -> memoryview:
    """The payload of the checkpoint file ``path``, read after its magic bytes, version and
    header are checked and verified against the checksum; CheckpointError if anything is off.

    Only regular files are opened (a FIFO would block, a device never ends), and no
    more than the file's own size is ever read or allocated.
    """
    status = os.stat(path)
    if not stat.S_ISREG(status.st_mode):
        raise CheckpointError(f'{path} is {_file_kind(path, status)}, not a checkpoint file; pass the path '
                              f'of a file written by save_checkpoint')
    descriptor = os.open(path, os.O_RDONLY | getattr(os, 'O_BINARY', 0) | getattr(os, 'O_NONBLOCK', 0))
    with open(descriptor, 'rb') as file:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):          # replaced since os.stat
            raise CheckpointError(f'{path} is not a regular file, not a checkpoint file; pass the path '
                                  f'of a file written by save_checkpoint')
        opening = file.read(_PREFIX.size)
        if len(opening) < _PREFIX.size:
            raise CheckpointError(f'{path} is truncated or not a stateopt checkpoint: it has '
                                  f'{len(opening)} bytes, fewer than a header')
        magic, version, digest, header_size = _PREFIX.unpack(opening)
        if magic != MAGIC:
            raise CheckpointError(f'{path} is not a stateopt checkpoint (its first bytes are {magic!r})')
        if version != FORMAT_VERSION:
            raise CheckpointError(f'{path} has checkpoint format version {version}; this stateopt '
                                  f'({__version__}) reads version {FORMAT_VERSION}: it was written '
                                  f'by a newer stateopt, or it is corrupt')
        if header_size > min(_MAX_HEADER, status.st_size - _PREFIX.size):
            raise CheckpointError(f'{path} is corrupt or truncated: it declares a header of {header_size} '
                                  f'bytes, but headers have at most {_MAX_HEADER} and the file has '
                                  f'{status.st_size - _PREFIX.size} after the first {_PREFIX.size}')
        header_bytes = file.read(header_size)
        try:
            header = msgpack.unpackb(header_bytes)
        except Exception as exc:
            raise CheckpointError(f'{path} has an invalid header: {type(exc).__name__}: {exc}') from None
        if not isinstance(header, dict) or header.get('format') != FORMAT_NAME \
                or header.get('format_version') != FORMAT_VERSION:
            raise CheckpointError(f'{path} has an invalid header: {header!r}')
        payload = file.read()
    check = hashlib.sha256(opening[:_DIGEST.start])
    for piece in (opening[_DIGEST.stop:], header_bytes, payload):
        check.update(piece)
    if check.digest() != digest:
        raise CheckpointError(f'{path} is corrupt or truncated: its SHA-256 checksum does not match')
    return memoryview(payload)


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
    encoded = _encode(target, (), copy)
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
    bytes or None. The file (layout in :mod:`stateopt._checkpoint`) holds a header
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
        is written.
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


# -- decoding ------------------------------------------------------------------------------

class _Corrupt(Exception):
    """A payload that is not a valid encoding; becomes a CheckpointError naming the file."""


def _decode(node: Any, path: tuple) -> Any:
    """The Python value of an encoded node; ``_Corrupt`` if it is malformed."""
    if node is None or isinstance(node, (bool, int, float, str, bytes)):
        return node
    if len(path) > MAX_DEPTH:
        raise _Corrupt(f'{_where(path[:MAX_DEPTH])} nests deeper than {MAX_DEPTH} levels')
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise _Corrupt(f'{_where(path)} holds a {type(node).__name__}, not an encoded value')
    kind, body = node[0], node[1:]
    if kind == 'dict':
        if len(body) % 2:
            raise _Corrupt(f'{_where(path)} is a dict with an odd number of keys and values')
        result = {}
        for index in range(0, len(body), 2):
            key = _decode_key(body[index], path)
            if key in result:
                raise _Corrupt(f'{_where(path)} has the key {key!r} twice')
            result[key] = _decode(body[index + 1], path + (key,))
        return result
    if kind in ('list', 'tuple'):
        items = [_decode(item, path + (i,)) for i, item in enumerate(body)]
        return items if kind == 'list' else tuple(items)
    if kind == 'array':
        return _decode_array(body, path)
    if kind == 'key':
        if len(body) != 2 or not isinstance(body[0], str):
            raise _Corrupt(f'{_where(path)} is a malformed PRNG key array')
        data = _decode(body[1], path)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint32 or data.ndim < 1:
            raise _Corrupt(f'{_where(path)} is a PRNG key array without uint32 key data')
        return _KeyData(body[0], data)
    if kind == 'complex':
        if len(body) != 2 or not all(type(part) is float for part in body):
            raise _Corrupt(f'{_where(path)} is a malformed complex number')
        return complex(*body)
    raise _Corrupt(f'{_where(path)} has the unknown kind {kind!r}')


def _decode_key(node: Any, path: tuple) -> Hashable:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list) and node and node[0] == 'tuple' and len(path) < MAX_DEPTH:
        return tuple(_decode_key(part, path + ('<key>',)) for part in node[1:])
    raise _Corrupt(f'{_where(path)} has a key that is not None, a number, a string or a tuple')


def _decode_array(body: list, path: tuple) -> np.ndarray:
    if len(body) != 3 or body[0] not in _DTYPES or not isinstance(body[1], list) \
            or not isinstance(body[2], bytes):
        raise _Corrupt(f'{_where(path)} is a malformed array')
    dtype, shape, data = _DTYPES[body[0]], body[1], body[2]
    if len(shape) > MAX_DEPTH or not all(type(dim) is int and dim >= 0 for dim in shape):
        raise _Corrupt(f'{_where(path)} is an array with the invalid shape {shape!r}')
    if math.prod(shape) * dtype.itemsize != len(data):
        raise _Corrupt(f'{_where(path)} is an array of shape {tuple(shape)} and dtype {dtype} '
                       f'with {len(data)} bytes of data')
    array = np.frombuffer(data, dtype=dtype.newbyteorder('<')).reshape(shape)
    return array if array.dtype.isnative else array.astype(dtype)


def _read(path: str) -> Any:
    """The verified, decoded contents of the checkpoint file ``path``."""
    payload = _read_verified(path)
    try:
        return _decode(msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True),
                       ())
    except _Corrupt as exc:
        raise CheckpointError(f'{path} is corrupt: {exc}') from None
    except Exception as exc:
        raise CheckpointError(f'{path} has an unreadable payload: {type(exc).__name__}: '
                              f'{exc}') from None


# -- restoring -----------------------------------------------------------------------------

@dataclass
class _Plan:
    """What a load will write, gathered while everything is checked."""

    states: list = field(default_factory=list)     # (path, State, new value)
    objects: list = field(default_factory=list)    # (path, object, state dict)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)


def _mismatch(path: tuple, saved: Any, template: Any) -> CheckpointMismatchError:
    return CheckpointMismatchError(f'{_where(path)}: the checkpoint has {_describe(saved)}, '
                                   f'the target has {_describe(template)}')


def _restore(template: Any, saved: Any, path: tuple, plan: _Plan, relaxed: bool) -> Any:
    """The restored counterpart of ``template``; States and objects are queued in ``plan``.

    ``relaxed`` allows missing and unexpected dict entries (recorded in ``plan``);
    inside a State's value every entry must match.
    """
    if _is_state(template):
        value = _restore(template.value, saved, path, plan, relaxed=False)
        plan.states.append((path, template, value))
        return template
    if isinstance(template, Mapping):
        if not isinstance(saved, dict):
            raise _mismatch(path, saved, template)
        if not relaxed and saved.keys() != template.keys():
            raise CheckpointMismatchError(
                f'{_where(path)}: the checkpoint has the keys {sorted(map(repr, saved))}, the '
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
    children = _children(template)
    if children is None:
        raise TypeError(f'{_where(path)} of the target is a {type(template).__name__}, which a '
                        f'checkpoint cannot restore')
    pairs, treedef = children
    if not isinstance(saved, dict) or set(saved) != {key for key, _ in pairs}:
        raise _mismatch(path, saved, dict(pairs))
    items = [_restore(child, saved[key], path + (key,), plan, relaxed=False) for key, child in pairs]
    return jax.tree_util.tree_unflatten(treedef, items)


def _restored_array(template: Any, saved: Any, path: tuple) -> Any:
    """``saved`` with ``template``'s type, dtype and sharding, after checking it fits."""
    if _is_key_array(template):
        impl = str(jax.random.key_impl(template))
        data = jax.random.key_data(template)
        if not isinstance(saved, _KeyData) or saved.impl != impl or saved.data.shape != data.shape:
            raise _mismatch(path, saved, template)
        return jax.device_put(jax.random.wrap_key_data(saved.data, impl=impl), template.sharding)
    if not isinstance(saved, np.ndarray):
        raise _mismatch(path, saved, template)
    dtype = np.dtype(template.dtype)
    if saved.shape != np.shape(template) or saved.dtype != dtype.newbyteorder('='):
        raise CheckpointMismatchError(
            f'{_where(path)}: the checkpoint has shape {saved.shape} and dtype {saved.dtype}, '
            f'the target has shape {tuple(np.shape(template))} and dtype {dtype}')
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
    if _is_array(template) and not _is_key_array(template) and isinstance(saved, np.ndarray):
        fits = saved.shape == np.shape(template) and saved.dtype == np.dtype(template.dtype).newbyteorder('=')
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


def _commit(plan: _Plan, name: str, strict: bool) -> None:
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
                    error.add_note(f'{_where(written)} could not be put back: {undo_error}')
            if error is exc:
                raise
            raise error from exc


def _refused(name: str, path: tuple, exc: Exception) -> CheckpointMismatchError:
    """An object's refusal of its state dict; a KeyError's message without the quotes it adds."""
    reason = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    return CheckpointMismatchError(f'{name} does not fit the target at {_where(path)}: {reason}')


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
    saved = _read(name)
    plan = _Plan()
    try:
        tree = _restore(target, saved, (), plan, relaxed=True)
    except CheckpointMismatchError as exc:
        raise CheckpointMismatchError(f'{name} does not fit the target at {exc}') from None
    missing = [_where(p) for p in plan.missing]
    unexpected = [_where(p) for p in plan.unexpected]
    if strict and (missing or unexpected):
        problems = [f'the checkpoint lacks {", ".join(missing)}'] if missing else []
        problems += [f'the target lacks {", ".join(unexpected)}'] if unexpected else []
        raise CheckpointMismatchError(f'{name} does not fit the target: {"; ".join(problems)}; '
                                      f'pass strict=False to load the entries both have')
    _commit(plan, name, strict)
    return LoadResult(tree, missing, unexpected)
