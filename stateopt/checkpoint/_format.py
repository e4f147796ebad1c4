"""The checkpoint file: its byte layout, framing and verification, encoding and decoding of values."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import stat
import struct
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import ml_dtypes
import msgpack
import numpy as np

from .._state import is_state, path_key
from .._version import __version__

FORMAT_NAME = 'stateopt-checkpoint'
FORMAT_VERSION = 1
MAGIC = b'\x89STOPT\r\n'
_PREFIX = struct.Struct('>8sI32sI')   # magic, format version, SHA-256, header length
_DIGEST = slice(12, 44)
#: Containers nest at most this deep, in a target and in a file.
MAX_DEPTH = 64
_INLINE_BYTES = 1 << 16    # larger arrays are written from their own buffers, uncopied
_MAX_HEADER = 1 << 16      # bytes a header may have

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


# -- naming and kinds ----------------------------------------------------------------------

def _shown_entry(path: tuple) -> str:
    """A path inside the tree as errors show it: ``model/('l1', 'weight')/weight``."""
    if not path:
        return '<root>'
    return '/'.join(key if isinstance(key, str) else repr(key) for key in path)



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
    data: Any            # a numpy array, or a _StoredArray of an orbax checkpoint


@dataclass(eq=False)
class _StoredArray:
    """An array of an orbax checkpoint, known by its dtype and shape before its data is read.

    ``name`` is its entry in the checkpoint's arrays (None for an array with no elements,
    which has no data), ``path`` its place in the tree. Checking the tree against a target
    sets ``like`` to the target's array whose dtype and sharding it is read with; one left
    without is read as a numpy array.
    """

    dtype: np.dtype
    shape: tuple
    name: str | None
    path: tuple
    like: Any = None


def _describe(value: Any) -> str:
    if isinstance(value, _StoredArray):
        return f'a {value.dtype.name} array of shape {value.shape}'
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


def _entries_of(node: Any) -> tuple[list, Any] | None:
    """``([(key, child), ...], treedef)`` of a registered pytree node, or None for a leaf."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:
        return None
    return [(path_key(path[0]), child) for path, child in pairs], treedef


# -- encoding ------------------------------------------------------------------------------

def _encode(node: Any, path: tuple, encode_array: Callable[[Any, tuple], Any]) -> Any:
    """``node`` (a target) as msgpack-ready lists; each array (a PRNG key array's key data
    included) is encoded by ``encode_array(array, path)``: inline in a file
    (:func:`_inline_array`), or as a reference to where an orbax checkpoint stores it."""
    if len(path) > MAX_DEPTH:
        raise ValueError(f'{_shown_entry(path[:MAX_DEPTH])} nests deeper than {MAX_DEPTH} levels')
    if is_state(node):
        return _encode(node.value, path, encode_array)
    if isinstance(node, jax.core.Tracer):
        raise TypeError(f'{_shown_entry(path)} is a traced value; save checkpoints outside jit')
    if _is_key_array(node):
        data = _encode(jax.random.key_data(node), path, encode_array)
        return ['key', str(jax.random.key_impl(node)), data]
    if _is_array(node):
        return encode_array(node, path)
    if isinstance(node, Mapping):
        items = ['dict']
        for key, value in node.items():
            items.append(_encode_key(key, path))
            items.append(_encode(value, path + (key,), encode_array))
        return items
    if isinstance(node, (list, tuple)):
        kind = 'list' if isinstance(node, list) else 'tuple'
        return [kind] + [_encode(item, path + (i,), encode_array) for i, item in enumerate(node)]
    if node is None or isinstance(node, (bool, float, str, bytes)):
        return node
    if isinstance(node, int):
        return _checked_int(node, path)
    if isinstance(node, complex):
        return ['complex', node.real, node.imag]
    if _is_stateful(node):
        return _encode(node.state_dict(), path, encode_array)
    children = _entries_of(node)
    if children is None:
        raise TypeError(f'{_shown_entry(path)} is a {type(node).__name__}, which a checkpoint cannot '
                        f'store; store States, optimizers, schedulers, arrays, numbers, strings '
                        f'and dicts, lists or tuples of them')
    return _encode(dict(children[0]), path, encode_array)


def _checked_int(node: int, path: tuple) -> int:
    if not -2 ** 63 <= node < 2 ** 64:
        raise ValueError(f'{_shown_entry(path)} is the int {node}, outside the 64-bit range a '
                         f'checkpoint stores; store it as a string')
    return node


def _encode_key(key: Any, path: tuple) -> Any:
    if isinstance(key, int) and not isinstance(key, bool):
        return _checked_int(key, path)
    if key is None or isinstance(key, (bool, float, str)):
        return key
    if isinstance(key, tuple):
        return ['tuple'] + [_encode_key(part, path) for part in key]
    raise TypeError(f'{_shown_entry(path)} has the key {key!r} of type {type(key).__name__}; checkpoint '
                    f'keys are None, bools, ints, floats, strings or tuples of them')


def _checked_dtype(array: Any, path: tuple) -> np.dtype:
    """``array``'s dtype, if a checkpoint stores it; TypeError naming the entry if not."""
    dtype = np.dtype(array.dtype)
    if _DTYPES.get(dtype.name) != dtype.newbyteorder('='):
        raise TypeError(f'{_shown_entry(path)} is an array of dtype {dtype}, which a checkpoint '
                        f'cannot store; the dtypes are {", ".join(_DTYPES)}')
    return dtype


