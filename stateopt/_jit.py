"""donating_jit: compile a whole train step, reuse the buffers of the States it writes, keep their layouts."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from inspect import signature as inspect_signature
from typing import Any

import brainstate
import jax
from jax.sharding import NamedSharding, PartitionSpec, Sharding

from . import _donation
from ._donation import (
    RAW,
    DonationGuard,
    flags_reads,
    owned_leaves,
    stored_elsewhere,
    write_back,
    write_back_all,
)
from ._trace import at_top_level, is_traced

__all__ = ['donating_jit']

def donating_jit(
    fn: Callable | None = None,
    *,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    in_shardings: Any = None,
    out_shardings: Any = None,
    state_shardings: Mapping[brainstate.State, Sharding] | Callable[[brainstate.State], Sharding | None]
    | None = None,
    donate_argnums: int | Sequence[int] = (),
    donate_argnames: str | Sequence[str] = (),
    keep_unused: bool = False,
    inline: bool = False,
    name: str | None = None,
    **jit_options: Any,
) -> Callable:
    """Like ``brainstate.transform.jit``, but the buffers of the States ``fn`` writes are donated.

    ``brainstate.transform.jit`` passes every State's value into the compiled function
    and allocates new buffers for the values written back, so a memory-bound update
    (an optimizer step over large parameters) moves about twice the memory it needs.
    ``donating_jit`` hands XLA the buffers of the States the function writes (model
    parameters, optimizer moments, step counts), so it updates them in place, as a
    ``jax.jit`` with ``donate_argnums`` over a pure optax step does: after a call the
    previous values are deleted. States that are only read are not donated, and neither
    is a value the caller still holds: a State's value (or a leaf of it) referenced from
    outside is copied first, so no array the caller can reach becomes invalid.

    Every State the function writes comes back on its layout, which is, in this order:

    - its sharding in ``state_shardings``, if it is pinned there;
    - the sharding its array has when the call begins, if that is a ``NamedSharding``
      or spans several devices;
    - for an array jax has not committed to devices (made by ``jnp`` on the default
      device, not by ``jax.device_put`` or a sharded computation), the layout the State
      had before, where jax moves it, as ``jax.jit`` moves an uncommitted argument;
    - none for an array on one device: XLA places the result, as in ``jax.jit``.

    A pinned State whose array is committed to another sharding is refused before
    anything runs, as ``jax.jit`` refuses a committed argument off its ``in_shardings``:
    move it there first with ``jax.device_put``. The layouts are the ``in_shardings`` and
    ``out_shardings`` of the compiled call, so jax's dispatch checks them at no extra
    cost; a State that comes on a new layout costs one more compilation.

    Inside another brainstate transform the call becomes part of the outer computation.

    It is a drop-in for ``brainstate.transform.jit`` on train steps: the same call forms
    (positional, keyword and static arguments, Python scalars, pytrees in and out), the
    model's other States (batch-norm statistics, the PRNG key) written as any State, the
    same keywords, and the same attributes on the result: ``origin_fun``,
    ``clear_cache()``, and the ahead-of-time stages ``lower``, ``trace``, ``eval_shape``
    and ``compile``, which run nothing and change no State. Where brainstate passes
    ``in_shardings`` per argument, a tree prefix works here too, as in ``jax.jit``.

    Parameters
    ----------
    fn : callable
        The train step; it reads and writes States (``opt.update`` included) and
        returns arrays.
    static_argnums, static_argnames : optional
        As for ``jax.jit``.
    in_shardings : Sharding, None or pytree of them, optional
        Where ``fn``'s positional arguments (static ones not counted) go, with
        ``jax.jit``'s meaning: a tree prefix of the arguments tuple; None leaves an
        argument to jax. Keyword arguments are always left to jax.
    out_shardings : Sharding, None or pytree of them, optional
        Where ``fn``'s return values go: a tree prefix of them, as for ``jax.jit``.
    state_shardings : dict or callable, optional
        Pins States: a dict ``{State: Sharding}``, or a callable ``(state) -> Sharding
        | None`` asked once for each State the function reads or writes (None: the
        rule above). A pinned State is moved to its sharding if its array is
        uncommitted, and a written one comes back on it.
    donate_argnums, donate_argnames : optional
        Arguments whose buffers are donated too (deleted after the call), as for
        ``jax.jit``: a name also donates the parameter of that name passed by
        position. A donated argument cannot be static.
    keep_unused, inline : bool, optional
        As for ``jax.jit``.
    name : str, optional
        The compiled program's name (default: ``fn``'s).
    **jit_options
        Further keywords of ``jax.jit`` (``compiler_options``, ...).

    Negative argument indices are refused, as ``brainstate.transform.jit`` refuses them.

    Every sharding given must span the same devices. A key or value that does not fit
    raises a ``TypeError`` or ``ValueError`` naming it, before anything runs.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, brainstate, stateopt
    >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    >>> on_model = NamedSharding(Mesh(jax.devices()[:1], ('model',)), P('model'))
    >>> w = brainstate.ParamState(jnp.ones(4))
    >>> opt = stateopt.AdamW(lr=0.1).register_trainable_weights({'w': w})
    >>> @stateopt.donating_jit(state_shardings={w: on_model})
    ... def train_step(x):
    ...     grads, loss = brainstate.transform.grad(
    ...         lambda: jnp.sum((w.value * x) ** 2), grad_states={'w': w}, return_value=True)()
    ...     opt.update(grads)
    ...     return loss
    >>> held = w.value
    >>> float(train_step(jnp.ones(4)))
    4.0
    >>> int(opt.step_count.value), w.value.sharding == on_model, held.is_deleted()
    (1, True, False)
    """
    if fn is None:
        return functools.partial(donating_jit, static_argnums=static_argnums, static_argnames=static_argnames,
                                 in_shardings=in_shardings, out_shardings=out_shardings,
                                 state_shardings=state_shardings, donate_argnums=donate_argnums,
                                 donate_argnames=donate_argnames, keep_unused=keep_unused, inline=inline,
                                 name=name, **jit_options)
    static_argnums = _argnums(static_argnums, 'static_argnums')
    static_argnames = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
    donated_args = _donated_arguments(fn, _argnums(donate_argnums, 'donate_argnums'), donate_argnames,
                                      static_argnums, static_argnames)
    jit_options = {**jit_options, 'keep_unused': keep_unused, 'inline': inline}
    given = _sharding_leaves(in_shardings, 'in_shardings') + _sharding_leaves(out_shardings, 'out_shardings')
    pin_of = _pins(state_shardings)
    if isinstance(state_shardings, Mapping):
        given += [(f'state_shardings[{_describe(state)}]', pin) for state, pin in state_shardings.items()]
    _same_devices(given)
    stateful = brainstate.transform.StatefulFunction(
        fn, static_argnums=static_argnums, static_argnames=static_argnames, return_only_write=True)

    def run(layout: _Layout, values: tuple, own_leaves: tuple, read: tuple, *args: Any) -> tuple:
        kwargs = dict(zip(layout.kw_names, args[layout.n_args:]), **layout.static_kwargs)
        sources = {'write': iter(values), 'own': iter(own_leaves), 'read': iter(read)}
        treedefs = iter(layout.own_treedefs)
        state_values = [next(treedefs).unflatten(next(sources[kind])) if kind == 'own'
                        else next(sources[kind]) for kind in layout.kinds]
        new_values, out = stateful.jaxpr_call(state_values, *args[:layout.n_args], **kwargs)
        written = tuple(v for v, kind in zip(new_values, layout.kinds) if kind == 'write')
        own = tuple(jax.tree.leaves(v) for v, kind in zip(new_values, layout.kinds) if kind == 'own')
        return written, own, out

    def compile_for(plan: _Plan) -> Callable:
        """The jitted call of ``plan``, taking and giving back the States' leaves on ``plan.layouts``."""
        # the layout is bound, not passed: a static argument costs tens of µs per call
        bound = _named(functools.partial(run, plan.layout), name or getattr(fn, '__name__', 'train_step'))
        static = tuple(i + 3 for i in static_argnums)
        donate = (0, 1, *donated_args(plan.layout))
        if all(layout is None for layout in plan.layouts) and plan.user_shardings is None:
            return jax.jit(bound, donate_argnums=donate, static_argnums=static, **jit_options)
        written, own, read = (None if all(leaf is None for leaf in jax.tree.leaves(group, is_leaf=_is_none))
                              else group for group in plan.trees.unflatten(plan.layouts))
        user_in, user_out = plan.user_shardings or ((None,) * plan.n_dynamic, None)
        return jax.jit(bound, donate_argnums=donate, static_argnums=static,
                       in_shardings=(written, own, read, *user_in, *[None] * len(plan.kw_names)),
                       out_shardings=(written, own, user_out), **jit_options)

    plans: dict = {}   # argument signature -> _Plan

    def plan_for(args: tuple, kwargs: dict) -> _Plan:
        signature = _signature(args, kwargs, static_argnums, static_argnames)
        plan = plans.get(signature)
        if plan is None:
            key = stateful.get_arg_cache_key(*args, **kwargs, compile_if_miss=True)
            written_ids = {id(state) for state in stateful.get_write_states_by_cache(key)}
            states = stateful.get_states_by_cache(key)
            pins = tuple(map(pin_of, states))
            _same_devices(given + [(f'state_shardings({_describe(state)})', pin)
                                   for state, pin in zip(states, pins) if pin is not None])
            dynamic = [arg for i, arg in enumerate(args) if i not in static_argnums]
            user = _user_shardings(fn, in_shardings, out_shardings, dynamic,
                                   stateful.get_out_shapes_by_cache(key)[0])
            arguments = (len(args), tuple(sorted(k for k in kwargs if k not in static_argnames)),
                         {k: v for k, v in kwargs.items() if k in static_argnames})
            plan = _Plan(states, written_ids, pins, arguments, user, len(dynamic), compile_for)
            plans[signature] = plan
        return plan

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if jax.config.jax_disable_jit or (not at_top_level() and is_traced((args, kwargs))):
            return fn(*args, **kwargs)
        plan = plan_for(args, kwargs)
        if plan.released != _donation.released:     # some State gave its value away since it was traced
            _refuse_packed_since(plan.written)
            plan.released = _donation.released
        values = list(map(RAW, plan.written))
        plan.guard = DonationGuard.protected(plan.guard, plan.written, values)
        own_leaves = tuple(map(owned_leaves, plan.own))
        read = tuple(map(RAW, plan.read))
        if plan.kw_names:
            args = (*args, *map(kwargs.__getitem__, plan.kw_names))
        try:
            new_values, new_own, out = plan.compiled(tuple(values), own_leaves, read, *args)
        except ValueError:
            # jax refuses a committed array off its in_shardings before running anything
            if not plan.relayout(values, own_leaves, read):
                raise
            new_values, new_own, out = plan.compiled(tuple(values), own_leaves, read, *args)
        if plan.cache_size() != plan.seen:       # jax compiled anew: some array came on a new layout
            new_values, new_own = plan.settle(values, own_leaves, new_values, new_own)
        del values, own_leaves
        write_back_all(plan.written, new_values, plan.own, plan.layout.own_treedefs, new_own)
        return out

    def staged(stage: str) -> Callable:
        """``call``'s compiled function at an ahead-of-time ``stage``: nothing runs, no State changes."""
        def at_stage(*args: Any, **kwargs: Any) -> Any:
            plan = plan_for(args, kwargs)
            own_leaves = tuple(jax.tree.leaves(RAW(state)) for state in plan.own)
            inputs = (tuple(map(RAW, plan.written)), own_leaves, tuple(map(RAW, plan.read)), *args,
                      *map(kwargs.__getitem__, plan.kw_names))
            compiled = plan.compiled
            if stage == 'compile':
                return compiled.lower(*inputs).compile()
            return getattr(compiled, stage)(*inputs)
        at_stage.__name__ = stage
        at_stage.__doc__ = (f'``jax.jit(...).{stage}`` of the compiled call for these arguments. It '
                           f"takes the written States' values, the optimizer States' leaves and the read "
                           f"States' values before the arguments, and returns the new values of the first "
                           f'two before what the function returns.')
        return at_stage

    def clear_cache() -> None:
        """Forget every traced and compiled form of the function (the next call traces again)."""
        plans.clear()
        stateful.clear_cache()

    call.origin_fun = fn
    call.clear_cache = clear_cache
    for stage in ('lower', 'trace', 'eval_shape', 'compile'):
        setattr(call, stage, staged(stage))
    return call


