"""torch's form of every scheduler: the optimizer first, ``StepLR(optimizer, 30)``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ._protocol import _check_optimizer


def _torch_form(init: Callable) -> Callable:
    """``init``, also accepting torch's form with the optimizer first: ``StepLR(optimizer, 30)``.

    In that form the other arguments follow torch's signature, the scheduler takes each
    group's base lr from the optimizer (torch's ``initial_lr``) and attaches to it, as
    ``OptimizerClass(lr=scheduler)`` would.
    """

    @functools.wraps(init)
    def init_or_torch_form(self: Any, *args: Any, **kwargs: Any) -> None:
        if args and hasattr(args[0], 'param_groups'):
            optimizer, args = args[0], args[1:]
        elif 'optimizer' in kwargs:
            optimizer = kwargs.pop('optimizer')
        else:
            if '_base_lr_given' not in vars(self):  # the outermost constructor records it
                self._base_lr_given = bool(args) or 'base_lr' in kwargs
            init(self, *args, **kwargs)
            return
        self._base_lr_given = False
        init(self, **type(self)._torch_arguments(optimizer, args, kwargs))
        self._attach_torch_form(optimizer)

    return init_or_torch_form


class TorchForm:
    """The part of :class:`LRScheduler` that takes torch's arguments and base lrs from the optimizer."""

    @classmethod
    def _base_from_groups(cls) -> bool:
        """Whether torch's form takes ``base_lr`` from the optimizer's groups."""
        return not cls._absolute and 'base_lr' in inspect.signature(cls.__init__).parameters

    @classmethod
    def _torch_arguments(cls, optimizer: Any, args: tuple, kwargs: dict) -> dict:
        """The keyword arguments of torch's ``cls(optimizer, *args, **kwargs)``."""
        name = cls.__name__
        _check_optimizer(optimizer, f'{name}(optimizer, ...)')
        names = cls._torch_params
        if names is None:
            own = list(inspect.signature(cls.__init__).parameters.values())[1:]
            names = tuple(p.name for p in own if p.kind is p.POSITIONAL_OR_KEYWORD
                          and not (p.name == 'base_lr' and cls._base_from_groups()))
        if len(args) > len(names):
            raise TypeError(f'{name}(optimizer, ...) takes at most {len(names)} positional arguments '
                            f'after the optimizer ({", ".join(names)}), got {len(args)}')
        arguments = dict(zip(names, args))
        for key in kwargs:
            if key in arguments:
                raise TypeError(f'{name}(optimizer, ...) got multiple values for argument {key!r}')
        arguments.update(kwargs)
        last_epoch = arguments.pop('last_epoch', -1)
        if last_epoch != -1:
            raise ValueError(f'{name}(optimizer, ..., last_epoch={last_epoch!r}): in torch\'s form only '
                             f'last_epoch=-1 (a fresh start) is accepted; to resume, load the saved state '
                             f'with load_state_dict (the scheduler\'s or the optimizer\'s)')
        if cls._base_from_groups():
            if 'base_lr' in arguments:
                raise ValueError(f'{name}(optimizer, ..., base_lr=...): in torch\'s form each group\'s base '
                                 f'lr is its lr in the optimizer; drop base_lr, or write '
                                 f'{name}(base_lr=..., ...) and pass it as the optimizer\'s lr=')
            arguments['base_lr'] = optimizer.param_groups[0].initial_lr
        return arguments

    def _attach_torch_form(self, optimizer: Any) -> None:
        """Attach to ``optimizer`` after construction in torch's form."""
        self.attach_optimizer(optimizer)

    def _given_base(self) -> tuple | None:
        """The base lrs given to the constructor, or ``None`` (not given, or not used)."""
        return self._base_list if self._base_lr_given and not self._absolute else None

    def _rebase(self, lr: float) -> None:
        """Take ``lr`` as group 0's base lr (a composite's child, in torch's form)."""
        if not self._absolute:
            self._base_list = (lr,)

