"""Renders the committed benchmark results (benchmarks/results/adamw.json) as the performance table."""

from __future__ import annotations

import json
import os

RESULTS = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'results', 'adamw.json')


def generate(app) -> None:
    with open(RESULTS) as f:
        data = json.load(f)
    machine = data['machine']
    lines = [f'Measured on {machine["description"]} ({machine["date"]}), with '
             f'`python benchmarks/bench_optimizers.py {" ".join(data["argv"])}`.'.replace('`  ', '`'), '']
    sets = list(data['results'])
    lines.append('Median ms per AdamW step, and in brackets the ratio to raw optax under `jax.jit` with '
                 'donated buffers (update runners) or to the same whole train step in raw `jax.jit` + optax '
                 '(train-step runners, with or without donation as the runner):')
    lines.append('')
    lines.append('| runner | ' + ' | '.join(sets) + ' |')
    lines.append('| --- |' + ' --- |' * len(sets))
    runners = list(data['results'][sets[0]]['median_ms'])
    for runner in runners:
        cells = []
        for name in sets:
            medians = data['results'][name]['median_ms']
            if runner not in medians:
                cells.append('')
                continue
            base = medians['optax jax.jit donated']
            if runner.startswith('train step'):
                donated = 'donating' in runner or runner.endswith('donated')
                base = medians['train step: optax jax.jit' + (' donated' if donated else '')]
            cells.append(f'{medians[runner]:.3f} ({medians[runner] / base:.2f}x)')
        lines.append(f'| {runner} | ' + ' | '.join(cells) + ' |')
    lines += ['', 'The targets (ratios of medians, 1.10 or less):', '',
              '| target | ' + ' | '.join(sets) + ' |', '| --- |' + ' --- |' * len(sets)]
    for target in data['results'][sets[0]]['targets']:
        cells = [f'{data["results"][name]["targets"][target]:.2f}' for name in sets]
        lines.append(f'| {target} | ' + ' | '.join(cells) + ' |')
    state = ', '.join(f'{name}: {data["results"][name]["state_bytes"]["stateopt eager"] / 2**20:.2f} MB'
                      for name in sets)
    lines += ['', f'Optimizer state ({state}) is the same for every runner. Process peak memory: '
                  f'{data["peak_mb"]:.0f} MB.']
    out = os.path.join(app.srcdir, '_generated')
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'performance_table.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def setup(app):
    app.connect('builder-inited', generate)
    return {'parallel_read_safe': True, 'version': '1'}