def _argnums(argnums: int | Sequence[int], what: str) -> tuple:
    """``argnums`` as a tuple of non-negative ints; a negative index is refused, as brainstate does."""
    argnums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    negative = [i for i in argnums if not isinstance(i, int) or i < 0]
    if negative:
        raise ValueError(f'{what}={argnums!r}: {negative[0]!r} is not the index of a positional argument; '
                         f'give non-negative indices (as brainstate.transform.jit requires)')
    return argnums


def _donated_arguments(fn: Callable, argnums: tuple, argnames: str | Sequence[str], static_argnums: tuple,
                       static_argnames: tuple) -> Callable:
    """The donated arguments of ``fn`` as positions of the compiled call, given a plan's layout.

    As in ``jax.jit``, ``donate_argnums`` and ``donate_argnames`` name the same parameters
    where ``fn``'s signature tells which position a name has; a keyword argument comes
    after the positional ones in the compiled call.
    """
    names = {argnames} if isinstance(argnames, str) else set(argnames)
    positions = set(argnums)
    try:
        parameters = [p for p in inspect_signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):   # no signature to read: the two stay as given
        parameters = []
    for position, parameter in enumerate(parameters):
        if parameter.name in names:
            positions.add(position)
        elif position in positions:
            names.add(parameter.name)
    static = positions.intersection(static_argnums) or names.intersection(static_argnames)
    if static:
        raise ValueError(f'donating_jit: {sorted(static)[0]!r} is both static and donated; a static '
                         f'argument has no buffer to donate')
    if not positions and not names:
        return lambda layout: ()

    def donated(layout: _Layout) -> tuple:
        return (*(i + 3 for i in sorted(positions) if i < layout.n_args),
                *(3 + layout.n_args + j for j, name in enumerate(layout.kw_names) if name in names))
    return donated


