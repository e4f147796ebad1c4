"""SGD with torch's momentum, dampening and Nesterov; heavy-ball and Nesterov momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._hyper import LR, WEIGHT_DECAY, Hyperparameters, Param, non_negative, unit_interval
from .._optimizer import OptaxOptimizer
from ._common import static_flag, zeros_like

__all__ = ['SGD', 'Momentum', 'MomentumNesterov', 'TorchSGDState', 'scale_by_torch_sgd']

MOMENTUM = Param('momentum', 0.0, non_negative, 'The momentum factor (0: plain SGD).')


class MomentumBuffer:
    """The momentum buffer of :func:`scale_by_torch_sgd` in a stateful optimizer (SGD's, SOFO's).

    A group created with ``momentum=0`` keeps no buffer, so setting its momentum later
    is refused, unless an attached scheduler cycles the momentum (OneCycleLR,
    CyclicLR): then every group has one.
    """

    def _check_assignment(self, group: Any, name: str, value: Any) -> None:
        if name == 'momentum' and value != 0 and self._group_state(group).momentum_buffer is None:
            raise ValueError(f'param group {group.index} was created with momentum=0 and keeps no '
                             f'momentum buffer; create the group with momentum > 0 to vary it')

    def _momentum_cycled(self) -> bool:
        return self._cycled == 'momentum'

    def _init_group_state(self, group: Any, values: dict) -> Any:
        """torch's SGD state, with a momentum buffer whenever the scheduler cycles the momentum."""
        state = super()._init_group_state(group, values)
        if state is not None and state.momentum_buffer is None and self._momentum_cycled():
            state = state._replace(momentum_buffer=zeros_like(values))
        return state

    def scheduler_attached(self, scheduler, cycles=None, first=None):
        """As :meth:`OptaxOptimizer.scheduler_attached`; a cycled momentum gives every group a buffer.

        A new buffer has not been used yet (its count stays 0 while there is none), so
        its first step with momentum != 0 sets it to the gradient, as torch's does.
        """
        super().scheduler_attached(scheduler, cycles)
        if cycles == 'momentum':
            self._refresh_group_states()

    def _check_cycled(self, scheduler, group, value):
        """Every group keeps a momentum buffer while the momentum is cycled: nothing to refuse."""


class SGD(MomentumBuffer, OptaxOptimizer):
    r"""Stochastic gradient descent with torch's momentum, dampening and Nesterov.

    With ``g`` the gradient (negated if ``maximize``) plus ``weight_decay * p``::

        b_1 = g_1 ;  b_t = momentum * b_{t-1} + (1 - dampening) * g_t
        p  -= lr * (g_t + momentum * b_t  if nesterov  else  b_t)

    and ``p -= lr * g`` at a step with ``momentum == 0`` (torch.optim.SGD). A group
    created with ``momentum=0`` keeps no momentum buffer, unless an attached scheduler
    cycles the momentum (OneCycleLR, CyclicLR): then it has one, started, as torch's,
    at the first step with ``momentum != 0``.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.SGD(lr=0.1, momentum=0.9).register_trainable_weights({'w': w})
    >>> for _ in range(2):
    ...     opt.update({'w': jnp.array([1.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 0.1 - 0.19
    0.71
    """

    _elementwise = True
    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR, MOMENTUM, WEIGHT_DECAY,
        static_flag('nesterov', False, 'Use Nesterov momentum (needs momentum > 0 and dampening 0).'),
        keyword_only=[Param('dampening', 0.0, unit_interval, 'Dampening of the momentum: the gradient '
                            'enters the buffer scaled by ``1 - dampening``.')])
    slots = {'count': 'count', 'momentum_buffer': 'momentum_buffer'}

    @classmethod
    def _check(cls, hp: dict) -> None:
        if hp.get('nesterov') and (hp['momentum'] <= 0 or hp.get('dampening', 0.0) != 0):
            raise ValueError('nesterov=True needs momentum > 0 and dampening == 0, got '
                             f'momentum={hp["momentum"]!r}, dampening={hp.get("dampening", 0.0)!r}')

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_sgd(hp['momentum'], hp['dampening'], hp['nesterov'])


