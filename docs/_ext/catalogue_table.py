"""Writes the optimizer catalogue table from the optimizer classes when the docs are built.

Each row shows a class, the rule its docstring states and where that rule comes from, and the
hyper-parameters it adds to the shared ones, so the table cannot drift from the code. The full
signature, with defaults, is on each class's page; the table leaves it out to fit the page.
"""

from __future__ import annotations

import inspect
import os

import stateopt

#: The options of the chain every optimizer runs; a row lists the parameters beyond these.
SHARED = ('lr', 'weight_decay', 'weight_decay_mask', 'grad_clip_norm', 'grad_clip_value', 'maximize',
          'gradient_accumulation_steps', 'accumulation_dtype', 'skip_nonfinite', 'master_dtype',
          'state_dtype', 'state_sharding')


def _source(cls: type, rule: str) -> str:
    if 'torch' in rule:
        return "torch's rule, checked against torch 2.13"
    if cls is stateopt.Momentum or cls is stateopt.MomentumNesterov:
        return "torch's SGD with momentum"
    if 'optax' in rule:
        return 'the paper, via optax'
    return 'the paper'


def _parameters(cls: type) -> list[str]:
    return [name for name in inspect.signature(cls.__init__).parameters if name != 'self']


def _classes() -> list[tuple[str, type]]:
    """(name, class) of every optimizer, each class once (NAdam is Nadam)."""
    seen, classes = set(), []
    for name in stateopt.OPTIMIZERS:
        cls = getattr(stateopt, name)
        if cls not in seen:
            seen.add(cls)
            classes.append((name, cls))
    return classes


def _shared_note(classes: list[tuple[str, type]]) -> str:
    """Which optimizers take which shared option, read from the signatures."""
    everywhere, exceptions = [], []
    for option in SHARED:
        without = [name for name, cls in classes if option not in _parameters(cls)]
        if not without:
            everywhere.append(f'`{option}`')
        else:
            exceptions.append(f'`{option}` (all but {", ".join(without)})')
    return (f'Every optimizer takes {", ".join(everywhere[:-1])} and {everywhere[-1]}, and '
            f'{", ".join(exceptions)}; the last column lists the hyper-parameters each adds to these. '
            "A class's page shows its full signature with the defaults.")


def packable_note(classes: list[tuple[str, type]]) -> str:
    """Which optimizers run on a packed buffer: those whose rule is element-wise (``_elementwise``)."""
    names = [name for name, cls in classes if cls._elementwise]
    return (f'The {len(names)} whose rule is element-wise also run on the buffers of a '
            f'[`stateopt.PackedParams`](/packed.md): {", ".join(names)}. The others keep a norm, a '
            f'factored moment or curvature per array, and refuse a packed buffer.')


def generate(app) -> None:
    out = os.path.join(app.srcdir, '_generated')
    os.makedirs(out, exist_ok=True)
    classes = _classes()
    lines = [_shared_note(classes), '', packable_note(classes), '',
             '| optimizer | rule | its own hyper-parameters |', '| --- | --- | --- |']
    for name, cls in classes:
        rule = (inspect.getdoc(cls) or '').splitlines()[0].replace('|', '\\|')
        own = ', '.join(f'`{parameter}`' for parameter in _parameters(cls) if parameter not in SHARED)
        lines.append(f'| {{class}}`~stateopt.{name}` | {rule} *({_source(cls, rule)})* | {own} |')
    with open(os.path.join(out, 'catalogue_table.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def setup(app):
    app.connect('builder-inited', generate)
    return {'parallel_read_safe': True, 'version': '1'}