def _named(fn: Callable, name: str) -> Callable:
    """``fn`` under ``name``: the name jax gives the compiled program."""
    def named(*args: Any) -> Any:
        return fn(*args)
    named.__name__ = named.__qualname__ = name
    return named


@dataclass(frozen=True, eq=False)
class _Layout:
    """How the compiled call receives each State and the function's arguments.

    Each plan's compiled function has its layout bound in, so no call passes or hashes it.
    Keyword arguments come after the positional ones (``jax.jit`` refuses keyword
    arguments when ``in_shardings`` are given); static ones are bound.
    """

    n_args: int             # positional arguments, static ones included
    kw_names: tuple         # the dynamic keyword arguments, in the order they follow the positional ones
    static_kwargs: dict     # the static keyword arguments and their values
    kinds: tuple            # 'write', 'own' or 'read' per State, in the traced function's order
    own_treedefs: tuple     # structure of each 'own' State's value


def _refuse_packed_since(written: list) -> None:
    """Refuse a call that would write a State a :class:`stateopt.PackedParams` took over after
    the call was traced: its value now lives in the buffer, which the call does not write."""
    for state in written:
        if stored_elsewhere(state):
            raise TypeError(
                f'donating_jit: {_describe(state)} was packed by a stateopt.PackedParams after this function '
                f'was traced, so this call would not write it; call its clear_cache() to trace it again '
                f'(an optimizer that registered the State refuses it then: register the PackedParams). '
                f'Nothing was changed')


