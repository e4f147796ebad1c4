"""Drawing a scheduler's learning rates (matplotlib, an optional dependency)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import LRScheduler
from ._common import _int

__all__ = ['plot_schedule']


def plot_schedule(scheduler: LRScheduler, steps: int, ax: Any = None) -> tuple[Any, Any]:
    """Draw every param group's learning rate over the first ``steps`` steps of ``scheduler``.

    The curves run from a fresh start (step 0), whatever the scheduler's current step,
    and leave the scheduler unchanged: one line per group (the attached optimizer's
    groups, or one per ``base_lr`` entry). A ReduceLROnPlateau, which needs metrics,
    draws as if no metric ever stopped improving.

    Parameters
    ----------
    scheduler : LRScheduler
        The schedule to draw.
    steps : int
        How many steps to draw.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.

    Returns
    -------
    (matplotlib.figure.Figure, matplotlib.axes.Axes)

    Raises
    ------
    ImportError
        Without matplotlib (install ``stateopt[plot]``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use('Agg')
    >>> import stateopt
    >>> sched = stateopt.OneCycleLR(max_lr=[0.1, 0.05], total_steps=100)
    >>> fig, ax = stateopt.plot_schedule(sched, 100)
    >>> len(ax.get_lines())
    2
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plot_schedule needs matplotlib: pip install 'stateopt[plot]' "
                          "(or pip install matplotlib)") from err
    if not isinstance(scheduler, LRScheduler):
        raise TypeError(f'plot_schedule expects a stateopt scheduler, got {type(scheduler).__name__}')
    lrs = scheduler._trajectory(_int('steps', steps, 1))
    if ax is None:
        fig, ax = plt.subplots()
    else:
        fig = ax.figure
    for group in range(lrs.shape[1]):
        ax.plot(np.arange(steps), lrs[:, group], label=f'group {group}')
    ax.set_xlabel('step')
    ax.set_ylabel('learning rate')
    ax.set_title(type(scheduler).__name__)
    if lrs.shape[1] > 1:
        ax.legend()
    return fig, ax
