"""Reading braintools 0.3.0's state dicts and msgpack checkpoints into stateopt optimizers.

braintools' ``OptaxOptimizer.state_dict()`` holds ``step_count``, ``lr``, ``base_lr``,
``param_groups`` (``{'0': {'lr', 'weight_decay', 'params'}, ...}``), ``opt_state`` (the optax
chain state of the first group) and ``param_groups_opt_states`` (the chain state of each added
group, ``{'0': ..., '1': ...}`` for groups 1, 2, ...). ``braintools.file.msgpack_save`` writes
arrays as msgpack extension 1 (``(shape, dtype name, bytes)``) and numpy scalars as extension 3.
"""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from ._state import param_name

__all__ = ['is_braintools_state_dict', 'read_braintools_checkpoint', 'from_braintools', 'NotBraintoolsFile']

#: The optimizers whose braintools state means what stateopt's means: optax's scale_by_adam
#: (count, mu, nu) is torch's Adam (step, exp_avg, exp_avg_sq), eps outside the square root.
_ADAM_LIKE = ('Adam', 'AdamW')
#: The direction braintools gives every added group: optax.scale_by_adam() with its defaults.
_GROUP_DEFAULTS = {'betas': (0.9, 0.999), 'eps': 1e-8}
_MAX_BYTES = 1 << 34


def is_braintools_state_dict(state_dict: Any) -> bool:
    """Whether ``state_dict`` has braintools' optimizer layout (and not stateopt's)."""
    return (isinstance(state_dict, Mapping) and 'version' not in list(state_dict)
            and 'opt_state' in list(state_dict) and isinstance(state_dict.get('param_groups'), Mapping))


def _ext(code: int, data: bytes) -> Any:
    if code == 1:   # ndarray: (shape, dtype name, raw bytes)
        shape, dtype, buffer = msgpack.unpackb(data)
        return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape).copy()
    if code == 3:   # numpy scalar: (dtype name, raw bytes)
        dtype, buffer = msgpack.unpackb(data)
        return np.frombuffer(buffer, dtype=np.dtype(dtype))[0]
    if code == 2:   # complex: (real, imag)
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    raise ValueError(f'unknown msgpack extension {code}')


class NotBraintoolsFile(ValueError):
    """A file ``braintools.file.msgpack_save`` did not write: not a regular file of at most the
    size limit, or one that does not start with a msgpack map."""


def read_braintools_checkpoint(path: str) -> Any:
    """The tree ``braintools.file.msgpack_save`` wrote to ``path`` (arrays as numpy arrays).

    Raises ``ValueError`` if the file is not one.
    """
    status = os.stat(path)
    if not stat.S_ISREG(status.st_mode) or status.st_size > _MAX_BYTES:
        raise NotBraintoolsFile(f'{path} is not a regular file of at most {_MAX_BYTES} bytes')
    with open(path, 'rb') as file:
        first = file.read(1)
        if not first or not (0x80 <= first[0] <= 0x8f or first[0] in (0xde, 0xdf)):  # a msgpack map
            raise NotBraintoolsFile(f'{path} does not start with a msgpack map, as braintools\' files do')
        payload = first + file.read(status.st_size - 1)
    try:
        tree = msgpack.unpackb(payload, ext_hook=_ext, raw=False, strict_map_key=False)
    except Exception as exc:
        raise ValueError(f'{path} is not a braintools msgpack checkpoint either ({type(exc).__name__}: '
                         f'{exc})') from None
    if not isinstance(tree, dict):
        raise ValueError(f'{path} does not hold a dict, as braintools.file.msgpack_save writes')
    return tree


def _flat(tree: Any, prefix: tuple = ()) -> dict[str, Any]:
    """``{param name: array}`` of braintools' per-parameter dict (keys as its registry wrote them)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        parts = (key,)
        if isinstance(key, str) and key.startswith('(') and key.endswith(')'):
            try:
                parts = tuple(ast.literal_eval(key))
            except (ValueError, SyntaxError):
                parts = (key,)
        if isinstance(value, Mapping):
            out.update(_flat(value, prefix + parts))
        else:
            out[param_name(prefix + parts)] = value
    return out


def _adam_state(chain: Any, where: str) -> Mapping:
    """The ``scale_by_adam`` state (``count``, ``mu``, ``nu``) inside an optax chain state."""
    if isinstance(chain, Mapping):
        if {'count', 'mu', 'nu'} <= set(chain):
            return chain
        for key in sorted(chain, key=str):
            found = _adam_state(chain[key], f'{where}[{key!r}]') if isinstance(chain[key], Mapping) else None
            if found is not None:
                return found
    return None


def _decoupled(chain: Any) -> bool:
    """Whether braintools' chain applies the weight decay after the Adam state (AdamW), not before."""
    if not isinstance(chain, Mapping):
        return False
    keys = sorted(chain, key=lambda key: int(key) if str(key).isdigit() else -1)
    states = [chain[key] for key in keys]
    at = next((i for i, state in enumerate(states) if isinstance(state, Mapping) and 'mu' in state), None)
    return at is not None and any(state == {} for state in states[at + 1:])