class _Plan:
    """The States a traced function reads and writes, sorted by how the compiled call takes them,
    and where each of their arrays lives.

    The optimizer's own States (:class:`~stateopt.OptimState`) travel as flat lists of
    leaves, kept between calls; other written States as their values; read-only
    States are passed and never donated. ``layouts`` has a sharding or None for each
    leaf (the written values', the own States', the read ones', in that order, as
    ``trees`` flattens them): the compiled call takes the leaves on them and gives the
    written ones back on them. One compiled call is kept for each set of layouts met.
    """

    def __init__(self, states: tuple, written_ids: set, pins: tuple, arguments: tuple, user_shardings: Any,
                 n_dynamic: int, compile_for: Callable):
        kinds = tuple('read' if id(s) not in written_ids else 'own' if flags_reads(s) else 'write'
                      for s in states)

        def of(kind: str, items: Sequence) -> list:
            return [item for item, k in zip(items, kinds) if k == kind]

        self.written, self.own, self.read = of('write', states), of('own', states), of('read', states)
        self.pins = of('write', pins) + of('own', pins) + of('read', pins)
        self.layout = _Layout(*arguments, kinds, tuple(jax.tree.structure(RAW(s)) for s in self.own))
        self.kw_names = self.layout.kw_names
        self.user_shardings = user_shardings    # (in_shardings per dynamic argument, out_shardings) or None
        self.n_dynamic = n_dynamic
        self.guard = None
        self.released = _donation.released      # how many States had given their value away then
        self._compile_for = compile_for
        self.variants: dict = {}                # (layouts, trees) -> jitted call
        self.layouts, self.trees = (), None
        self._use(*self._layouts_of(list(map(RAW, self.written)),
                                    tuple(jax.tree.leaves(RAW(s)) for s in self.own),
                                    tuple(map(RAW, self.read))))

    def _use(self, layouts: tuple, trees: Any) -> None:
        """Compile (or take) the call for ``layouts`` of the leaves of ``trees``."""
        self.layouts, self.trees = layouts, trees
        if (layouts, trees) not in self.variants:
            self.variants[layouts, trees] = self._compile_for(self)
        self.compiled = self.variants[layouts, trees]
        # jax's count of the input signatures it compiled for: it grows when arrays come on new layouts
        # (a jax without it: a new object each time, so every call settles)
        self.cache_size = getattr(self.compiled, '_cache_size', object)
        self.seen = self.cache_size()

    def _leaves(self, values: Sequence, own_leaves: Sequence, read: Sequence) -> tuple:
        """The leaves of the States' arrays, each with its State, and their structure."""
        leaves, trees = jax.tree.flatten((tuple(values), tuple(own_leaves), tuple(read)))
        counts = ([len(jax.tree.leaves(v)) for v in values] + list(map(len, own_leaves))
                  + [len(jax.tree.leaves(v)) for v in read])
        owners = [i for i, count in enumerate(counts) for _ in range(count)]
        return leaves, owners, trees

    def _layouts_of(self, values: Sequence, own_leaves: Sequence, read: Sequence) -> tuple:
        """The layout of each leaf of the States' arrays ``values``, ``own_leaves`` and ``read``: its
        State's pin; for a written State, else the layout rule of :func:`donating_jit`."""
        leaves, owners, trees = self._leaves(values, own_leaves, read)
        before = self.layouts if self.trees is not None and trees == self.trees else (None,) * len(leaves)
        n_written = len(self.written) + len(self.own)
        layouts = tuple(self.pins[owner] if self.pins[owner] is not None or owner >= n_written
                        else _layout_of(leaf, old) for leaf, owner, old in zip(leaves, owners, before))
        return layouts, trees

    def relayout(self, values: list, own_leaves: tuple, read: tuple) -> bool:
        """After jax refused the call's arrays: follow the States that came on other layouts.

        Returns whether to call again: False if no layout changed (the error is not about
        the States). A pinned State committed elsewhere is refused here.
        """
        leaves, owners, _ = self._leaves(values, own_leaves, read)
        states = self.written + self.own + self.read
        for leaf, owner in zip(leaves, owners):
            pin, sharding = self.pins[owner], _sharding(leaf)
            if pin is not None and _committed(leaf) and not _same(sharding, pin, leaf.ndim):
                raise ValueError(
                    f'state_shardings pins {_describe(states[owner])} to {pin}, but its value is committed '
                    f'to {sharding}. Like jax.jit with a committed argument off its in_shardings, '
                    f'donating_jit does not move it: put it there first (state.value = '
                    f'jax.device_put(state.value, sharding)), or leave the State out of state_shardings to '
                    f'keep the layout it has.') from None
        layouts, trees = self._layouts_of(values, own_leaves, read)
        if (layouts, trees) == (self.layouts, self.trees):
            return False
        self._use(layouts, trees)
        return True

    def settle(self, values: list, own_leaves: tuple, new_values: tuple, new_own: tuple) -> tuple:
        """After a call jax compiled anew: give a written array that came on a layout the plan did not
        know back on it, move pinned read-only States to their pins, and follow the layouts the
        States have now."""
        self.seen = self.cache_size()
        ins = jax.tree.leaves((tuple(values), own_leaves))
        outs, tree = jax.tree.flatten((new_values, new_own))
        kept = []
        for leaf_in, leaf_out, layout in zip(ins, outs, self.layouts):
            sharding = _sharding(leaf_in)
            if (layout is None and sharding is not None and _keeps(sharding)
                    and not _same(_sharding(leaf_out), sharding, leaf_in.ndim)):
                leaf_out = jax.device_put(leaf_out, sharding)
            kept.append(leaf_out)
        new_values, new_own = tree.unflatten(kept)
        # a pinned State the call only reads, on an uncommitted array jax moved for the call: moved for good
        for state, pin in zip(self.read, self.pins[len(self.written) + len(self.own):]):
            if pin is not None and not all(map(_committed, jax.tree.leaves(RAW(state)))):
                write_back((state,), (jax.device_put(RAW(state), pin),))
        layouts, trees = self._layouts_of(new_values, new_own, tuple(map(RAW, self.read)))
        if (layouts, trees) != (self.layouts, self.trees):
            self._use(layouts, trees)
        return new_values, new_own


