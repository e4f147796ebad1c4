"""Schedule-free SGD and AdamW: no schedule, the model evaluated at an average of the iterates."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._decay import decay_mask_fn
from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, check_number, non_negative
from .._optimizer import OptaxOptimizer
from .._state import unflatten
from ._common import BETAS, EPS, copy_tree

__all__ = ['ScheduleFreeSGD', 'ScheduleFreeAdamW', 'ScheduleFreeState', 'scale_by_schedule_free',
           'schedule_free_eval_params']

WEIGHT_LR_POWER = Param('weight_lr_power', 2.0, non_negative, 'The power of the largest lr so far that '
                        'weighs each iterate in the average ``x``.')


def _unit_open_low(name: str, value: Any) -> float:
    """A real number in ``(0, 1]``."""
    return check_number(name, value, low=0.0, low_open=True, high=1.0)


class _ScheduleFree(OptaxOptimizer):
    """Schedule-free optimizers: the params are ``y``, the point to evaluate at is ``x``."""

    _elementwise = True
    _lr_in_algorithm = True
    slots = {'count': 'count', 'z': 'z', 'weight_sum': 'weight_sum', 'max_lr': 'max_lr'}
    _no_state_dtype = ('its state holds the iterate z, which a narrower dtype would round as it would the '
                       'parameters; train in low precision with master_dtype instead')
    never_negative = ('weight_sum', 'max_lr')

    @classmethod
    def _b1(cls, hp: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def _eval_values(self) -> list:
        """The evaluation point ``x`` of every registered State, in registration order."""
        values = dict(zip(self._registry.names, [state.value for state in self._registry.states]))
        for group, state in zip(self.param_groups, self.opt_state.value):
            values.update(schedule_free_eval_params(state, {name: values[name] for name in group.names},
                                                    self._b1(group)))
        return list(values.values())

    def eval_params(self) -> dict:
        """The evaluation point ``x`` of every registered State, keyed as registered."""
        return unflatten(self._registry.paths, self._eval_values())

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Give the States the evaluation point ``x`` inside the block, and ``y`` back after it.

        Works eagerly and inside ``brainstate.transform.jit``; do not step inside the block.
        """
        states = self._registry.states
        saved = [state.value for state in states]
        for state, value in zip(states, self._eval_values()):
            state.value = value
        try:
            yield
        finally:
            for state, value in zip(states, saved):
                state.value = value


class ScheduleFreeSGD(_ScheduleFree):
    r"""Schedule-free SGD (Defazio et al., 2024): no schedule, evaluate at the average ``x``.

    The params are ``y``; with ``g`` the gradient at ``y`` plus ``weight_decay * y``::

        z ← z - lr * g ;  c = w_t / Σ_{i<=t} w_i,  w_t = max_{i<=t} lr_i ** weight_lr_power
        x ← (1 - c) x + c z ;  y = (1 - momentum) z + momentum x

    Evaluate the model at ``x``: ``with opt.evaluation(): ...`` gives the States ``x``
    for the block (and ``y`` back after it); ``opt.eval_params()`` returns ``x``. Warm-up
    comes from a scheduler on ``lr``, which the weights ``w_t`` follow.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.ScheduleFreeSGD(lr=0.5).register_trainable_weights({'w': w})
    >>> for _ in range(2):
    ...     opt.update({'w': jnp.array([1.0])})
    >>> with opt.evaluation():   # x = z averaged with weights 1/1, 1/2: (0.5 + 0) / 2
    ...     print(round(float(w.value[0]), 4))
    0.25
    >>> round(float(w.value[0]), 4)  # y = 0.1 z + 0.9 x, with z = 0
    0.225
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=1.0),
        Param('momentum', 0.9, _unit_open_low, 'The weight of the average ``x`` in ``y``.'),
        WEIGHT_DECAY, WEIGHT_LR_POWER)

    @classmethod
    def _b1(cls, hp):
        return hp['momentum']

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_schedule_free(optax.identity(), hp['lr'], hp['momentum'], hp['weight_lr_power'])


class ScheduleFreeAdamW(_ScheduleFree):
    r"""Schedule-free AdamW (Defazio et al., 2024; ``optax.contrib.schedule_free_adamw``).

    As :class:`ScheduleFreeSGD` with ``b1 = betas[0]`` in place of ``momentum``, and the
    base step taken with Adam's second moment (no first moment) and decay at ``y``::

        v = b2 v + (1 - b2) g² ;  z ← z - lr * (g / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * y)

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.ScheduleFreeAdamW(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([5.0])})
    >>> round(float(w.value[0]), 4), {k: round(float(v[0]), 4) for k, v in opt.eval_params().items()}
    (0.9, {'w': 0.9})
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=0.0025),
        BETAS.but(doc='``(b1, b2)``: the weight of the average ``x`` in ``y`` (``> 0``), and the decay '
                      'of the running average of ``g²``.'),
        EPS, WEIGHT_DECAY, WEIGHT_LR_POWER)
    _decay = None
    _masks_own_decay = True
    slots = {**_ScheduleFree.slots, 'base_count': 'base_state.0.count', 'exp_avg_sq': 'base_state.0.nu'}
    never_negative = (*_ScheduleFree.never_negative, 'exp_avg_sq')

    @classmethod
    def _check(cls, hp: dict) -> None:
        if hp['betas'][0] == 0:
            raise ValueError('betas[0] must be > 0 for schedule-free averaging, got 0')

    @classmethod
    def _b1(cls, hp):
        return hp['betas'][0]

    @classmethod
    def _algorithm(cls, hp):
        _, beta2 = hp['betas']
        base = optax.chain(
            optax.scale_by_rms(decay=beta2, eps=hp['eps'], eps_in_sqrt=False, bias_correction=True),
            optax.add_decayed_weights(hp['weight_decay'], mask=decay_mask_fn(hp.get('weight_decay_mask'))))
        return scale_by_schedule_free(base, hp['lr'], hp['betas'][0], hp['weight_lr_power'])