def from_braintools(optimizer: Any, saved: Mapping) -> dict:
    """``optimizer``'s state dict holding what the braintools state dict ``saved`` holds.

    The optimizer must be built as the braintools one was (the same class, the same
    States registered and the same groups added). The moments, step counts and each
    group's lr and weight decay are taken; the result is checked by ``load_state_dict``
    as any state dict. A group whose braintools state means something else here is
    refused with the reason.
    """
    kind = type(optimizer).__name__
    if kind not in _ADAM_LIKE:
        raise ValueError(f'a braintools state dict loads into stateopt.Adam and stateopt.AdamW (whose '
                         f'state is optax\'s scale_by_adam in braintools too); {kind}\'s braintools state is '
                         f'kept by another rule, so it is not read. Resume from a stateopt checkpoint, or '
                         f'restart the optimizer\'s state')
    groups = saved['param_groups']
    if not isinstance(groups, Mapping) or len(groups) != len(optimizer.param_groups):
        raise ValueError(f'the braintools state dict has {len(groups)} param groups and this {kind} has '
                         f'{len(optimizer.param_groups)}; add the same groups before loading')
    ours = optimizer.state_dict()
    layout = {key: ours[key] for key in ours}
    layout['state'], layout['group_state'] = {}, []
    layout['param_groups'] = [dict(group) for group in ours['param_groups']]
    layout['step_count'] = np.asarray(saved['step_count'], np.int32)
    lrs = []
    for i, group in enumerate(optimizer.param_groups):
        where = 'opt_state' if i == 0 else f'param_groups_opt_states[{str(i - 1)!r}]'
        chain = saved['opt_state'] if i == 0 else saved.get('param_groups_opt_states', {}).get(str(i - 1))
        adam = _adam_state(chain, where)
        if adam is None:
            raise ValueError(f'the braintools state dict has no Adam state (count, mu, nu) in {where}; it '
                             f'was not written by braintools\' Adam or AdamW')
        record = groups[str(i)]
        if i > 0:
            _check_added_group(kind, i, group, record)
        elif float(record.get('weight_decay', 0.0)) != 0.0 and _decoupled(chain) != (kind == 'AdamW'):
            ran = 'AdamW (decoupled decay)' if _decoupled(chain) else 'Adam (an L2 penalty on the gradient)'
            raise ValueError(f'param group 0: braintools ran it as {ran}, whose moments are not '
                             f'{kind}\'s with weight_decay={float(record["weight_decay"])}; load it into the '
                             f'optimizer braintools ran')
        mu, nu = _flat(adam['mu']), _flat(adam['nu'])
        if set(mu) != set(group.names):
            raise ValueError(f'param group {i} holds {sorted(group.names)} here, and the braintools state '
                             f'dict has moments for {sorted(mu)}; register the same States under the same '
                             f'keys')
        for name in group.names:
            layout['state'][name] = {'exp_avg': mu[name], 'exp_avg_sq': nu[name]}
        layout['group_state'].append({'count': np.asarray(adam['count'], np.int32)})
        lr = np.asarray(record.get('lr', saved.get('lr')), np.float32)
        layout['param_groups'][i]['lr'] = lr
        if 'weight_decay' in record:
            layout['param_groups'][i]['weight_decay'] = np.asarray(record['weight_decay'], np.float32)
        lrs.append(lr)
    if layout.get('lr_scheduler') is not None:   # braintools saves no scheduler state: keep the counters
        layout['lr_scheduler'] = {**layout['lr_scheduler'], 'lrs': lrs}
    return layout


def _check_added_group(kind: str, index: int, group: Any, record: Mapping) -> None:
    """Refuse an added group whose braintools run is not this optimizer's rule."""
    decay = float(record.get('weight_decay', 0.0))
    if kind == 'AdamW' and decay != 0.0:
        raise ValueError(
            f'param group {index}: braintools ran every added group as Adam with an L2 penalty '
            f'(weight_decay={decay} added to the gradient, before the moments), not as AdamW\'s decoupled '
            f'decay, so its moments are not AdamW\'s; this group cannot resume as AdamW. Load into '
            f'stateopt.Adam (the rule braintools ran), or restart this group')
    for name, value in _GROUP_DEFAULTS.items():
        ours = group[name]
        ours = tuple(float(v) for v in ours) if isinstance(ours, tuple) else float(ours)
        if not np.allclose(ours, value, rtol=1e-6, atol=0):
            raise ValueError(
                f'param group {index} has {name}={ours} here, but braintools ran every added group with '
                f'optax.scale_by_adam()\'s defaults ({name}={value}); build the group with {name}={value}')