def _keeps(sharding: Sharding) -> bool:
    """Whether an array on ``sharding`` keeps it through a call: a NamedSharding, or over several devices."""
    return isinstance(sharding, NamedSharding) or len(sharding.device_set) > 1


def _sharding(leaf: Any) -> Sharding | None:
    """The sharding of a jax array; None for a numpy array, a Python number or a tracer."""
    return leaf.sharding if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) else None


def _committed(leaf: Any) -> bool:
    """Whether ``leaf`` is a jax array committed to its devices (by ``device_put``, or computed there)."""
    return _sharding(leaf) is not None and leaf.committed


def _layout_of(leaf: Any, before: Sharding | None) -> Sharding | None:
    """The layout of an unpinned State's array ``leaf``, whose State had the layout ``before``."""
    sharding = _sharding(leaf)
    if sharding is not None and _keeps(sharding):
        return sharding
    return None if _committed(leaf) else before


def _same(a: Sharding | None, b: Sharding, ndim: int) -> bool:
    return a is not None and (a == b or a.is_equivalent_to(b, ndim))


def _is_none(x: Any) -> bool:
    return x is None


def _is_sharding_leaf(x: Any) -> bool:
    return x is None or isinstance(x, (Sharding, PartitionSpec))


def _sharding_leaves(tree: Any, name: str) -> list:
    """``(where, sharding)`` for each Sharding in ``tree``; anything else but None is refused."""
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_sharding_leaf)[0]:
        where = f'{name}{jax.tree_util.keystr(path)}'
        if isinstance(leaf, PartitionSpec):
            raise TypeError(f'{where} is {leaf}, a PartitionSpec: donating_jit takes shardings, which say '
                            f'their mesh. Give jax.sharding.NamedSharding(mesh, {leaf}).')
        if not isinstance(leaf, Sharding) and leaf is not None:
            raise TypeError(f'{where} is {leaf!r}, not a jax.sharding.Sharding or None. Give a sharding, '
                            f'such as jax.sharding.NamedSharding(mesh, PartitionSpec(...)), or None.')
        if leaf is not None:
            found.append((where, leaf))
    return found


