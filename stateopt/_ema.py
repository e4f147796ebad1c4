"""Moving averages of model weights: exponential (EMA), or equal from a start step (SWA).

The averages are :class:`~stateopt.OptimState`s, so they ride through brainstate's transforms
like an optimizer's moments: ``update`` is traced inline under ``brainstate.transform.jit``,
``for_loop`` and ``scan``, and outside any trace it is one cached ``jax.jit`` that reuses
(donates) the buffers of the averages it replaces, never those of the model.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._base import NodeMeta
from ._donation import RAW, mark_unread, owned_leaves, store_leaves, write_back
from ._hyper import check_number, floating_dtype
from ._placement import mesh_of, placed
from ._state import (
    KeyPath,
    OptimState,
    ReadableKeyError,
    UniqueStateManager,
    deepcopy_owning_states,
    unflatten,
)
from ._state_dict import StateDictKeyError, _checked_slot, _plain_string, described
from ._step import _signature
from ._trace import inside_jax_transform, is_traced

__all__ = ['EMA']

#: The layout of :meth:`EMA.state_dict`.
LAYOUT_VERSION = 1
_INT32_MAX = int(np.iinfo(np.int32).max)
_WARMUPS = (False, True, 'power')


@dataclass(frozen=True)
class _Rule:
    """How much of the current weights an update takes in; a pure function of the count."""

    mode: str            # 'ema' or 'swa'
    decay: float
    warmup: bool | str   # False, True ((1 + s) / (10 + s)) or 'power'
    gamma: float
    power: float
    start: int

    def weight(self, count: jax.Array) -> jax.Array:
        """``w = 1 - decay_t`` at the update that follows ``count`` updates (float32)."""
        since = jnp.asarray(count, jnp.int32) - self.start
        s = jnp.maximum(since, 0).astype(jnp.float32)
        if self.mode == 'swa':
            return 1.0 / (s + 1.0)
        floor = 1.0 - self.decay
        if self.warmup is True:
            weight = jnp.maximum(floor, 9.0 / (10.0 + s))
        elif self.warmup == 'power':
            weight = jnp.maximum(floor, (1.0 + s / self.gamma) ** -self.power)
        else:
            weight = jnp.full((), floor, jnp.float32)
        return jnp.where(since < 0, 1.0, weight).astype(jnp.float32)


def _lerp(average: jax.Array, value: jax.Array, weight: jax.Array) -> jax.Array:
    """``average + weight * (value - average)`` as ``torch.lerp`` computes it, in float32 or wider.

    Exact at the ends: ``weight = 1`` gives ``value``, ``weight = 0`` gives ``average``.
    """
    wide = jnp.promote_types(average.dtype, jnp.float32)
    a, x, w = average.astype(wide), value.astype(wide), weight.astype(wide)
    diff = x - a
    return jnp.where(w < 0.5, a + w * diff, x - diff * (1 - w)).astype(average.dtype)


def _averaged(rule: _Rule, averages: list, values: list, count: jax.Array) -> tuple[list, jax.Array]:
    """The averages after one update with ``values``, and the next count (pure)."""
    weight = rule.weight(count)
    new = [jax.tree.map(lambda a, x: _lerp(a, x, weight), average, value)
           for average, value in zip(averages, values)]
    return new, optax.safe_increment(count)


def _fixed(exc: ValueError, fix: str) -> ValueError:
    return ValueError(f'EMA: {exc}; {fix}')


class EMA(brainstate.graph.Node, metaclass=NodeMeta):
    r"""An exponential moving average of model weights, kept as States (also SWA, see :meth:`swa`).

    Each :meth:`update` moves every average towards the current value of its State:

    .. math::

        \bar\theta \leftarrow \bar\theta + (1 - d_t)\,(\theta - \bar\theta)
        = d_t\,\bar\theta + (1 - d_t)\,\theta

    where :math:`t` is the number of updates before this one (:attr:`count`) and, with
    :math:`s = t - \text{start}`,

    - :math:`d_t = 0` while :math:`s < 0`: the average copies the weights (timm's
      ``update_after_step``);
    - ``warmup=False``: :math:`d_t = \text{decay}`;
    - ``warmup=True``: :math:`d_t = \min(\text{decay}, \frac{1 + s}{10 + s})`, the warm-up of
      TensorFlow's ``ExponentialMovingAverage(num_updates=s)`` (LitEma's ``use_num_updates``,
      which counts from 1, gives one step later's decay);
    - ``warmup='power'``: :math:`d_t = \min(\text{decay}, 1 - (1 + s/\gamma)^{-p})`, timm's
      ``ModelEmaV3`` and diffusers' ``EMAModel`` warm-up (:math:`d = 0` at :math:`s = 0`).

    The average starts as a copy of the weights. The update is computed as ``torch.lerp``
    does (exact copies at :math:`d_t = 0`) in float32, or in the average's dtype if wider.

    Parameters
    ----------
    states : dict of State
        The States to average: ``model.states(brainstate.ParamState)``, a dict
        ``{'w': state}`` or nested dicts. Any State with floating-point values (batch-norm
        statistics too); a State reachable under two keys is averaged once.
    decay : float
        :math:`\text{decay} \in [0, 1)`; the average spans about ``1 / (1 - decay)`` updates.
    warmup : {False, True, 'power'}
        The warm-up of the decay (the rule above).
    warmup_gamma, warmup_power : float, optional
        :math:`\gamma > 0` and :math:`p > 0` of ``warmup='power'`` (timm's defaults 1.0 and
        2/3). ``p = 2/3`` reaches 0.999 after about 31,000 updates, ``p = 3/4`` 0.9999 after
        about 215,000.
    start : int
        How many updates copy the weights before the averaging starts (default 0).
    dtype : floating dtype, optional
        The dtype of the averages. By default each has its State's dtype promoted to at
        least float32: a bfloat16 or float16 model gets float32 averages, which keep the
        small increments a narrow dtype would round away.

    Attributes
    ----------
    averages : dict of OptimState
        The averages, keyed and nested like ``states``.
    count : OptimState
        The number of updates (int32).

    Raises
    ------
    TypeError
        ``states`` holds something that is not a State, or an option is unknown.
    ValueError
        An option is out of range, or a State holds integers or booleans.

    See Also
    --------
    EMA.swa : equal averaging from a start step (stochastic weight averaging).

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([0.0, 4.0]))
    >>> ema = stateopt.EMA({'w': w}, decay=0.75)
    >>> w.value = jnp.array([4.0, 0.0])   # a training step
    >>> ema.update()                      # 0.75 * [0, 4] + 0.25 * [4, 0]
    >>> ema.averages['w'].value.tolist(), int(ema.count)
    ([1.0, 3.0], 1)

    With the warm-up, early updates follow the weights more closely:

    >>> ema = stateopt.EMA({'w': w}, decay=0.999, warmup=True)
    >>> w.value = jnp.array([14.0, 10.0])
    >>> ema.update()                      # d = min(0.999, 1 / 10)
    >>> [round(x, 4) for x in ema.averages['w'].value.tolist()]
    [13.0, 9.0]
    """

    __module__ = 'stateopt'
    #: Left out of brainstate's graph: the model's States (the model owns them), the averages
    #: in registration order (``averages`` shows them) and the compiled update.
    graph_invisible_attrs = ('_registry', '_averages', '_compiled')

    def __new__(cls, *args: Any, **kwargs: Any) -> EMA:
        signature = inspect.signature(cls)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            shown = signature.replace(parameters=[parameter.replace(annotation=parameter.empty)
                                                  for parameter in signature.parameters.values()])
            raise TypeError(f'EMA(): {exc}; its signature is EMA{shown}') from None
        return super().__new__(cls)

    def __init__(
        self,
        states: Any,
        decay: float = 0.999,
        *,
        warmup: bool | str = False,
        warmup_gamma: float | None = None,
        warmup_power: float | None = None,
        start: int = 0,
        dtype: Any = None,
    ) -> None:
        self._rule = _Rule('ema', *_checked_options(decay, warmup, warmup_gamma, warmup_power, start))
        dtype = _checked_dtype(dtype)
        try:
            self._registry = UniqueStateManager(states)
        except TypeError as exc:
            raise TypeError(f'EMA(states=...): {exc}') from None
        if not len(self._registry):
            raise ValueError(f'EMA(states=...) needs at least one State, got {described(states)}; pass '
                             f'model.states(brainstate.ParamState)')
        values = [RAW(state) for state in self._registry.states]
        self._signatures = tuple(map(_signature, values))
        self._averages = tuple(OptimState(_first_average(name, value, dtype))
                               for name, value in zip(self._registry.names, values))
        self.averages = unflatten(self._registry.paths, self._averages)
        self.count = OptimState(placed(jnp.zeros((), jnp.int32), mesh_of(values)))  # on the model's mesh
        self._swapped = False
        self._compiled = None

    @classmethod
    def swa(cls, states: Any, start: int = 0, *, dtype: Any = None) -> EMA:
        r"""Stochastic weight averaging: the equal average of the weights from update ``start`` on.

        As torch's ``AveragedModel`` (``n_averaged`` is :math:`\max(0, t - \text{start})`):
        the updates before ``start`` copy the weights, the update at ``start`` copies them
        too (the first weights averaged), and each later one adds the weights to the mean,

        .. math::

            \bar\theta \leftarrow \bar\theta + \frac{\theta - \bar\theta}{n + 1},
            \qquad n = t - \text{start}

        with :math:`t` the number of updates before this one (:attr:`count`). Call
        :meth:`update` where torch calls ``swa_model.update_parameters(model)``: once per
        epoch, or every ``k`` steps.

        Parameters
        ----------
        states : dict of State
            As for :class:`EMA`.
        start : int
            The number of the first update whose weights are averaged (the updates are
            numbered from 0).
        dtype : floating dtype, optional
            As for :class:`EMA`.

        Returns
        -------
        EMA
            An average whose :attr:`mode` is ``'swa'``.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.array(0.0))
        >>> swa = stateopt.EMA.swa({'w': w}, start=1)
        >>> for value in [10.0, 1.0, 2.0, 6.0]:    # update 0 copies 10; the mean of 1, 2, 6
        ...     w.value = jnp.array(value)
        ...     swa.update()
        >>> float(swa.averages['w'].value), swa.mode
        (3.0, 'swa')
        """
        average = cls(states, start=start, dtype=dtype)
        average._rule = replace(average._rule, mode='swa')
        return average

    def __deepcopy__(self, memo: dict) -> EMA:
        """A copy that owns copies of every State (the tracked ones too), as an optimizer's copy does."""
        return deepcopy_owning_states(self, memo, caches=('_compiled',))

    def __repr__(self) -> str:
        count = RAW(self.count)
        shown = count if is_traced(count) else int(count)
        rule = self._rule
        if rule.mode == 'swa':
            return f'EMA.swa(start={rule.start}, states={len(self._registry)}, count={shown})'
        return (f'EMA(decay={rule.decay}, warmup={rule.warmup!r}, start={rule.start}, '
                f'states={len(self._registry)}, count={shown})')

    # -- settings ---------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """``'ema'``, or ``'swa'`` for an average made by :meth:`swa`.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> states = {'w': brainstate.ParamState(jnp.ones(2))}
        >>> stateopt.EMA(states).mode, stateopt.EMA.swa(states).mode
        ('ema', 'swa')
        """
        return self._rule.mode

    @property
    def decay(self) -> float | None:
        """The decay (``None`` for SWA, which has none).

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> states = {'w': brainstate.ParamState(jnp.ones(2))}
        >>> stateopt.EMA(states, decay=0.99).decay, stateopt.EMA.swa(states).decay
        (0.99, None)
        """
        return None if self._rule.mode == 'swa' else self._rule.decay

    @property
    def start(self) -> int:
        """The number of updates that copy the weights before the averaging starts.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> stateopt.EMA.swa({'w': brainstate.ParamState(jnp.ones(2))}, start=100).start
        100
        """
        return self._rule.start

    @property
    def states(self) -> dict:
        """The averaged States, keyed as they were given (each State once).

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.ones(2))
        >>> stateopt.EMA({'w': w}).states['w'] is w
        True
        """
        return self._registry.to_pytree()

    # -- updating ---------------------------------------------------------------------------
    def update(self) -> None:
        """Move every average towards the current value of its State (the rule above).

        Works eagerly (one compiled call), and inside ``brainstate.transform.jit`` and the
        bodies of ``brainstate.transform.for_loop`` and ``scan``, which carry
        :attr:`averages` and :attr:`count`.

        Raises
        ------
        brainstate.TraceContextError
            Called under a raw JAX transform (``jax.jit``, ``jax.vmap``, ``jax.lax.scan``,
            ...), which cannot carry State updates out. Nothing changes.
        ValueError
            A State's value changed shape, dtype or structure since the average was made.
        RuntimeError
            Called inside :meth:`swapped`, where the States hold the averages.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.zeros(2))
        >>> ema = stateopt.EMA({'w': w}, decay=0.5)
        >>> @brainstate.transform.jit
        ... def train_step():
        ...     w.value = w.value + 2.0
        ...     ema.update()
        >>> train_step(); train_step()       # averages: 0.5 * 0 + 0.5 * 2, then 0.5 * 1 + 0.5 * 4
        >>> ema.averages['w'].value.tolist(), int(ema.count)
        ([2.5, 2.5], 2)
        """
        self._refuse_while_swapped('update()')
        states = self._registry.states
        if is_traced(self.count.value):
            values = [state.value for state in states]
            self._check_values(values)
            new, count = _averaged(self._rule, [average.value for average in self._averages], values,
                                   self.count.value)
            for average, value in zip(self._averages, new):
                average.value = value
            self.count.value = count
            return
        values = [RAW(state) for state in states]
        if inside_jax_transform(values):
            raise brainstate.TraceContextError(
                'EMA.update was called inside a raw JAX transform (jax.jit, jax.vmap, jax.grad, '
                'jax.lax.scan, ...), which cannot carry State updates out; nothing was changed. Use '
                "brainstate.transform.jit and brainstate's own transforms (for_loop, scan, vmap) instead")
        self._check_values(values)
        if self._compiled is None:
            self._compiled = jax.jit(functools.partial(_averaged, self._rule), donate_argnums=0)
        treedefs = [treedef for treedef, _ in self._signatures]
        averages = [treedef.unflatten(owned_leaves(average))
                    for treedef, average in zip(treedefs, self._averages)]
        new, count = self._compiled(averages, values, RAW(self.count))
        del averages
        for average, treedef, value in zip(self._averages, treedefs, new):
            store_leaves(average, treedef, jax.tree.leaves(value))
        write_back((self.count,), (count,))

    def _check_values(self, values: list) -> None:
        for name, value, made_for in zip(self._registry.names, values, self._signatures):
            now = _signature(value)
            if now != made_for:
                raise ValueError(f'EMA.update: the State {name!r} now holds {_shown(now)}, but its average '
                                 f'was made for {_shown(made_for)}; nothing was changed. Build a new EMA '
                                 f'for the new values')

    def _refuse_while_swapped(self, what: str) -> None:
        if self._swapped:
            raise RuntimeError(f'EMA.{what} inside `with ema.swapped():`, where the States hold the '
                               f'averages, not the trained weights; call it after the with block')

    # -- using the averages -------------------------------------------------------------------
    @contextlib.contextmanager
    def swapped(self) -> Iterator[EMA]:
        """Put the averages into the States for the ``with`` block, then the trained values back.

        Each average is cast to its State's dtype (a copy: nothing the States hold aliases
        an average). When the block ends, normally or by an exception, every State gets back
        the very value it held before (bit for bit).

        Raises
        ------
        RuntimeError
            Inside another ``swapped()`` block of this EMA. :meth:`update` and
            :meth:`copy_to` raise it inside the block too.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.array([0.0, 4.0]))
        >>> ema = stateopt.EMA({'w': w}, decay=0.5)
        >>> w.value = jnp.array([2.0, 2.0])
        >>> ema.update()
        >>> with ema.swapped():
        ...     print(w.value.tolist())        # evaluate the averaged model here
        [1.0, 3.0]
        >>> w.value.tolist()
        [2.0, 2.0]
        """
        self._refuse_while_swapped('swapped()')
        states = self._registry.states
        trained = [state.value for state in states]
        self._swapped = True
        try:
            self._copy_into(states)
            yield self
        finally:
            for state, value in zip(states, trained):
                state.value = value
            self._swapped = False

    def copy_to(self, states: Any = None) -> None:
        """Write the averages into ``states`` (by default the averaged States), cast to their dtypes.

        Parameters
        ----------
        states : dict of State, optional
            States keyed like the ones given to :class:`EMA` (another instance of the same
            model: ``other.states(brainstate.ParamState)``), matched by parameter name.

        Raises
        ------
        KeyError
            ``states`` lacks a name the EMA averages, or has one it does not. Nothing changes.
        ValueError
            A State's value has another shape or structure than its average. Nothing changes.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.array([4.0]))
        >>> ema = stateopt.EMA({'w': w}, decay=0.5)
        >>> w.value = jnp.array([0.0])
        >>> ema.update()
        >>> evaluation_copy = {'w': brainstate.ParamState(jnp.zeros(1))}
        >>> ema.copy_to(evaluation_copy)
        >>> evaluation_copy['w'].value.tolist(), w.value.tolist()
        ([2.0], [0.0])
        """
        self._refuse_while_swapped('copy_to()')
        self._copy_into(self._registry.states if states is None else self._matching(states))

    def _matching(self, states: Any) -> tuple:
        """The States of ``states`` in registration order, matched by name."""
        try:
            given = UniqueStateManager(states).to_dict()
        except TypeError as exc:
            raise TypeError(f'EMA.copy_to(states=...): {exc}') from None
        names = self._registry.names
        missing = [name for name in names if name not in given]
        unknown = sorted(set(given) - set(names))
        if missing or unknown:
            raise ReadableKeyError(f'EMA.copy_to: {_mismatched("states", missing, unknown)}; give States '
                                   f'keyed like the averaged ones ({_listed(list(names))})')
        return tuple(given[name] for name in names)

    def _copy_into(self, targets: tuple) -> None:
        """Give each target State its average, cast to the target's dtypes; all checked first."""
        copies = []
        for name, target, average, made_for in zip(self._registry.names, targets, self._averages,
                                                   self._signatures):
            value = target.value
            layout = _signature(value)
            if layout[0] != made_for[0] or [shape for shape, _ in layout[1]] != [s for s, _ in made_for[1]]:
                raise ValueError(f'EMA: the State {name!r} holds {_shown(layout)}, but its average '
                                 f'holds {_shown(made_for)}; nothing was changed')
            copies.append(jax.tree.map(lambda a, like: jnp.array(a, dtype=jnp.result_type(like), copy=True),
                                       average.value, value))
        if not is_traced(copies):
            mark_unread(self._averages)     # the reads made copies: nobody holds the averages
        for target, value in zip(targets, copies):
            target.value = value

    # -- state dicts ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The averages and the count, keyed by parameter names.

        Returns
        -------
        dict
            ``version`` (the layout, 1), ``mode`` (``'ema'`` or ``'swa'``), ``count`` (an
            int32 array) and ``averages`` (``{param name: average}``, names as
            :func:`stateopt.param_name` gives them: ``'l1.weight'``). The settings
            (``decay``, ``warmup``, ``start``) are the constructor's, not saved.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> ema = stateopt.EMA({('l1', 'weight'): brainstate.ParamState(jnp.ones(2))})
        >>> sd = ema.state_dict()
        >>> sorted(sd), list(sd['averages']), int(sd['count'])
        (['averages', 'count', 'mode', 'version'], ['l1.weight'], 0)
        """
        return {
            'version': LAYOUT_VERSION,
            'mode': self._rule.mode,
            'count': self.count.value,
            'averages': {name: average.value for name, average in zip(self._registry.names, self._averages)},
        }

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore :meth:`state_dict` output, after checking all of it.

        Every average must be finite, with the shape, dtype and structure of the one it
        replaces; the count an integer >= 0; ``mode`` this EMA's. On any mismatch nothing
        changes.

        Raises
        ------
        KeyError
            A missing or unknown entry or parameter name (a ``StateDictKeyError``).
        ValueError
            A wrong shape, dtype, structure, mode or version, a non-finite average or a
            negative count, naming the entry.
        TypeError
            ``state_dict`` is not a dict.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> w = brainstate.ParamState(jnp.zeros(2))
        >>> ema = stateopt.EMA({'w': w})
        >>> ema.load_state_dict({'version': 1, 'mode': 'ema', 'count': jnp.int32(7),
        ...                      'averages': {'w': jnp.array([1.0, 2.0])}})
        >>> ema.averages['w'].value.tolist(), int(ema.count)
        ([1.0, 2.0], 7)
        """
        count, averages = self._checked_state_dict(state_dict)
        self.count.value = count
        for average, value in zip(self._averages, averages):
            average.value = value

    def check_state_dict(self, state_dict: Mapping) -> None:
        """Raise what :meth:`load_state_dict` would raise for ``state_dict``; change nothing.

        Examples
        --------
        >>> import jax.numpy as jnp, brainstate, stateopt
        >>> ema = stateopt.EMA({'w': brainstate.ParamState(jnp.zeros(2))})
        >>> ema.check_state_dict({'version': 1, 'mode': 'ema', 'count': jnp.int32(-1),
        ...                       'averages': {'w': jnp.zeros(2)}})
        Traceback (most recent call last):
        ...
        ValueError: count must be >= 0 (it is a count), but holds -1; the state dict is damaged
        """
        self._checked_state_dict(state_dict)

    def _checked_state_dict(self, state_dict: Mapping) -> tuple[jax.Array, list]:
        """``(count, averages in registration order)`` from ``state_dict``, all checked."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f'EMA.load_state_dict expects a dict (what state_dict() returns), got '
                            f'{described(state_dict)}')
        entries = ('version', 'mode', 'count', 'averages')
        missing = [key for key in entries if key not in state_dict]
        unknown = sorted(set(state_dict) - set(entries), key=repr)
        if missing or unknown:
            raise StateDictKeyError(f'{_mismatched("the state dict", missing, unknown)}; an EMA state dict '
                                    f'holds {", ".join(entries)} (what state_dict() returns)')
        version = state_dict['version']
        integer = not isinstance(version, bool) and np.ndim(version) == 0 and \
            np.issubdtype(np.asarray(version).dtype, np.integer)
        if not integer or int(version) != LAYOUT_VERSION:
            raise ValueError(f'version is {described(version)}; this stateopt reads EMA state dicts of '
                             f'layout {LAYOUT_VERSION} (a newer stateopt may have written it)')
        mode = _plain_string(state_dict['mode'])
        if mode != self._rule.mode:
            raise ValueError(f"mode is {described(state_dict['mode'])}, but this average's mode is "
                             f"{self._rule.mode!r}; load an EMA state dict into EMA(...) and an SWA one into "
                             f'EMA.swa(...)')
        count = _checked_slot('count', state_dict['count'], RAW(self.count), None)
        saved = state_dict['averages']
        if not isinstance(saved, Mapping):
            raise ValueError(f'averages must be a dict {{param name: array}}, got {described(saved)}')
        names = self._registry.names
        missing = [name for name in names if name not in saved]
        unknown = sorted(set(saved) - set(names), key=repr)
        if missing or unknown:
            raise StateDictKeyError(f'{_mismatched("averages", missing, unknown)}; this EMA averages '
                                    f'{_listed(list(names))}')
        averages = []
        for name, average in zip(names, self._averages):
            current = RAW(average)
            got, treedef = jax.tree.flatten(saved[name])
            if treedef != jax.tree.structure(current):
                raise ValueError(f'averages[{name!r}] is {described(saved[name])}, but the average of '
                                 f'{name!r} is {described(current)}')
            leaves = [_owned(_checked_slot(f'averages[{name!r}]{_where(path)}', leaf, like, None), leaf)
                      for (path, like), leaf in zip(jax.tree_util.tree_flatten_with_path(current)[0], got)]
            averages.append(treedef.unflatten(leaves))
        return count, averages


# -- construction helpers ----------------------------------------------------------------------

def _checked_options(decay: Any, warmup: Any, gamma: Any, power: Any, start: Any) -> tuple:
    """``(decay, warmup, gamma, power, start)`` of the constructor, checked."""
    try:
        decay = check_number('decay', decay, low=0.0, high=1.0, high_open=True)
    except ValueError as exc:
        raise _fixed(exc, 'give a decay in [0, 1), such as 0.999 (an average over about 1000 '
                          'updates)') from None
    if is_traced(decay):
        raise ValueError('EMA: decay must be a number, not a traced value; build the EMA outside jit')
    if not any(warmup is option or (isinstance(warmup, str) and warmup == option) for option in _WARMUPS):
        raise ValueError(f"EMA: warmup must be False, True or 'power', got {warmup!r}; True is the "
                         f"(1 + t) / (10 + t) warm-up, 'power' timm's 1 - (1 + t / warmup_gamma) ** "
                         f'-warmup_power')
    if warmup != 'power' and (gamma is not None or power is not None):
        given = 'warmup_gamma' if gamma is not None else 'warmup_power'
        raise ValueError(f"EMA: {given} applies to warmup='power' only, got warmup={warmup!r}; pass "
                         f"warmup='power' or leave {given} out")
    checked = []
    for name, value, default in (('warmup_gamma', gamma, 1.0), ('warmup_power', power, 2 / 3)):
        try:
            checked.append(default if value is None else check_number(name, value, low=0.0, low_open=True))
        except ValueError as exc:
            raise _fixed(exc, f'give a positive number (timm uses {default:.4g})') from None
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start <= _INT32_MAX:
        raise ValueError(f'EMA: start must be an integer from 0 to {_INT32_MAX}, got {start!r}; it counts '
                         f'the updates that copy the weights before the averaging starts')
    return decay, warmup, *checked, int(start)


def _checked_dtype(dtype: Any) -> Any:
    try:
        return floating_dtype('dtype', dtype)
    except ValueError as exc:
        raise ValueError(f'EMA: {exc}; averages are floating point (None: at least float32, the '
                         f'States\' own dtype if wider)') from None


def _first_average(name: str, value: Any, dtype: Any) -> Any:
    """A copy of a State's value in the averages' dtype, refusing what cannot be averaged."""
    def first(path: tuple, leaf: Any) -> jax.Array:
        kind = np.dtype(jnp.result_type(leaf))
        where = f'{name!r}{_where(path)}'
        if not jnp.issubdtype(kind, jnp.inexact):
            raise ValueError(f'EMA: the State {where} holds {kind.name} values, which cannot be averaged; '
                             f'average floating-point States only (model.states(brainstate.ParamState))')
        if dtype is not None and jnp.issubdtype(kind, jnp.complexfloating):
            raise ValueError(f'EMA: dtype={dtype.name} cannot hold the complex State {where}; leave dtype '
                             f'at None')
        wanted = jnp.promote_types(kind, jnp.float32) if dtype is None else dtype
        return jnp.array(leaf, dtype=wanted, copy=True)

    return jax.tree_util.tree_map_with_path(first, value)


def _owned(array: jax.Array, source: Any) -> jax.Array:
    """``array``, copied if it is ``source`` itself (a loaded average never aliases the caller's array)."""
    return jnp.copy(array) if array is source else array


def _where(path: KeyPath) -> str:
    """The position of a leaf inside a State's value (empty for a bare array)."""
    return jax.tree_util.keystr(path) if path else ''


def _shown(signature: tuple) -> str:
    treedef, layout = signature
    arrays = ', '.join(f'{np.dtype(dtype).name}{list(shape)}' for shape, dtype in layout)
    return arrays if treedef.num_leaves == 1 and treedef.num_nodes == 1 else f'{arrays} in {treedef}'


def _listed(items: list) -> str:
    return ', '.join(map(repr, items)) or 'none'


def _mismatched(where: str, missing: list, unknown: list) -> str:
    """``where lacks 'a'; where has the unknown 'b'``: what a keyed input gets wrong."""
    problems = ([f'{where} lacks {_listed(missing)}'] if missing else []) + \
        ([f'{where} has the unknown {_listed(unknown)}'] if unknown else [])
    return '; '.join(problems)

