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

Sharded and multi-host state goes to :class:`OrbaxCheckpointManager` instead: a directory
of numbered steps written by orbax-checkpoint, each holding the tree in this encoding (as
JSON, with every array replaced by a reference) beside its arrays in orbax's format.
"""

from ._format import CheckpointError, CheckpointMismatchError
from ._io import CheckpointSave, save_checkpoint, save_checkpoint_async
from ._orbax import OrbaxCheckpointManager
from ._restore import LoadResult, load_checkpoint

__all__ = [
    'CheckpointError', 'CheckpointMismatchError', 'CheckpointSave', 'LoadResult',
    'save_checkpoint', 'save_checkpoint_async', 'load_checkpoint', 'OrbaxCheckpointManager',
]
