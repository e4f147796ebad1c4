"""The Parameters section of every scheduler, made from its signature and one table of docs."""

from __future__ import annotations

import inspect
import textwrap

#: The docs of the parameters several schedulers share; a class's ``parameter_docs`` adds its own.
SHARED_PARAMETER_DOCS = {
    'base_lr': "Group 0's base lr. A list gives one lr per group to a scheduler used on its own; "
               "attached, each group takes its ``lr`` from ``add_param_group``.",
    'last_epoch': "Start as if stepped this many times (torch's fresh start, ``last_epoch=-1``, is 0 "
                  "here).",
    'gamma': 'The factor the lr is multiplied by at each decay.',
    'eta_min': 'The lowest lr of the cosine.',
    'total_iters': 'The steps the rule acts over; the lr stays at its end value after.',
    'lr_lambda': 'A function ``epoch -> factor`` (traceable with ``jnp``), or one per group.',
    'warmup_start_lr': 'The lr at step 0 of the warm-up.',
    'cycle_momentum': "Cycle the momentum (or Adam's beta1) opposite to the lr, when the optimizer "
                      'has one.',
    'base_momentum': 'The lowest momentum of the cycle (one value, or one per group).',
    'max_momentum': 'The highest momentum of the cycle (one value, or one per group).',
}


#: The annotations as the Parameters sections read them.
_TYPES = {
    'LRs': 'float or list of float', 'Sequence[int]': 'sequence of int',
    'Sequence[float] | None': 'sequence of float or None', 'Sequence[int] | None': 'sequence of int or None',
    'Callable | Sequence[Callable] | None': 'callable, list of callables or None',
    'Sequence[LRScheduler]': 'sequence of LRScheduler', 'Driven | None': 'OptaxOptimizer or None',
    'Callable | None': 'callable or None', 'int | None': 'int or None', 'float | None': 'float or None',
}


def _document_parameters(cls: type) -> None:
    """Insert the Parameters section, from the signature and the docs tables, before Examples."""
    doc = cls.__doc__ or ''
    if 'Parameters\n    ----------' in doc:
        return
    docs = {**SHARED_PARAMETER_DOCS, **vars(cls).get('parameter_docs', {})}
    lines = ['Parameters', '----------']
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.name not in docs:
            raise TypeError(f'{cls.__name__}: the parameter {param.name!r} has no doc; add it to '
                            f'{cls.__name__}.parameter_docs')
        kind = _TYPES.get(str(param.annotation), str(param.annotation))
        default = '' if param.default is inspect.Parameter.empty else f', default {param.default!r}'
        lines += [f'{param.name} : {kind}{default}',
                  *('    ' + line for line in textwrap.wrap(docs[param.name], 84))]
    section = textwrap.indent('\n'.join(lines), '    ').lstrip() + '\n\n    '  # placed after an indent
    at = doc.find('Examples\n    --------')
    cls.__doc__ = doc[:at] + section + doc[at:] if at >= 0 else doc.rstrip() + '\n\n    ' + section