def _inline_array(array: Any, path: tuple, copy: bool) -> list:
    """An array of a checkpoint file: its bytes in the payload (copied if ``copy``).

    A jax array on devices of other processes too (of a multi-host run) is refused, even
    a replicated one: a file is written by one process, and the state of a multi-host run
    is saved by every process, through orbax.
    """
    if not getattr(array, 'is_fully_addressable', True):
        raise ValueError(f'{_shown_entry(path)} is a jax array of shape {tuple(array.shape)} on devices of '
                         f'several processes (a multi-host array); save_checkpoint writes a file from one '
                         f'process: save multi-host state with stateopt.OrbaxCheckpointManager, which '
                         f'every process calls')
    _checked_dtype(array, path)
    array = np.asarray(array)
    name = array.dtype.name
    if array.nbytes >= 2 ** 32:
        raise ValueError(f'{_shown_entry(path)} is an array of {array.nbytes} bytes; a checkpoint stores '
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


# -- decoding ------------------------------------------------------------------------------

class _Corrupt(Exception):
    """A payload that is not a valid encoding; becomes a CheckpointError naming the file."""


def _decode(node: Any, path: tuple, stored: bool = False) -> Any:
    """The Python value of an encoded node; ``_Corrupt`` if it is malformed.

    With ``stored`` (the tree of an orbax checkpoint) arrays are
    ``['stored', dtype name, [dim, ...], name or None]`` and decode to
    :class:`_StoredArray`, and bytes are ``['bytes', base64 text]``.
    """
    if node is None or isinstance(node, (bool, int, float, str, bytes)):
        return node
    if len(path) > MAX_DEPTH:
        raise _Corrupt(f'{_shown_entry(path[:MAX_DEPTH])} nests deeper than {MAX_DEPTH} levels')
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise _Corrupt(f'{_shown_entry(path)} holds a {type(node).__name__}, not an encoded value')
    kind, body = node[0], node[1:]
    if kind == 'dict':
        if len(body) % 2:
            raise _Corrupt(f'{_shown_entry(path)} is a dict with an odd number of keys and values')
        result = {}
        for index in range(0, len(body), 2):
            key = _decode_key(body[index], path)
            if key in result:
                raise _Corrupt(f'{_shown_entry(path)} has the key {key!r} twice')
            result[key] = _decode(body[index + 1], path + (key,), stored)
        return result
    if kind in ('list', 'tuple'):
        items = [_decode(item, path + (i,), stored) for i, item in enumerate(body)]
        return items if kind == 'list' else tuple(items)
    if kind == 'array' and not stored:
        return _decode_array(body, path)
    if kind == 'stored' and stored:
        return _decode_stored_array(body, path)
    if kind == 'bytes' and stored:
        if len(body) != 1 or not isinstance(body[0], str):
            raise _Corrupt(f'{_shown_entry(path)} is malformed bytes')
        try:
            return base64.b64decode(body[0], validate=True)
        except ValueError:
            raise _Corrupt(f'{_shown_entry(path)} is malformed bytes') from None
    if kind == 'key':
        if len(body) != 2 or not isinstance(body[0], str):
            raise _Corrupt(f'{_shown_entry(path)} is a malformed PRNG key array')
        data = _decode(body[1], path, stored)
        if not isinstance(data, (np.ndarray, _StoredArray)) or data.dtype != np.uint32 \
                or len(data.shape) < 1:
            raise _Corrupt(f'{_shown_entry(path)} is a PRNG key array without uint32 key data')
        return _KeyData(body[0], data)
    if kind == 'complex':
        if len(body) != 2 or not all(type(part) is float for part in body):
            raise _Corrupt(f'{_shown_entry(path)} is a malformed complex number')
        return complex(*body)
    raise _Corrupt(f'{_shown_entry(path)} has the unknown kind {kind!r}')


def _decode_key(node: Any, path: tuple) -> Hashable:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list) and node and node[0] == 'tuple' and len(path) < MAX_DEPTH:
        return tuple(_decode_key(part, path + ('<key>',)) for part in node[1:])
    raise _Corrupt(f'{_shown_entry(path)} has a key that is not None, a number, a string or a tuple')


def _decoded_shape(body: list, path: tuple, data_type: type | tuple) -> tuple[np.dtype, list]:
    """The dtype and shape of an encoded array whose body is [dtype name, shape, data]."""
    if len(body) != 3 or body[0] not in _DTYPES or not isinstance(body[1], list) \
            or not isinstance(body[2], data_type):
        raise _Corrupt(f'{_shown_entry(path)} is a malformed array')
    dtype, shape = _DTYPES[body[0]], body[1]
    if len(shape) > MAX_DEPTH or not all(type(dim) is int and dim >= 0 for dim in shape):
        raise _Corrupt(f'{_shown_entry(path)} is an array with the invalid shape {shape!r}')
    return dtype, shape


def _decode_stored_array(body: list, path: tuple) -> _StoredArray:
    dtype, shape = _decoded_shape(body, path, (str, type(None)))
    if (body[2] is None) != (math.prod(shape) == 0):
        raise _Corrupt(f'{_shown_entry(path)} is a malformed array')
    return _StoredArray(dtype, tuple(shape), body[2], path)


def _decode_array(body: list, path: tuple) -> np.ndarray:
    dtype, shape = _decoded_shape(body, path, bytes)
    data = body[2]
    if math.prod(shape) * dtype.itemsize != len(data):
        raise _Corrupt(f'{_shown_entry(path)} is an array of shape {tuple(shape)} and dtype {dtype} '
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