def _pins(state_shardings: Any) -> Callable[[brainstate.State], Sharding | None]:
    """``state_shardings`` as a function of a State: a dict checked now, a callable as it answers."""
    if state_shardings is None:
        return lambda state: None
    if isinstance(state_shardings, Mapping):
        for state, pin in state_shardings.items():
            if not isinstance(state, brainstate.State):
                raise TypeError(f'state_shardings has the key {state!r} ({type(state).__name__}), not a '
                                f'brainstate State. Key it by the States themselves ({{model.layer.weight: '
                                f'sharding}}), or pass a callable (state) -> sharding.')
            if not isinstance(pin, Sharding):
                raise TypeError(f'state_shardings[{_describe(state)}] is {pin!r}, not a '
                                f'jax.sharding.Sharding. Give the sharding it must live on, such as '
                                f'NamedSharding(mesh, spec).')
        pins = {id(state): pin for state, pin in state_shardings.items()}
        return lambda state: pins.get(id(state))
    if callable(state_shardings):
        def asked(state: brainstate.State) -> Sharding | None:
            pin = state_shardings(state)
            if pin is not None and not isinstance(pin, Sharding):
                raise TypeError(f'state_shardings({_describe(state)}) returned {pin!r}, not a '
                                f'jax.sharding.Sharding or None. Return the sharding the State must live on, '
                                f'or None to keep the one it has.')
            return pin
        return asked
    raise TypeError(f'state_shardings is a {type(state_shardings).__name__}: give a dict {{State: Sharding}} '
                    f'or a callable (state) -> Sharding | None.')


def _same_devices(given: list) -> None:
    """Refuse shardings over different devices: one compiled call runs on one set of devices."""
    if not given:
        return
    first_where, first = given[0]
    for where, sharding in given[1:]:
        if sharding.device_set != first.device_set:
            raise ValueError(
                f'{where} is {sharding}, over devices {_ids(sharding)}, but {first_where} is over devices '
                f'{_ids(first)}. One compiled call runs on one set of devices: give shardings over the '
                f'same mesh.')


