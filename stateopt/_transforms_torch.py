"""torch's adaptive update rules as update directions, where optax lacks them or differs.

Each is an ``optax.GradientTransformation`` whose ``update`` returns the direction ``d``
of the shared chain's ``param - lr * d`` (see :mod:`stateopt._chain`), except
:func:`scale_by_torch_rprop` and :func:`scale_by_torch_adafactor`: their direction is
the whole step, learning rate included. Hyper-parameters may be traced scalars; choices
that change the state's structure are taken in ``init``, from the values the param group
was created with, and read back from the state in ``update``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .optimizers._common import one_minus_power
from .optimizers._common import zeros_like as _zeros_like

__all__ = [
    'TorchAdagradState', 'scale_by_torch_adagrad',
    'TorchAdadeltaState', 'scale_by_torch_adadelta',
    'TorchRMSpropState', 'scale_by_torch_rmsprop',
    'TorchAdamaxState', 'scale_by_torch_adamax',
    'TorchNAdamState', 'scale_by_torch_nadam',
    'TorchRAdamState', 'scale_by_torch_radam', 'radam_sma_length',
    'TorchRpropState', 'scale_by_torch_rprop',
    'FactoredVariance', 'TorchAdafactorState', 'scale_by_torch_adafactor',
]


def _f32(value: Any) -> jax.Array:
    return jnp.asarray(value, jnp.float32)


def _lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """``start + weight * (end - start)`` (torch's ``lerp``)."""
    return start + weight * (end - start)


def _rms(x: jax.Array) -> jax.Array:
    """Root mean square of all elements of ``x``."""
    return jnp.sqrt(jnp.mean(jnp.square(x)))


def _map_unzip(function: Any, outputs: int, tree: Any, *rest: Any) -> tuple:
    """``jax.tree.map`` of a ``function`` returning ``outputs`` values: that many trees.

    ``rest`` may hold subtrees (a NamedTuple, say) where ``tree`` has leaves.
    """
    treedef = jax.tree.structure(tree)
    leaves = [treedef.flatten_up_to(t) for t in (tree, *rest)]
    results = [function(*args) for args in zip(*leaves)]
    return tuple(treedef.unflatten([result[i] for result in results]) for i in range(outputs))


class TorchAdagradState(NamedTuple):
    """State of :func:`scale_by_torch_adagrad`."""

    count: jax.Array
    sum: Any


def scale_by_torch_adagrad(
    lr_decay: Any = 0.0, initial_accumulator_value: float = 0.0, eps: Any = 1e-10
) -> optax.GradientTransformation:
    """torch's Adagrad rule (eps outside the square root) as a direction::

        s_0 = initial_accumulator_value ;  s_t = s_{t-1} + g_t^2
        d_t = g_t / (sqrt(s_t) + eps) / (1 + (t - 1) * lr_decay)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_torch import scale_by_torch_adagrad
    >>> tx = scale_by_torch_adagrad()
    >>> g = {'w': jnp.array([3.0, -0.5])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> [round(x, 6) for x in d['w'].tolist()]
    [1.0, -1.0]
    """

    def init_fn(params):
        accumulator = jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params)
        return TorchAdagradState(jnp.zeros([], jnp.int32), accumulator)

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        decay = 1 + state.count.astype(jnp.float32) * lr_decay
        accumulator = jax.tree.map(lambda s, g: s + g * g, state.sum, updates)
        direction = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps) / decay, updates, accumulator)
        return direction, TorchAdagradState(count, accumulator)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchAdadeltaState(NamedTuple):
    """State of :func:`scale_by_torch_adadelta`."""

    square_avg: Any
    acc_delta: Any


