"""Writes the optimizer catalogue table from the optimizer classes when the docs are built.

Each row shows a class, its constructor's parameters and defaults, the rule its docstring
states, and where that rule comes from, so the table cannot drift from the code.
"""

from __future__ import annotations

import inspect
import os

import stateopt


def _source(cls: type, rule: str) -> str:
    if 'torch' in rule:
        return 'torch (checked against torch 2.13 trajectories)'
    if cls is stateopt.Momentum or cls is stateopt.MomentumNesterov:
        return 'torch (SGD with momentum)'
    if 'optax' in rule:
        return 'paper, via optax'
    return 'paper'


def _parameters(cls: type) -> str:
    shown = []
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == 'self':
            continue
        default = parameter.default
        shown.append(name if default is inspect.Parameter.empty else f'{name}={default!r}')
    return ', '.join(shown)


def generate(app) -> None:
    out = os.path.join(app.srcdir, '_generated')
    os.makedirs(out, exist_ok=True)
    lines = ['| optimizer | parameters | rule | source |', '| --- | --- | --- | --- |']
    seen = set()
    for name in stateopt.OPTIMIZERS:
        cls = getattr(stateopt, name)
        if cls in seen:          # NAdam is Nadam
            continue
        seen.add(cls)
        rule = (inspect.getdoc(cls) or '').splitlines()[0].replace('|', '\\|')
        link = f'{{class}}`~stateopt.{name}`'
        lines.append(f'| {link} | `{_parameters(cls)}` | {rule} | {_source(cls, rule)} |')
    with open(os.path.join(out, 'catalogue_table.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def setup(app):
    app.connect('builder-inited', generate)
    return {'parallel_read_safe': True, 'version': '1'}