class ScheduleFreeState(NamedTuple):
    """State of :func:`scale_by_schedule_free`."""

    count: jax.Array
    weight_sum: jax.Array  # sum of the averaging weights so far
    max_lr: jax.Array      # the largest learning rate seen
    z: Any                 # the base iterate
    base_state: Any


def scale_by_schedule_free(
    base: optax.GradientTransformation, lr: Any, b1: Any, weight_lr_power: Any
) -> optax.GradientTransformationExtraArgs:
    """Schedule-free averaging around the direction ``base``, returning ``y - y_new``.

    The params are ``y``, where gradients are taken; ``z`` is the base iterate and ``x``
    the average, at which to evaluate (:func:`schedule_free_eval_params`)::

        z ← z - lr * base(g(y)) ;  c = w_t / Σ_{i<=t} w_i with w_t = max_{i<=t} lr_i ** weight_lr_power
        x ← (1 - c) x + c z     ;  y = (1 - b1) z + b1 x

    ``y`` moves by ``(1 - b1 + b1 c) Δz - c (y - z)``, so a step with nothing to do (a
    vanishing ``lr``) leaves it bit-identical.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> from stateopt.optimizers.schedule_free import scale_by_schedule_free
    >>> tx = scale_by_schedule_free(optax.identity(), lr=0.5, b1=0.9, weight_lr_power=2.0)
    >>> p = {'w': jnp.array([1.0])}
    >>> step, state = tx.update({'w': jnp.array([1.0])}, tx.init(p), p)
    >>> [round(float(v), 6) for v in (state.z['w'][0], p['w'][0] - step['w'][0])]  # z; y = z = x
    [0.5, 0.5]
    """
    base = optax.with_extra_args_support(base)

    def init_fn(params):
        dtype = jnp.result_type(*jax.tree.leaves(params)) if jax.tree.leaves(params) else jnp.float32
        zero = jnp.zeros([], dtype)
        return ScheduleFreeState(jnp.zeros([], jnp.int32), zero, zero, copy_tree(params), base.init(params))

    def update_fn(updates, state, params, **extra_args):
        direction, base_state = base.update(updates, state.base_state, params, **extra_args)
        max_lr = jnp.maximum(state.max_lr, lr).astype(state.max_lr.dtype)
        weight = max_lr ** weight_lr_power
        weight_sum = state.weight_sum + weight
        c = jnp.where(weight_sum > 0, weight / jnp.where(weight_sum > 0, weight_sum, 1), 0)

        new_z = jax.tree.map(lambda z, d: z - lr * d, state.z, direction)

        def moved(y, z, z_next):  # y - y_new, exactly 0 when z and y have not moved
            return (1 - b1 + b1 * c) * (z - z_next) + c * (y - z)

        step = jax.tree.map(moved, params, state.z, new_z)
        count = optax.safe_increment(state.count)
        return step, ScheduleFreeState(count, weight_sum, max_lr, new_z, base_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def schedule_free_eval_params(state: ScheduleFreeState, params: Any, b1: Any) -> Any:
    """The averaged point ``x = z + (y - z) / b1`` of :func:`scale_by_schedule_free`."""
    return jax.tree.map(lambda y, z: (z + (y - z) / b1).astype(y.dtype), params, state.z)
