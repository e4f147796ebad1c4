"""The packed parameter layout: many parameters stored as one flat buffer per dtype.

``PackedParams(states)`` moves the values of ``states`` into one ``ParamState`` per
dtype (a :class:`PackedBuffer`) and makes each of the States read and write its slice
of that buffer. The model keeps its States and its code; an optimizer registered on the
``PackedParams`` updates each buffer as one array, so the compiled step is one loop
over all the parameters whatever their number (no per-array kernels, no copies).

Only an optimizer whose rule is element-wise can run on a buffer (``_elementwise``):
one that takes a norm or a factored moment per array would see one array.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

from ._donation import RAW, release_raw, stored_elsewhere
from ._slots import entry_name as _entry_name
from ._state import flatten_states, param_name, shown_key
from ._trace import at_top_level, is_traced

__all__ = ['PackedBuffer', 'PackedParams', 'is_packed_view', 'packing_of']


class PackedBuffer(brainstate.ParamState):
    """The flat buffer of one dtype of a :class:`PackedParams`: the parameters that an optimizer trains.

    A ``brainstate.ParamState`` holding a 1-D array; :class:`PackedParams` creates one per
    dtype, and each packed State reads its slices.

    Parameters
    ----------
    value : jax.Array
        The concatenated, flattened arrays of one dtype.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp, stateopt
    >>> packed = stateopt.PackedParams({'w': brainstate.ParamState(jnp.ones(3))})
    >>> isinstance(packed['float32'], stateopt.PackedBuffer), packed['float32'].value.tolist()
    (True, [1.0, 1.0, 1.0])
    """

    def __pretty_repr_item__(self, key: str, value: Any) -> Any:
        if key == '_views':     # the packed States that read it
            return None
        return super().__pretty_repr_item__(key, value)

    @property
    def value(self) -> Any:
        return brainstate.ParamState.value.fget(self)

    @value.setter
    def value(self, value: Any) -> None:
        # the packed States read fixed slices of it: a new value keeps its length and dtype
        current = RAW(self)
        got = jnp.result_type(value) if not isinstance(value, brainstate.State) else None
        if got is not None and (np.shape(value) != np.shape(current) or (
                got != current.dtype and not getattr(value, 'weak_type', False))):
            raise ValueError(f'a PackedBuffer holds {np.shape(current)[0]} {current.dtype} values, which '
                             f'its packed States read slices of; got a {got} array of shape '
                             f'{np.shape(value)}. Nothing was written')
        brainstate.ParamState.value.fset(self, value)


class _PackedView:
    """What each State a :class:`PackedParams` holds takes on: its value is a slice of a buffer.

    ``value`` reads (and records) the buffer; ``_value``, the stored value that brainstate
    and stateopt read without recording, reads the buffer's stored value the same way.
    A write checks structure, shapes and dtypes, then writes the buffer's slices. The
    class of a packed State is its own class with these members (:func:`_view_class`).
    """

    def _packed_value(self, read: Any) -> Any:
        layout = vars(self)['_packed']
        data = {index: read(layout.buffers[index]) for index in layout.used}
        return layout.treedef.unflatten([
            layout.splits[index].piece(data[index], piece, start, size).reshape(shape)
            for index, start, size, shape, piece in layout.slots])

    def _packed_write(self, value: Any) -> None:
        layout = vars(self)['_packed']
        if isinstance(value, brainstate.State):
            raise ValueError('Cannot set value to a State, use `copy_from` method instead')
        try:
            leaves = layout.treedef.flatten_up_to(value)
        except (TypeError, ValueError):
            raise ValueError(
                f'the packed parameter {shown_key(layout.key)} holds {layout.treedef}; got '
                f'{jax.tree.structure(value)}. Nothing was written') from None
        written = [_checked_leaf(layout, slot, leaf, _stored(layout.buffers[slot[0]]).dtype)
                   for slot, leaf in zip(layout.slots, leaves)]
        for index in layout.used:
            buffer = layout.buffers[index]
            data = buffer.value
            for (at, start, *_), leaf in zip(layout.slots, written):
                if at == index:
                    data = jax.lax.dynamic_update_slice_in_dim(data, leaf, start, 0)
            buffer.value = data

    value = property(lambda self: self._packed_value(_read), lambda self, value: self._packed_write(value))
    _value = property(lambda self: self._packed_value(_stored), lambda self, value: self._packed_write(value))


def _read(buffer: PackedBuffer) -> Any:
    return buffer.value


def _stored(buffer: PackedBuffer) -> Any:
    return RAW(buffer)


def _checked_leaf(layout: _Layout, slot: tuple, leaf: Any, dtype: Any) -> Any:
    """``leaf`` flattened for its slot; a wrong shape or dtype raises, naming the parameter."""
    shape = slot[3]
    if np.shape(leaf) != shape:
        raise ValueError(f'the packed parameter {shown_key(layout.key)} has an array of shape {shape}; '
                         f'got shape {np.shape(leaf)}. Nothing was written')
    got = jnp.result_type(leaf)
    if got != dtype and not (getattr(leaf, 'weak_type', False) or isinstance(leaf, (int, float))):
        raise TypeError(f'the packed parameter {shown_key(layout.key)} stores {dtype}; got a {got} '
                        f'array. Cast it first (x.astype(jnp.{dtype})). Nothing was written')
    return jnp.ravel(jnp.asarray(leaf, dtype))


class _Split:
    """How one buffer splits into its arrays, and, inside a trace, its last split.

    Traced, every array of a buffer is cut from it by one ``split``, whose transpose is
    one ``concatenate``: the gradient with respect to the buffer then costs what the
    arrays' gradients cost, where a slice per array would add one buffer-sized pad per
    array. Outside a trace an array is sliced alone, and nothing is kept.
    """

    def __init__(self, sizes: tuple):
        self.sizes = sizes
        self._data, self._pieces = None, ()

    def piece(self, data: Any, piece: int, start: int, size: int) -> Any:
        if not is_traced(data):
            return data[start:start + size]
        if data is not self._data:
            self._data, self._pieces = data, jax.lax.split(data, self.sizes)
        return self._pieces[piece]


@functools.partial(jax.jit, donate_argnums=0)
def _place(data: jax.Array, leaf: jax.Array, start: Any) -> jax.Array:
    """``data`` with ``leaf``, flattened, written from ``start`` (in place: ``data`` is donated)."""
    return jax.lax.dynamic_update_slice_in_dim(data, jnp.ravel(leaf).astype(data.dtype), start, 0)


class _Layout:
    """Where one packed State's leaves live: the buffers and their splits, the structure, and
    ``(buffer index, start, size, shape, piece index)`` per leaf."""

    def __init__(self, key: tuple, buffers: tuple, splits: tuple, treedef: Any, slots: tuple):
        self.key, self.buffers, self.splits, self.treedef, self.slots = key, buffers, splits, treedef, slots
        self.used = sorted({slot[0] for slot in slots})
        # each leaf's part of a slot's key in state dicts, as an unpacked State's ('', '.weight')
        self.suffixes = tuple(''.join(f'.{_entry_name(entry)}' for entry in path) for path, _ in
                              jax.tree_util.tree_flatten_with_path(treedef.unflatten(range(len(slots))))[0])


_VIEW_CLASSES: dict[type, type] = {}


def _view_class(cls: type) -> type:
    """The class a State of class ``cls`` takes while packed: a subclass (``isinstance`` still
    holds) with the members of :class:`_PackedView`, and the same layout, so that the State
    itself can take it."""
    if cls not in _VIEW_CLASSES:
        def pretty_item(self: Any, key: str, value: Any) -> Any:
            return None if key == '_packed' else cls.__pretty_repr_item__(self, key, value)

        members = {name: member for name, member in vars(_PackedView).items()
                   if name.startswith('_packed') or name in ('value', '_value')}
        _VIEW_CLASSES[cls] = type(f'Packed{cls.__name__}', (cls,), {
            **members, '__module__': cls.__module__, '__doc__': cls.__doc__,
            '__pretty_repr_item__': pretty_item})
    return _VIEW_CLASSES[cls]


def is_packed_view(state: Any) -> bool:
    """Whether ``state`` is held by a :class:`PackedParams` (its value is a slice of a buffer)."""
    return stored_elsewhere(state)


class PackedParams(dict):
    """Parameters stored as one flat buffer per dtype, which the model's States read slices of.

    The States keep their identity, class and keys: the model's code runs unchanged and
    reads the same values. Their arrays move into one :class:`PackedBuffer` per dtype.
    Register the ``PackedParams`` with an element-wise optimizer and differentiate with
    respect to it; the step then updates each buffer as one array, which costs what one
    large array costs however many small arrays the model has::

        packed = PackedParams(model.states(brainstate.ParamState))
        opt = stateopt.AdamW(1e-3).register_trainable_weights(packed)
        grads = brainstate.transform.grad(loss_fn, grad_states=packed)(x, y)
        opt.update(grads)

    A ``PackedParams`` is a dict from dtype name (``'float32'``, or ``'<name>.float32'``
    when ``name`` is given) to the buffers; ``params`` gives the packed States under
    their own keys, for checkpoints of the model. An optimizer's state dict keys a buffer's
    moments by the parameters it holds, so checkpoints load into either layout. Parameters
    that need their own hyper-parameters go in a second ``PackedParams`` with its own
    ``name``, passed to ``add_param_group``.

    Parameters
    ----------
    states : dict of brainstate.State
        The parameters to pack (``model.states(brainstate.ParamState)``), each holding
        floating-point arrays. A State reachable under two keys is packed once.
    name : str, optional
        Prefix of the buffer keys, so that two ``PackedParams`` can be registered with
        one optimizer.

    Raises
    ------
    ValueError
        Inside a traced function, with no States, or with a State another
        ``PackedParams`` holds; nothing is changed.
    TypeError
        A leaf is not a State, or a State holds an array that is not floating point.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp, stateopt
    >>> w = brainstate.ParamState(jnp.ones((2, 2)))
    >>> b = brainstate.ParamState(jnp.zeros(2))
    >>> packed = stateopt.PackedParams({'w': w, 'b': b})
    >>> packed['float32'].value.shape
    (6,)
    >>> opt = stateopt.SGD(lr=0.5).register_trainable_weights(packed)
    >>> opt.update({'float32': jnp.ones(6)})
    >>> w.value.tolist(), b.value.tolist()
    ([[0.5, 0.5], [0.5, 0.5]], [-0.5, -0.5])
    """

    def __init__(self, states: Any, *, name: str | None = None):
        super().__init__()
        if not at_top_level():
            raise ValueError('PackedParams moves arrays into new buffers: create it before any '
                             'brainstate.transform (outside jit, grad, vmap); nothing was changed')
        if name is not None and not (isinstance(name, str) and name):
            raise TypeError(f'name must be a non-empty string, got {name!r}')
        pairs, seen = [], set()
        for path, state in flatten_states(states):
            if id(state) not in seen:
                seen.add(id(state))
                pairs.append((path, state))
        if not pairs:
            raise ValueError('PackedParams got no States to pack')
        values = [(path, state, RAW(state) if not is_packed_view(state) else None)
                  for path, state in pairs]
        for path, _, value in values:
            if value is None:
                raise ValueError(f'the State at key {shown_key(path)} is already held by another '
                                 f'PackedParams; a State can be packed once')
            for leaf in jax.tree.leaves(value):
                dtype = jnp.result_type(leaf)
                if not jnp.issubdtype(dtype, jnp.floating):
                    raise TypeError(f'the State at key {shown_key(path)} holds a {dtype} array; only '
                                    f'floating-point parameters can be packed')
                if len(getattr(getattr(leaf, 'sharding', None), 'device_set', ())) > 1:
                    raise TypeError(f'the State at key {shown_key(path)} holds an array spread over '
                                    f'several devices; PackedParams packs arrays held by one device. '
                                    f'Register sharded parameters unpacked')
        self._build(values, name)

    def _build(self, values: list, name: str | None) -> None:
        dtypes: dict[Any, list] = {}      # dtype -> [buffer index, its length so far, [(start, leaf)]]
        slots = []
        for path, state, value in values:
            leaves, treedef = jax.tree.flatten(value)
            placed = []
            for leaf in leaves:
                dtype = jnp.result_type(leaf)
                entry = dtypes.setdefault(dtype, [len(dtypes), 0, []])
                placed.append((entry[0], entry[1], int(np.size(leaf)), tuple(np.shape(leaf)), len(entry[2])))
                entry[2].append((entry[1], leaf))
                entry[1] += int(np.size(leaf))
            slots.append((path, state, treedef, tuple(placed)))
        buffers = []
        for dtype, (_, length, chunks) in dtypes.items():
            # one in-place write per array, compiled once per shape: a concatenate of N arrays
            # would compile an N-operand program (4 s for 5,000)
            data = jnp.zeros((length,), dtype)
            for start, leaf in chunks:
                data = _place(data, leaf, start)
            buffers.append(PackedBuffer(data))
        buffers = tuple(buffers)
        splits = tuple(_Split(tuple(int(np.size(leaf)) for _, leaf in chunks))
                       for _, _, chunks in dtypes.values())
        for dtype, buffer in zip(dtypes, buffers):
            self[f'{name}.{np.dtype(dtype).name}' if name else np.dtype(dtype).name] = buffer
        swapped = []
        try:
            for _, state, _, _ in slots:
                cls = type(state)
                state.__class__ = _view_class(cls)
                swapped.append((state, cls))
        except TypeError as exc:    # a State class whose layout a subclass cannot take: undo
            for state, cls in swapped:
                object.__setattr__(state, '__class__', cls)
            raise TypeError(f'PackedParams cannot pack a {type(slots[len(swapped)][1]).__name__}: '
                            f'{exc}. Nothing was changed') from None
        for path, state, treedef, placed in slots:
            vars(state)['_packed'] = _Layout(path, buffers, splits, treedef, placed)
            release_raw(state)
        for buffer in buffers:      # the States reading each buffer, for state dicts keyed by parameter
            vars(buffer)['_views'] = tuple(vars(state)['_packed'] for _, state, _, _ in slots
                                           if any(vars(state)['_packed'].buffers[at] is buffer
                                                  for at in vars(state)['_packed'].used))
        self._params = {path: state for path, state, _, _ in slots}

    @property
    def params(self) -> dict:
        """The packed States under their key paths (their ``.value`` reads the buffers)."""
        return dict(self._params)

    def __repr__(self) -> str:
        shown = ', '.join(f'{key}: {buffer.value.shape[0]}' for key, buffer in self.items())
        return f'PackedParams({len(self._params)} States in {{{shown}}})'


def _flatten_with_keys(packed: PackedParams) -> tuple:
    keys = sorted(packed)
    return [(jax.tree_util.DictKey(key), packed[key]) for key in keys], tuple(keys)


def _unflatten(keys: tuple, buffers: Any) -> dict:
    return dict(zip(keys, buffers))


jax.tree_util.register_pytree_with_keys(
    PackedParams, _flatten_with_keys, _unflatten,
    flatten_func=lambda packed: ([packed[key] for key in sorted(packed)], tuple(sorted(packed))))


# -- state dicts keyed by parameter, whatever the layout ------------------------------------------

class _Packing:
    """The packed buffers among an optimizer's registered States, and the States reading them.

    An optimizer's state dict keys a buffer's slots by the parameters it holds, as an
    optimizer of the same States unpacked keys them, so that a checkpoint loads into
    either layout: :meth:`expand` splits what the step keeps per buffer, :meth:`collapse`
    joins what a state dict gives per parameter.
    """

    def __init__(self, names: tuple, paths: tuple, states: tuple):
        self.buffers = {name: state for name, state in zip(names, states) if isinstance(state, PackedBuffer)}
        # parameter name -> its layout, for the States of every registered buffer
        self.views = {}
        for name, path in zip(names, paths):
            if name in self.buffers:
                for layout in vars(self.buffers[name])['_views']:
                    self.views.setdefault(param_name(path[:-1] + layout.key), layout)
        owner = {id(buffer): name for name, buffer in self.buffers.items()}
        # parameter name -> the registered name of the buffer of each of its leaves
        self.owners = {name: [owner[id(layout.buffers[slot[0]])] for slot in layout.slots]
                       for name, layout in self.views.items()}
        # buffer name -> the parameters with a leaf in it, in registration order
        self.held = {buffer_name: [name for name, owners in self.owners.items() if buffer_name in owners]
                     for buffer_name in self.buffers}

    def expand(self, by_buffer: dict) -> dict:
        """``{buffer name: flat array or None}`` as ``{parameter name: value tree}`` (None where
        every leaf's buffer has none); names of no buffer pass through."""
        out = {name: value for name, value in by_buffer.items() if name not in self.buffers}
        for name, layout in self.views.items():
            leaves = []
            for (_, start, size, shape, _), owner in zip(layout.slots, self.owners[name]):
                flat = by_buffer.get(owner)
                leaves.append(None if flat is None else flat[start:start + size].reshape(shape))
            if any(leaf is not None for leaf in leaves):
                out[name] = layout.treedef.unflatten(leaves)
        return out

    def expand_slots(self, state: dict) -> dict:
        """``state`` (``{owner: {slot: array}}``) with each buffer's slots split per parameter."""
        out = {name: slots for name, slots in state.items() if name not in self.buffers}
        keys = dict.fromkeys(key for name in self.buffers for key in state.get(name, {}))
        for key in keys:
            by_buffer = {name: state.get(name, {}).get(key) for name in self.buffers}
            for name, tree in self.expand(by_buffer).items():
                layout = self.views[name]
                for suffix, leaf in zip(layout.suffixes, layout.treedef.flatten_up_to(tree)):
                    if leaf is not None:
                        out.setdefault(name, {})[key + suffix] = leaf
        return out

    def expand_names(self, names: list) -> list:
        out = []
        for name in names:
            out.extend(self.held[name] if name in self.buffers else [name])
        return list(dict.fromkeys(out))

    def collapse(self, by_param: Mapping, where: str, slot: str = '') -> dict:
        """``{parameter name: value tree}`` (or, with ``slot``, the slot's leaves in a slot dict)
        joined per buffer; a buffer already given under its own name is taken as it is."""
        out = {name: value for name, value in by_param.items() if name not in self.views}
        for buffer_name in self.buffers:
            if buffer_name not in by_param and any(name in by_param for name in self.held[buffer_name]):
                data = self._joined(buffer_name, by_param, where, slot)
                if data is not None:
                    out[buffer_name] = data
        return out

    def _joined(self, buffer_name: str, by_param: Mapping, where: str, slot: str) -> Any:
        """One buffer's array joined from ``by_param``, or None where none of its arrays has one
        (a master copy of a float32 array)."""
        pieces = []
        for name in self.held[buffer_name]:
            layout = self.views[name]
            if name not in by_param:
                raise KeyError(f'{where}[{name!r}] is missing')
            leaves = self._leaves(layout, by_param[name], where, name, slot)
            for (_, start, _, shape, _), owner, suffix, leaf in zip(
                    layout.slots, self.owners[name], layout.suffixes, leaves):
                if owner == buffer_name:
                    pieces.append((f'{where}[{name!r}]' + (f'[{slot + suffix!r}]' if slot else ''),
                                   start, shape, leaf))
        given = [leaf is not None for *_, leaf in pieces]
        if not any(given):
            return None
        if not all(given):
            shown = next(shown for shown, *_, leaf in pieces if leaf is None)
            raise ValueError(f'{shown} is None, but the other arrays packed with it have one')
        data = None     # in the dtype of the first array: the caller checks it against its own
        for shown, start, shape, leaf in pieces:
            want = data.dtype if data is not None else jnp.result_type(leaf)
            if np.shape(leaf) != shape or jnp.result_type(leaf) != want:
                raise ValueError(f'{shown} must be a {want} array of shape {shape}, got '
                                 f'{jnp.result_type(leaf)} of shape {np.shape(leaf)}')
            if data is None:
                data = jnp.zeros(RAW(self.buffers[buffer_name]).shape, want)
            data = _place(data, jnp.asarray(leaf), start)
        return data

    @staticmethod
    def _leaves(layout: _Layout, value: Any, where: str, name: str, slot: str) -> list:
        if slot:
            if not isinstance(value, Mapping):
                raise ValueError(f'{where}[{name!r}] must be a dict {{slot: array}}, got '
                                 f'{type(value).__name__}')
            missing = [slot + suffix for suffix in layout.suffixes if slot + suffix not in value]
            if missing:
                raise KeyError(f'{where}[{name!r}][{missing[0]!r}] is missing')
            return [value[slot + suffix] for suffix in layout.suffixes]
        leaves, treedef = jax.tree.flatten(value, is_leaf=lambda leaf: leaf is None)
        if treedef != layout.treedef:
            raise ValueError(f'{where}[{name!r}] must have the structure {layout.treedef}, got {treedef}')
        return leaves

    def collapse_slots(self, state: Mapping, where: str, keys: Mapping[str, list]) -> dict:
        """``state`` keyed per parameter joined into the buffers' slot dicts, where ``keys``
        gives each buffer's slots."""
        out = {name: slots for name, slots in state.items() if name not in self.views}
        for buffer_name in self.buffers:
            if buffer_name in state or not any(name in state for name in self.held[buffer_name]):
                continue
            for name in self.held[buffer_name]:
                given = state.get(name, {})
                expected = {key + suffix for key in keys.get(buffer_name, ())
                            for suffix in self.views[name].suffixes}
                leftover = sorted(map(repr, set(given) - expected)) if isinstance(given, Mapping) else []
                if leftover:
                    raise KeyError(f'{where}[{name!r}] has the unknown slots {", ".join(leftover)}; this '
                                   f'optimizer keeps {", ".join(map(repr, sorted(expected))) or "none"}')
            out[buffer_name] = {key: self._joined(buffer_name, state, where, key)
                                for key in keys.get(buffer_name, ())}
        return out

    def collapse_names(self, names: list) -> list:
        out = list(names)
        for buffer_name in self.buffers:
            held = self.held[buffer_name]
            if held and all(name in out for name in held):
                at = min(out.index(name) for name in held)
                out = [name for name in out if name not in held]
                out.insert(at, buffer_name)
        return out


def packing_of(names: tuple, paths: tuple, states: tuple) -> _Packing | None:
    """The :class:`_Packing` of an optimizer's registered States, or None if none is a packed buffer."""
    packed = any(isinstance(state, PackedBuffer) for state in states)
    return _Packing(names, paths, states) if packed else None