def _ids(sharding: Sharding) -> list:
    return sorted(device.id for device in sharding.device_set)


def _describe(state: brainstate.State) -> str:
    """A State as errors name it: its type, its name if it has one, and its arrays' dtypes and shapes."""
    leaves = jax.tree.leaves(RAW(state))
    arrays = [f'{leaf.dtype}{list(leaf.shape)}' if hasattr(leaf, 'shape') else repr(leaf)
              for leaf in leaves[:3]]
    name = getattr(state, 'name', None)
    return (f'{type(state).__name__}({", ".join(arrays)}{", ..." if len(leaves) > 3 else ""}'
            f'{f", name={name!r}" if name else ""})')


def _user_shardings(fn: Callable, in_shardings: Any, out_shardings: Any, dynamic: list,
                    out_shapes: Any) -> tuple | None:
    """``in_shardings`` as one entry per dynamic positional argument, and ``out_shardings``,
    both checked against this call's arguments and return value; None if neither is given."""
    if in_shardings is None and out_shardings is None:
        return None
    name = getattr(fn, '__name__', 'the function')
    if isinstance(in_shardings, (tuple, list)):
        if len(in_shardings) != len(dynamic):
            raise ValueError(f'in_shardings has {len(in_shardings)} entries, but {name} was called with '
                             f'{len(dynamic)} positional arguments (static ones not counted). Give one '
                             f'entry per argument (a Sharding, None, or a pytree of them), or one Sharding '
                             f'for all.')
        per_argument = tuple(in_shardings)
    elif _is_sharding_leaf(in_shardings):
        per_argument = (in_shardings,) * len(dynamic)
    else:
        raise ValueError(f'in_shardings is a {type(in_shardings).__name__}: as for jax.jit, give one '
                         f'Sharding for all positional arguments of {name}, or a tuple with one entry per '
                         f'argument.')
    for i, (entry, arg) in enumerate(zip(per_argument, dynamic)):
        _check_prefix(entry, arg, f'in_shardings[{i}]', f'argument {i} of {name}')
    _check_prefix(out_shardings, out_shapes, 'out_shardings', f'what {name} returns')
    return per_argument, out_shardings


def _check_prefix(shardings: Any, tree: Any, what: str, whose: str) -> None:
    """Refuse ``shardings`` (given as ``what``) unless it is a tree prefix of ``tree`` (``whose``)."""
    try:
        jax.tree.structure(shardings, is_leaf=_is_sharding_leaf).flatten_up_to(tree)
    except (ValueError, TypeError):
        raise ValueError(f'{what} is {shardings!r}, which is not a tree prefix of {whose}, '
                         f'{jax.tree.structure(tree)}. Give a Sharding or None for all of it, or a pytree '
                         f'of them with its structure.') from None


_SHAPE_DTYPE = operator.attrgetter('shape', 'dtype')


def _signature(args: tuple, kwargs: dict, static_argnums: tuple, static_argnames: tuple) -> tuple:
    """What a call's plan depends on: structure, shapes and dtypes, and static values."""
    if not (kwargs or static_argnums):     # the common call: positional arrays only
        leaves, treedef = jax.tree.flatten(args)
        try:
            return treedef, tuple(map(_SHAPE_DTYPE, leaves))
        except AttributeError:
            return treedef, tuple(map(_aval, leaves))
    dynamic = tuple(a for i, a in enumerate(args) if i not in static_argnums)
    static = tuple(a for i, a in enumerate(args) if i in static_argnums)
    dynamic_kwargs = {k: v for k, v in kwargs.items() if k not in static_argnames}
    static_kwargs = tuple(sorted((k, v) for k, v in kwargs.items() if k in static_argnames))
    leaves, treedef = jax.tree.flatten((dynamic, dynamic_kwargs))
    try:
        avals = tuple(map(_SHAPE_DTYPE, leaves))   # arrays: C-level
    except AttributeError:                       # Python scalars among the arguments
        avals = tuple(map(_aval, leaves))
    return treedef, avals, static, static_kwargs


def _aval(leaf: Any) -> Any:
    if hasattr(leaf, 'dtype') or isinstance(leaf, (bool, int, float, complex)):
        return jax.typeof(leaf)
    return leaf