def scale_by_torch_adadelta(rho: Any = 0.9, eps: Any = 1e-6) -> optax.GradientTransformation:
    """torch's Adadelta rule as a direction::

        v_t = rho v_{t-1} + (1 - rho) g_t^2
        d_t = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g_t
        u_t = rho u_{t-1} + (1 - rho) d_t^2

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_torch import scale_by_torch_adadelta
    >>> tx = scale_by_torch_adadelta(rho=0.0, eps=1.0)
    >>> g = {'w': jnp.array([0.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> d['w'].tolist()
    [0.0]
    """

    def init_fn(params):
        return TorchAdadeltaState(_zeros_like(params), _zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        square_avg = jax.tree.map(lambda v, g: v * rho + (1 - rho) * g * g, state.square_avg, updates)
        direction = jax.tree.map(lambda g, v, u: jnp.sqrt(u + eps) / jnp.sqrt(v + eps) * g,
                                 updates, square_avg, state.acc_delta)
        acc_delta = jax.tree.map(lambda u, d: u * rho + (1 - rho) * d * d, state.acc_delta, direction)
        return direction, TorchAdadeltaState(square_avg, acc_delta)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchRMSpropState(NamedTuple):
    """State of :func:`scale_by_torch_rmsprop`."""

    square_avg: Any
    grad_avg: Any          # None unless centered
    momentum_buffer: Any   # None when the group was created with momentum == 0


def scale_by_torch_rmsprop(
    alpha: Any = 0.99, eps: Any = 1e-8, momentum: Any = 0.0, centered: bool = False
) -> optax.GradientTransformation:
    """torch's RMSprop rule (eps outside the square root) as a direction::

        v_t = alpha v_{t-1} + (1 - alpha) g_t^2
        a_t = alpha a_{t-1} + (1 - alpha) g_t  and  v'_t = v_t - a_t^2   if centered,  else v'_t = v_t
        q_t = g_t / (sqrt(v'_t) + eps)
        b_t = momentum b_{t-1} + q_t ;  d_t = b_t   (d_t = q_t when momentum == 0)

    A group created with ``momentum == 0`` keeps no buffer; setting the momentum of a
    buffered group to 0 later gives ``d = q`` and leaves the buffer as it is, as torch
    does. ``v'`` is floored at 0 against rounding.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_torch import scale_by_torch_rmsprop
    >>> tx = scale_by_torch_rmsprop(alpha=0.75)
    >>> g = {'w': jnp.array([2.0])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> round(d['w'].tolist()[0], 6)  # 2 / sqrt(0.25 * 4)
    2.0
    """

    def init_fn(params):
        return TorchRMSpropState(
            _zeros_like(params),
            _zeros_like(params) if centered else None,
            None if momentum == 0 else _zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        square_avg = jax.tree.map(lambda v, g: v * alpha + (1 - alpha) * g * g, state.square_avg, updates)
        if state.grad_avg is None:
            grad_avg = None
            denom = jax.tree.map(lambda v: jnp.sqrt(v) + eps, square_avg)
        else:
            grad_avg = jax.tree.map(lambda a, g: _lerp(a, g, 1 - alpha), state.grad_avg, updates)
            denom = jax.tree.map(lambda v, a: jnp.sqrt(jnp.maximum(v - a * a, 0)) + eps,
                                 square_avg, grad_avg)
        scaled = jax.tree.map(jnp.divide, updates, denom)
        if state.momentum_buffer is None:
            return scaled, TorchRMSpropState(square_avg, grad_avg, None)
        off = momentum == 0
        buffer = jax.tree.map(lambda b, q: jnp.where(off, b, momentum * b + q), state.momentum_buffer, scaled)
        direction = jax.tree.map(lambda b, q: jnp.where(off, q, b), buffer, scaled)
        return direction, TorchRMSpropState(square_avg, grad_avg, buffer)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchAdamaxState(NamedTuple):
    """State of :func:`scale_by_torch_adamax`."""

    count: jax.Array
    exp_avg: Any
    exp_inf: Any


def scale_by_torch_adamax(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8) -> optax.GradientTransformation:
    """torch's Adamax rule (eps added to ``|g|`` inside the maximum) as a direction::

        m_t = b1 m_{t-1} + (1 - b1) g_t ;  u_t = max(b2 u_{t-1}, |g_t| + eps)
        d_t = m_t / ((1 - b1^t) u_t)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_torch import scale_by_torch_adamax
    >>> tx = scale_by_torch_adamax()
    >>> g = {'w': jnp.array([4.0, -0.25])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> [round(x, 5) for x in d['w'].tolist()]
    [1.0, -1.0]
    """

    def init_fn(params):
        return TorchAdamaxState(jnp.zeros([], jnp.int32), _zeros_like(params), _zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        exp_avg = jax.tree.map(lambda m, g: _lerp(m, g, 1 - b1), state.exp_avg, updates)
        exp_inf = jax.tree.map(lambda u, g: jnp.maximum(u * b2, jnp.abs(g) + eps), state.exp_inf, updates)
        bias1 = one_minus_power(b1, count.astype(jnp.float32))
        direction = jax.tree.map(lambda m, u: m / u / bias1, exp_avg, exp_inf)
        return direction, TorchAdamaxState(count, exp_avg, exp_inf)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchNAdamState(NamedTuple):
    """State of :func:`scale_by_torch_nadam`: ``mu_product`` is ``prod_{i<=t} mu_i``."""

    count: jax.Array
    mu_product: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def scale_by_torch_nadam(
    b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, momentum_decay: Any = 4e-3
) -> optax.GradientTransformation:
    """torch's NAdam rule, with its momentum schedule ``mu_t``, as a direction::

        mu_t = b1 (1 - 0.96^(t * momentum_decay) / 2) ;  P_t = mu_1 ... mu_t
        m_t = b1 m_{t-1} + (1 - b1) g_t ;  v_t = b2 v_{t-1} + (1 - b2) g_t^2
        D_t = sqrt(v_t / (1 - b2^t)) + eps
        d_t = (1 - mu_t) / (1 - P_t) * g_t / D_t + mu_{t+1} / (1 - P_t mu_{t+1}) * m_t / D_t

    ``P_t`` is kept in the state, so a changed ``b1`` or ``momentum_decay`` enters the
    product from the next step on, as in torch.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_torch import scale_by_torch_nadam
    >>> tx = scale_by_torch_nadam(momentum_decay=0.0)
    >>> g = {'w': jnp.array([1.0])}
    >>> d, state = tx.update(g, tx.init(g))
    >>> round(float(state.mu_product), 6)  # b1 / 2
    0.45
    """

    def init_fn(params):
        return TorchNAdamState(jnp.zeros([], jnp.int32), jnp.ones([], jnp.float32),
                               _zeros_like(params), _zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        beta1, beta2 = _f32(b1), _f32(b2)
        count = optax.safe_increment(state.count)
        step = count.astype(jnp.float32)
        log_decay = jnp.log(_f32(0.96)) * momentum_decay
        mu = beta1 * (1 - 0.5 * jnp.exp(step * log_decay))
        mu_next = beta1 * (1 - 0.5 * jnp.exp((step + 1) * log_decay))
        mu_product = state.mu_product * mu
        exp_avg = jax.tree.map(lambda m, g: _lerp(m, g, 1 - beta1), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: v * beta2 + (1 - beta2) * g * g, state.exp_avg_sq, updates)
        bias2 = one_minus_power(beta2, step)
        grad_weight = (1 - mu) / (1 - mu_product)
        momentum_weight = mu_next / (1 - mu_product * mu_next)

        def direction_of(g, m, v):
            denom = jnp.sqrt(v / bias2) + eps
            return grad_weight * g / denom + momentum_weight * m / denom

        direction = jax.tree.map(direction_of, updates, exp_avg, exp_avg_sq)
        return direction, TorchNAdamState(count, mu_product, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchRAdamState(NamedTuple):
    """State of :func:`scale_by_torch_radam`."""

    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def _half_coth_excess(a: jax.Array) -> jax.Array:
    """``coth(a / 2) / 2 - 1 / a`` for ``a > 0``, accurate in float32 (a series below 2)."""
    small = jnp.minimum(a, 2.0)
    square = small * small
    series = small * (1 / 12 + square * (-1 / 720 + square * (1 / 30240 + square * (
        -1 / 1209600 + square / 47900160))))
    large = jnp.maximum(a, 2.0)
    direct = 0.5 + 1 / jnp.expm1(large) - 1 / large
    return jnp.where(a < 2.0, series, direct)


def radam_sma_length(beta2: Any, step: Any) -> jax.Array:
    """RAdam's ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``, accurate in float32.

    With ``u = -log(b2)`` and ``K(a) = coth(a / 2) / 2 - 1 / a`` (a series for small
    ``a``), ``rho_t = t (1 - 2 K(t u)) + 2 K(u)``, where ``t (1 - 2 K(t u)) = 2 / u - 2 t /
    expm1(t u)`` serves for large ``t u``. The direct form subtracts two numbers near
    ``2 / (1 - b2)`` and loses about four digits of ``rho_t`` at ``b2 = 0.999`` in float32.

    Examples
    --------
    >>> from stateopt._transforms_torch import radam_sma_length
    >>> round(float(radam_sma_length(0.999, 6.0)), 4)  # 1999 - 12 * 0.999**6 / (1 - 0.999**6)
    5.9942
    """
    beta2 = _f32(beta2)
    step = _f32(step)
    u = -jnp.log1p(-(1 - beta2))
    scaled = step * u
    head = jnp.where(scaled < 2.0, step * (1 - 2 * _half_coth_excess(scaled)),
                     2 / u - 2 * step / jnp.expm1(jnp.maximum(scaled, 2.0)))
    return head + 2 * _half_coth_excess(u)


def scale_by_torch_radam(b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8) -> optax.GradientTransformation:
    """torch's RAdam rule (rectified from ``rho_t > 5``) as a direction::

        m_t = b1 m_{t-1} + (1 - b1) g_t ;  v_t = b2 v_{t-1} + (1 - b2) g_t^2 ;  m^_t = m_t / (1 - b1^t)
        rho_inf = 2 / (1 - b2) - 1 ;  rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        d_t = m^_t r_t sqrt(1 - b2^t) / (sqrt(v_t) + eps)   if rho_t > 5,   else  d_t = m^_t

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_torch import scale_by_torch_radam
    >>> tx = scale_by_torch_radam()
    >>> g = {'w': jnp.array([0.5])}
    >>> d, _ = tx.update(g, tx.init(g))
    >>> round(d['w'].tolist()[0], 6)  # the first steps are momentum SGD
    0.5
    """

    def init_fn(params):
        return TorchRAdamState(jnp.zeros([], jnp.int32), _zeros_like(params), _zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        beta1, beta2 = _f32(b1), _f32(b2)
        count = optax.safe_increment(state.count)
        step = count.astype(jnp.float32)
        exp_avg = jax.tree.map(lambda m, g: _lerp(m, g, 1 - beta1), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: v * beta2 + (1 - beta2) * g * g, state.exp_avg_sq, updates)
        bias1 = one_minus_power(beta1, step)
        bias2 = one_minus_power(beta2, step)
        rho_inf = 2 / (1 - beta2) - 1
        rho = radam_sma_length(beta2, step)
        rectified = rho > 5
        ratio = (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
        rectification = jnp.sqrt(jnp.where(rectified, ratio, 1.0))

        def direction_of(m, v):
            corrected = m / bias1
            adaptive = jnp.sqrt(bias2) / (jnp.sqrt(v) + eps)
            return jnp.where(rectified, corrected * adaptive * rectification, corrected)

        direction = jax.tree.map(direction_of, exp_avg, exp_avg_sq)
        return direction, TorchRAdamState(count, exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


class TorchRpropState(NamedTuple):
    """State of :func:`scale_by_torch_rprop`: the last gradient and the step sizes in units of lr."""

    prev_grad: Any
    step_factor: Any


def scale_by_torch_rprop(
    lr: Any, etas: Any = (0.5, 1.2), step_sizes: Any = (1e-6, 50.0)
) -> optax.GradientTransformation:
    """torch's Rprop rule, learning rate included, with the step sizes kept in units of lr.

    With ``lr_t`` this step's learning rate, ``s`` the step factors (``s_0 = 1``) and
    ``g_prev`` the last gradient kept (``0`` at first)::

        eta = etaplus if g_t g_prev > 0,  etaminus if g_t g_prev < 0,  else 1
        step_t = clip(lr_t s_{t-1} eta, step_size_min, step_size_max) ;  s_t = step_t / lr_t
        g_t = 0 where g_t g_prev < 0 ;  d_t = step_t sign(g_t) ;  g_prev = g_t

    With a constant lr, ``step_t`` is torch's step size (which starts at lr); a new lr
    rescales the step sizes by ``lr_t / lr_{t-1}``. A step with ``lr_t == 0`` changes
    nothing.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_torch import scale_by_torch_rprop
    >>> tx = scale_by_torch_rprop(lr=0.1)
    >>> g = {'w': jnp.array([3.0, -0.5])}
    >>> d, state = tx.update(g, tx.init(g))
    >>> d, state = tx.update(g, state)
    >>> [round(x, 6) for x in d['w'].tolist()]  # 0.1 * 1.2, twice the same sign
    [0.12, -0.12]
    """
    etaminus, etaplus = etas
    step_min, step_max = step_sizes

    def init_fn(params):
        return TorchRpropState(_zeros_like(params), jax.tree.map(jnp.ones_like, params))

    def update_fn(updates, state, params=None):
        del params
        rate = _f32(lr)
        moving = rate > 0

        def step_of(g, prev, factor):
            agreement = g * prev
            eta = jnp.where(agreement > 0, etaplus, jnp.where(agreement < 0, etaminus, 1.0))
            step = jnp.clip(rate * factor * eta, step_min, step_max).astype(g.dtype)
            g = jnp.where(agreement < 0, jnp.zeros_like(g), g)
            direction = jnp.where(moving, step * jnp.sign(g), jnp.zeros_like(g))
            new_factor = jnp.where(moving, step / jnp.where(moving, rate, 1.0), factor)
            return direction, jnp.where(moving, g, prev), new_factor

        direction, prev_grad, step_factor = _map_unzip(step_of, 3, updates, state.prev_grad,
                                                       state.step_factor)
        return direction, TorchRpropState(prev_grad, step_factor)

    return optax.GradientTransformation(init_fn, update_fn)


class FactoredVariance(NamedTuple):
    """Adafactor's second moment of a matrix kept as row and column means (last two axes)."""

    row: jax.Array
    col: jax.Array


class TorchAdafactorState(NamedTuple):
    """State of :func:`scale_by_torch_adafactor`."""

    count: jax.Array
    variance: Any  # per parameter array: FactoredVariance, or the full second moment
    exp_avg: Any   # None unless the group was created with a beta1


def scale_by_torch_adafactor(
    lr: Any,
    decay_rate: Any = 0.8,
    eps: Any = (1e-30, 1e-3),
    clip_threshold: Any = 1.0,
    beta1: Any = None,
    factored: bool = True,
) -> optax.GradientTransformation:
    """torch's Adafactor rule, step size included, with an optional first moment.

    With ``t`` the step, ``(eps1, eps2) = eps`` and ``d = clip_threshold``, per array ``p``::

        c_t = t^(-decay_rate) ;  rho_t = min(lr, 1 / sqrt(t)) ;  a_t = max(eps2, RMS(p)) rho_t
        R_t = R + c_t (mean_cols(g^2) - R) ;  C_t = C + c_t (mean_rows(g^2) - C)
        V_t = R_t C_t / max(mean(R_t), eps1)            (factored: ndim >= 2 and factored)
        V_t = V + c_t (g^2 - V)                         (otherwise)
        U_t = g / max(sqrt(V_t), eps1) ;  step_t = a_t U_t / max(1, RMS(U_t) / d)
        m_t = beta1 m_{t-1} + (1 - beta1) step_t ;  direction = m_t  (step_t without beta1)

    Matrices are factored over their last two axes. The first moment follows the
    Adafactor paper and optax (torch has none); ``factored`` and whether there is a
    first moment are fixed by ``init``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt._transforms_torch import scale_by_torch_adafactor
    >>> tx = scale_by_torch_adafactor(lr=0.01)
    >>> p = {'w': jnp.full((2, 2), 2.0)}
    >>> d, _ = tx.update({'w': jnp.ones((2, 2))}, tx.init(p), p)
    >>> d['w'].tolist()  # RMS(p) * min(lr, 1) * sign(g)
    [[0.019999999552965164, 0.019999999552965164], [0.019999999552965164, 0.019999999552965164]]
    """
    eps1, eps2 = eps

    def init_fn(params):
        def variance_of(p):
            if factored and jnp.ndim(p) >= 2:
                shape = jnp.shape(p)
                return FactoredVariance(jnp.zeros(shape[:-1] + (1,), jnp.result_type(p)),
                                        jnp.zeros(shape[:-2] + (1,) + shape[-1:], jnp.result_type(p)))
            return jnp.zeros_like(p)

        exp_avg = None if beta1 is None else _zeros_like(params)
        return TorchAdafactorState(jnp.zeros([], jnp.int32), jax.tree.map(variance_of, params), exp_avg)

    def update_fn(updates, state, params):
        count = optax.safe_increment(state.count)
        step_number = count.astype(jnp.float32)
        complement = jnp.exp(-_f32(decay_rate) * jnp.log(step_number))
        relative_step = jnp.minimum(_f32(lr), jax.lax.rsqrt(step_number))

        def step_of(g, p, variance):
            scale = jnp.maximum(eps2, _rms(p)) * relative_step
            square = g * g
            if isinstance(variance, FactoredVariance):
                row = _lerp(variance.row, jnp.mean(square, axis=-1, keepdims=True), complement)
                col = _lerp(variance.col, jnp.mean(square, axis=-2, keepdims=True), complement)
                estimate = row * col / jnp.maximum(jnp.mean(row, axis=-2, keepdims=True), eps1)
                variance = FactoredVariance(row, col)
            else:
                variance = estimate = _lerp(variance, square, complement)
            scaled = g / jnp.maximum(jnp.sqrt(estimate), eps1)
            clipped = scaled / jnp.maximum(1.0, _rms(scaled) / clip_threshold)
            return scale * clipped, variance

        steps, variance = _map_unzip(step_of, 2, updates, params, state.variance)
        if state.exp_avg is None:
            return steps, TorchAdafactorState(count, variance, None)
        exp_avg = jax.tree.map(lambda m, s: beta1 * m + (1 - beta1) * s, state.exp_avg, steps)
        return exp_avg, TorchAdafactorState(count, variance, exp_avg)

    return optax.GradientTransformation(init_fn, update_fn)