class Momentum(SGD):
    r"""Heavy-ball momentum: SGD with ``momentum=0.9`` by default.

    ``b_t = momentum * b_{t-1} + g_t`` and ``p -= lr * b_t`` (with ``b_0 = 0``).

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.Momentum(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([1.0])}); opt.update({'w': jnp.array([1.0])})
    >>> round(float(w.value[0]), 4)
    0.71
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(LR, MOMENTUM.but(default=0.9), WEIGHT_DECAY)
    _nesterov = False

    @classmethod
    def _check(cls, hp: dict) -> None:
        if cls._nesterov and hp['momentum'] <= 0:
            raise ValueError(f'Nesterov momentum needs momentum > 0, got {hp["momentum"]!r}')

    @classmethod
    def _algorithm(cls, hp):
        return scale_by_torch_sgd(hp['momentum'], 0.0, cls._nesterov)


class MomentumNesterov(Momentum):
    r"""Nesterov momentum: ``b_t = momentum * b_{t-1} + g_t``, ``p -= lr * (g_t + momentum * b_t)``.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> w = brainstate.ParamState(jnp.array([1.0]))
    >>> opt = stateopt.MomentumNesterov(lr=0.1).register_trainable_weights({'w': w})
    >>> opt.update({'w': jnp.array([1.0])})
    >>> round(float(w.value[0]), 4)  # 1 - 0.1 * (1 + 0.9)
    0.81
    """

    __module__ = 'stateopt'
    hyperparameters = Momentum.hyperparameters
    _nesterov = True


class TorchSGDState(NamedTuple):
    """State of :func:`scale_by_torch_sgd`: the steps that used the momentum buffer, and the buffer."""

    count: jax.Array       # 0 until the first step with momentum != 0 (torch's buffer is None until then)
    momentum_buffer: Any   # None when the group was created with momentum == 0


def scale_by_torch_sgd(
    momentum: Any = 0.0, dampening: Any = 0.0, nesterov: bool = False
) -> optax.GradientTransformation:
    """torch's SGD momentum rule as a direction.

    With ``b`` the momentum buffer and ``g`` the (decayed) gradient::

        b = g   at the first step with momentum != 0 ;  then  b = momentum * b + (1 - dampening) * g
        d = g + momentum * b   (nesterov)   or   d = b

    and ``d = g`` at a step with ``momentum == 0``, which leaves the buffer as it is, as
    torch does. A state initialised with ``momentum == 0`` keeps no buffer (the
    optimizer gives it one when a scheduler may cycle the momentum).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.sgd import scale_by_torch_sgd
    >>> tx = scale_by_torch_sgd(momentum=0.9)
    >>> g = {'w': jnp.ones(2)}
    >>> d, state = tx.update(g, tx.init(g))
    >>> d, state = tx.update(g, state)
    >>> d['w'].tolist()
    [1.899999976158142, 1.899999976158142]
    """

    def init_fn(params):
        buffer = None if momentum == 0 else zeros_like(params)
        return TorchSGDState(jnp.zeros([], jnp.int32), buffer)

    def update_fn(updates, state, params=None):
        del params
        if state.momentum_buffer is None:
            return updates, state
        first = state.count == 0
        off = momentum == 0

        def buffer_of(g, b):
            return jnp.where(off, b, jnp.where(first, g, momentum * b + (1 - dampening) * g))

        buffer = jax.tree.map(buffer_of, updates, state.momentum_buffer)
        if nesterov:
            direction = jax.tree.map(lambda g, b: g + momentum * b, updates, buffer)
        else:
            direction = jax.tree.map(lambda g, b: jnp.where(off, g, b), updates, buffer)
        count = jnp.where(off, state.count, optax.safe_increment(state.count))
        return direction, TorchSGDState(count, buffer)

    return optax.GradientTransformation(init_fn, update_fn)
