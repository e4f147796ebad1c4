"""Renders the committed benchmark results (benchmarks/results/adamw.json) as the performance table,
and draws the target ratios as a chart, each against its target."""

from __future__ import annotations

import json
import os

RESULTS = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'results', 'adamw.json')
#: Every target is a ratio of medians of 1.10 or less.
TARGET = 1.10


def _ratio(ratio: float) -> str:
    """A target ratio as shown: two decimals, or three where two would round a miss down to the target."""
    shown = f'{ratio:.2f}'
    return f'{ratio:.3f}' if ratio > TARGET and float(shown) <= TARGET else shown


def _target_cell(ratio: float) -> str:
    return f'{_ratio(ratio)}, **misses {TARGET:.2f}**' if ratio > TARGET else _ratio(ratio)


def _misses(data: dict) -> list[str]:
    return [f'{target} on {name} ({_ratio(ratio)})' for name, result in data['results'].items()
            for target, ratio in result['targets'].items() if ratio > TARGET]


def targets_chart(data: dict):
    """One panel per target, one bar per parameter set, and the target's line; misses are red."""
    from matplotlib.figure import Figure

    sets = list(data['results'])
    targets = list(data['results'][sets[0]]['targets'])
    largest = max(ratio for result in data['results'].values() for ratio in result['targets'].values())
    figure = Figure(figsize=(9.2, 0.6 + (0.45 + 0.28 * len(sets)) * len(targets)), layout='constrained')
    panels = figure.subplots(len(targets), 1, sharex=True)
    for axes, target in zip(panels, targets):
        ratios = [data['results'][name]['targets'][target] for name in sets]
        bars = axes.barh(range(len(sets)), ratios, height=0.7,
                         color=['tab:red' if ratio > TARGET else 'tab:blue' for ratio in ratios])
        axes.plot([TARGET, TARGET], [-0.5, len(sets) - 0.5], color='black', ls='--', lw=1)
        axes.bar_label(bars, labels=[_ratio(ratio) for ratio in ratios], padding=3, fontsize=8,
                       bbox={'facecolor': 'white', 'edgecolor': 'none', 'pad': 1})
        axes.set_yticks(range(len(sets)), sets, fontsize=8)
        axes.set_ylim(len(sets) - 0.5, -0.5)
        axes.set_title(target, fontsize=9, loc='left')
    panels[-1].set(xlim=(0, largest * 1.12),
                   xlabel=f'ratio of medians (dashed: the target, {TARGET:.2f}; red: misses it)')
    return figure


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
    targets = list(data['results'][sets[0]]['targets'])
    misses = _misses(data)
    lines += ['', f'The targets: each ratio of medians should be {TARGET:.2f} or less.', '',
              '| target | ' + ' | '.join(sets) + ' |', '| --- |' + ' --- |' * len(sets)]
    for target in targets:
        cells = [_target_cell(data['results'][name]['targets'][target]) for name in sets]
        lines.append(f'| {target} | ' + ' | '.join(cells) + ' |')
    count = f'{len(misses)} of {len(sets) * len(targets)} ratios miss the target'
    lines += ['', f'**{count}**: ' + '; '.join(misses) + '.' if misses else f'{count}.']
    out = os.path.join(app.srcdir, '_generated')
    os.makedirs(out, exist_ok=True)
    targets_chart(data).savefig(os.path.join(out, 'performance_targets.png'), dpi=160)
    lines += ['', '![Each target ratio per parameter set, against the 1.10 line; the misses in red]'
                  '(/_generated/performance_targets.png)']
    state = ', '.join(f'{name}: {data["results"][name]["state_bytes"]["stateopt eager"] / 2**20:.2f} MB'
                      for name in sets)
    lines += ['', f'Optimizer state ({state}) is the same for every runner. Process peak memory: '
                  f'{data["peak_mb"]:.0f} MB.']
    with open(os.path.join(out, 'performance_table.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def setup(app):
    app.connect('builder-inited', generate)
    return {'parallel_read_safe': True, 'version': '1'}
