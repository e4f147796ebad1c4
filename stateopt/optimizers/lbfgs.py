"""L-BFGS with optax's memory and line searches, given the loss by a closure or a function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from .._hyper import LR, Hyperparameters, Param, positive_int
from ._common import static_flag
from ._loss import EvaluatesLoss

__all__ = ['LBFGS', 'scale_by_lbfgs_search']


def _linesearch(name: str, value: Any) -> Any:
    if value is None or value in ('zoom', 'backtracking') or isinstance(value, optax.GradientTransformation):
        return value
    raise ValueError(f"{name} must be None, 'zoom', 'backtracking' or an optax line search "
                     f"(e.g. optax.scale_by_zoom_linesearch(15)), got {value!r}")


_LINESEARCHES = {
    'zoom': lambda: optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy='one'),
    'backtracking': lambda: optax.scale_by_backtracking_linesearch(20, decrease_factor=0.5),
}


class LBFGS(EvaluatesLoss):
    r"""L-BFGS (Nocedal & Wright, Alg. 7.4) with optax's memory and line searches.

    With ``s_i = p_{i+1} - p_i``, ``y_i = g_{i+1} - g_i`` over the last ``memory_size``
    steps of the param group, ``H`` the two-loop product of the inverse-Hessian
    estimate (initial scale ``s·y / y·y``, or ``min(1, 1 / ||g||)`` on the first step,
    when ``scale_init_precond``; 1 otherwise)::

        d = H g ;  p -= η * lr * d

    where ``η = 1`` without a line search; ``linesearch='zoom'`` (strong Wolfe
    conditions, ``optax.scale_by_zoom_linesearch(20)``) or ``'backtracking'`` (Armijo,
    halving ``η`` from at most 1 up to 20 times), or an optax line search transform,
    picks ``η`` along ``lr * d`` by evaluating the loss. Give it the loss with
    ``opt.update(grads, value_fn=f)`` (``f`` of the params keyed as registered; ``value=``
    the loss at the params, optional) or ``opt.step(closure=loss_fn)`` (``loss_fn()`` reads
    the States, or returns ``(grads, loss)``), eagerly or inside ``brainstate.transform.jit``.
    A new closure or ``value_fn`` object recompiles an eager step: reuse one.

    Examples
    --------
    >>> import jax.numpy as jnp, brainstate, stateopt
    >>> x = brainstate.ParamState(jnp.array([3.0, -1.0]))
    >>> loss = lambda: jnp.sum(jnp.array([1.0, 10.0]) * x.value ** 2)
    >>> opt = stateopt.LBFGS(linesearch='zoom').register_trainable_weights({'x': x})
    >>> for _ in range(8):
    ...     _ = opt.step(closure=loss)
    >>> float(loss()) < 1e-10
    True
    """

    __module__ = 'stateopt'
    hyperparameters = Hyperparameters(
        LR.but(default=1.0),
        Param('memory_size', 10, positive_int, 'How many past steps the inverse-Hessian estimate keeps.',
              type='int', dynamic=False),
        static_flag('scale_init_precond', True, 'Scale the initial inverse Hessian as the rule above says.'),
        Param('linesearch', None, _linesearch, "``None`` (``η = 1``), ``'zoom'``, ``'backtracking'`` or an "
              'optax line search transform.', type='str, optax.GradientTransformation or None',
              dynamic=False),
        maximize=False)
    _lr_in_algorithm = True
    _no_state_dtype = ('its memory holds differences of parameters and of gradients, which a narrower dtype '
                       'rounds to zero as the steps shrink; keep it in the parameters\' dtype')
    slots = {
        'count': '0.count', 'ro': '0.weights_memory', 'old_stps': '0.diff_params_memory',
        'old_dirs': '0.diff_updates_memory', 'prev_params': '0.params', 'prev_grad': '0.updates'}

    @classmethod
    def _algorithm(cls, hp):
        search = hp['linesearch']
        search = _LINESEARCHES[search]() if isinstance(search, str) else search
        return scale_by_lbfgs_search(hp['lr'], hp['memory_size'], hp['scale_init_precond'], search)

    def _needs_objective(self) -> bool:
        return any(group['linesearch'] is not None for group in self.param_groups)

    def _objective_args(self, objective, loss, extra_args):
        value = loss if loss is not None else extra_args.get('value')
        return {'value': objective({}) if value is None else value, 'value_fn': objective}

    def step(self, grads: Any = None, closure: Callable | None = None, *, value: Any = None,
             value_fn: Callable | None = None) -> Any:
        """One L-BFGS step; ``closure`` or ``value_fn`` give the line search the loss.

        Parameters
        ----------
        grads : dict, optional
            Gradients keyed as registered; computed from ``closure`` if not given.
        closure : callable, optional
            ``closure() -> loss`` or ``-> (grads, loss)``, reading the model's States.
        value : scalar, optional
            The loss at the current params (computed when not given).
        value_fn : callable, optional
            ``value_fn(params) -> loss``, params keyed as registered.

        Returns
        -------
        The closure's loss at the params before the step, or ``None``.
        """
        extra = {} if value is None else {'value': value}
        return super().step(grads, closure, value_fn=value_fn, **extra)


def scale_by_lbfgs_search(
    lr: Any, memory_size: int, scale_init_precond: bool,
    linesearch: optax.GradientTransformation | None,
) -> optax.GradientTransformationExtraArgs:
    """optax's L-BFGS direction, scaled by ``lr`` and then by the line search; the step ``p - p_new``.

    The line search gets the gradient it needs (``grad``) from the updates; the caller
    passes ``value`` (the loss at ``params``) and ``value_fn`` (the loss at any params).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from stateopt.optimizers.lbfgs import scale_by_lbfgs_search
    >>> tx = scale_by_lbfgs_search(0.5, memory_size=3, scale_init_precond=False, linesearch=None)
    >>> g = {'w': jnp.array([1.0, -1.0])}
    >>> step, _ = tx.update(g, tx.init(g), {'w': jnp.zeros(2)})
    >>> step['w'].tolist()  # no memory yet: lr * g
    [0.5, -0.5]
    """
    lbfgs = optax.lbfgs(lr, memory_size=memory_size, scale_init_precond=scale_init_precond,
                        linesearch=linesearch)

    def update_fn(updates, state, params, **extra_args):
        if linesearch is not None:
            extra_args = {**extra_args, 'grad': updates}
        step, state = lbfgs.update(updates, state, params, **extra_args)
        return jax.tree.map(jnp.negative, step), state

    def init_fn(params):
        if not jax.tree.leaves(params):  # optax's line searches cannot start on no params
            return optax.EmptyState()
        # strongly typed, as the updated state is: a weakly typed counter would recompile once
        return jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.result_type(leaf)), lbfgs.init(params))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
