"""Renders the committed benchmark results (benchmarks/results/adamw.json) as the performance table,
and draws the target ratios as a chart, each against its target."""

from __future__ import annotations

import json
import os

RESULTS = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'results', 'adamw.json')
#: A target's limit unless the results give another (a ratio of medians, lower is better).
TARGET = 1.10


def limit(result: dict, target: str) -> float:
    """The limit of ``target`` in one set's ``result``."""
    return result.get('limits', {}).get(target, TARGET)


def _ratio(ratio: float, bound: float) -> str:
    """A target ratio as shown: two decimals, or three where two would round a miss down to the limit."""
    shown = f'{ratio:.2f}'
    return f'{ratio:.3f}' if ratio > bound and float(shown) <= bound else shown


def _target_cell(ratio: float, bound: float) -> str:
    return f'{_ratio(ratio, bound)}, **misses {bound:.2f}**' if ratio > bound else _ratio(ratio, bound)


def all_targets(data: dict) -> list[str]:
    """Every target measured on some set, in the order the sets first give them."""
    return list(dict.fromkeys(target for result in data['results'].values() for target in result['targets']))


def _misses(data: dict) -> list[str]:
    return [f'{target} on {name} ({_ratio(ratio, limit(result, target))})'
            for name, result in data['results'].items()
            for target, ratio in result['targets'].items() if ratio > limit(result, target)]


def targets_chart(data: dict):
    """One panel per target, one bar per parameter set that has it, and the target's line; misses are red."""
    from matplotlib.figure import Figure

    targets = all_targets(data)
    largest = max(ratio for result in data['results'].values() for ratio in result['targets'].values())
    rows = {target: [name for name, result in data['results'].items() if target in result['targets']]
            for target in targets}
    figure = Figure(figsize=(9.2, 0.6 + sum(0.45 + 0.28 * len(sets) for sets in rows.values())),
                    layout='constrained')
    panels = figure.subplots(len(targets), 1, sharex=True,
                             gridspec_kw={'height_ratios': [len(rows[target]) for target in targets]})
    for axes, target in zip(panels, targets):
        sets = rows[target]
        results = [data['results'][name] for name in sets]
        ratios = [result['targets'][target] for result in results]
        bound = limit(results[0], target)
        bars = axes.barh(range(len(sets)), ratios, height=0.7,
                         color=['tab:red' if ratio > bound else 'tab:blue' for ratio in ratios])
        axes.plot([bound, bound], [-0.5, len(sets) - 0.5], color='black', ls='--', lw=1)
        axes.bar_label(bars, labels=[_ratio(ratio, bound) for ratio in ratios], padding=3, fontsize=8,
                       bbox={'facecolor': 'white', 'edgecolor': 'none', 'pad': 1})
        axes.set_yticks(range(len(sets)), sets, fontsize=8)
        axes.set_ylim(len(sets) - 0.5, -0.5)
        axes.set_title(f'{target} (at most {bound:.2f})', fontsize=9, loc='left')
    panels[-1].set(xlim=(0, largest * 1.12),
                   xlabel='ratio of medians (dashed: the target; red: misses it)')
    return figure


#: Parameter sets per table: more columns would not fit the page.
COLUMNS = 4


def _columns(sets: list[str]) -> list[list[str]]:
    """``sets`` in runs of at most :data:`COLUMNS`, one table each."""
    return [sets[i:i + COLUMNS] for i in range(0, len(sets), COLUMNS)]


def _median_cell(medians: dict, runner: str) -> str:
    """A runner's median ms and its ratio to the raw optax runner it compares with."""
    if runner not in medians:
        return ''
    base = medians['optax jax.jit donated']
    if runner.startswith('train step'):
        donated = 'donating' in runner or runner.endswith('donated')
        base = medians['train step: optax jax.jit' + (' donated' if donated else '')]
    return f'{medians[runner]:.3f} ({medians[runner] / base:.2f}x)'


def _command(argv: list[str]) -> str:
    """The benchmark's command line with ``argv``, as typed into a shell."""
    return ' '.join(['python benchmarks/bench_optimizers.py',
                     *(f"'{arg}'" if ' ' in arg else arg for arg in argv)])


def generate(app) -> None:
    with open(RESULTS) as f:
        data = json.load(f)
    machine = data['machine']
    lines = [f'Measured on {machine["description"]} ({machine["date"]}), with '
             f'`{_command(data["argv"])}`'
             + ''.join(f', then `{_command([*added["argv"], "--add-to"])}`'
                       for added in data.get('added', [])) + '.', '']
    sets = list(data['results'])
    lines.append('Median ms per AdamW step, and in brackets the ratio to raw optax under `jax.jit` with '
                 'donated buffers (update runners) or to the same whole train step in raw `jax.jit` + optax '
                 '(train-step runners, with or without donation as the runner):')
    runners = list(dict.fromkeys(runner for name in sets for runner in data['results'][name]['median_ms']))
    for part in _columns(sets):
        lines += ['', '| runner | ' + ' | '.join(part) + ' |', '| --- |' + ' --- |' * len(part)]
        for runner in runners:
            cells = [_median_cell(data['results'][name]['median_ms'], runner) for name in part]
            if any(cells):
                lines.append(f'| {runner} | ' + ' | '.join(cells) + ' |')
    targets = all_targets(data)
    misses = _misses(data)
    lines += ['', 'The targets: each ratio of medians should be at most the limit its row names (1.10 for '
                  'per-call overhead; 1.00 against torch fused; 1.02 on large arrays).']
    measured = 0
    for part in _columns(sets):
        lines += ['', '| target | ' + ' | '.join(part) + ' |', '| --- |' + ' --- |' * len(part)]
        for target in targets:
            cells = []
            for name in part:
                result = data['results'][name]
                if target in result['targets']:
                    cells.append(_target_cell(result['targets'][target], limit(result, target)))
                    measured += 1
                else:
                    cells.append('')
            if any(cells):
                bound = limit(next(r for r in data['results'].values() if target in r['targets']), target)
                lines.append(f'| {target} (at most {bound:.2f}) | ' + ' | '.join(cells) + ' |')
    count = f'{len(misses)} of {measured} ratios miss their target'
    lines += ['', f'**{count}**: ' + '; '.join(misses) + '.' if misses else f'{count}.']
    with_bandwidth = [name for name in sets if 'bandwidth_gbs' in data['results'][name]]
    if with_bandwidth:
        columns = list(dict.fromkeys(runner for name in with_bandwidth
                                     for runner in data['results'][name]['bandwidth_gbs']))
        lines += ['', 'Bandwidth of the update (throughput: many steps launched, one wait), counting the 7 '
                      'float32 values AdamW reads and writes per parameter, next to a pass that reads and '
                      'writes each value once in place (a copy\'s traffic), GB/s:', '',
                  '| set | ' + ' | '.join(columns) + ' |', '| --- |' + ' --- |' * len(columns)]
        for name in with_bandwidth:
            gbs = data['results'][name]['bandwidth_gbs']
            cells = [f'{gbs[column]:.1f}' if column in gbs else '' for column in columns]
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    out = os.path.join(app.srcdir, '_generated')
    os.makedirs(out, exist_ok=True)
    targets_chart(data).savefig(os.path.join(out, 'performance_targets.png'), dpi=160)
    lines += ['', '![Each target ratio per parameter set, against its limit; the misses in red]'
                  '(/_generated/performance_targets.png)']
    state = ', '.join(f'{name}: {data["results"][name]["state_bytes"]["stateopt eager"] / 2**20:.2f} MB'
                      for name in sets)
    lines += ['', f'Optimizer state ({state}) is the same for every runner. Process peak memory: '
                  f'{data["peak_mb"]:.0f} MB.']
    with open(os.path.join(out, 'performance_table.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with open(os.path.join(out, 'packed_table.md'), 'w') as f:
        f.write('\n'.join(packed_lines(data)) + '\n')


#: The packed table's columns: (heading, runner, the runner it is a ratio to).
PACKED_COLUMNS = (
    ('stateopt eager', 'stateopt eager', 'optax jax.jit donated'),
    ('packed eager', 'stateopt packed eager', 'optax jax.jit donated'),
    ('torch fused', 'torch.optim.AdamW fused', 'optax jax.jit donated'),
    ('packed / torch fused', 'stateopt packed eager', 'torch.optim.AdamW fused'),
    ('packed train step', 'train step: stateopt packed donating_jit', 'train step: optax jax.jit donated'),
)


def packed_lines(data: dict) -> list[str]:
    """The table of the packed layout: per set, raw optax's ms and each runner's ratio."""
    lines = ['| set | optax donated, ms | ' + ' | '.join(heading for heading, _, _ in PACKED_COLUMNS) + ' |',
             '| --- | --- |' + ' --- |' * len(PACKED_COLUMNS)]
    for name, result in data['results'].items():
        medians = result['median_ms']
        if 'stateopt packed eager' not in medians:
            continue
        cells = [f'{medians[runner] / medians[base]:.2f}x' if runner in medians and base in medians else ''
                 for _, runner, base in PACKED_COLUMNS]
        lines.append(f'| {name} | {medians["optax jax.jit donated"]:.3f} | ' + ' | '.join(cells) + ' |')
    lines += ['', 'The ratios are of medians: the update runners to raw optax donated, "packed / torch '
                  'fused" to torch\'s fused AdamW, and the packed train step (under `stateopt.donating_jit`) '
                  'to the same train step in raw `jax.jit` + optax, donated.']
    return lines


def setup(app):
    app.connect('builder-inited', generate)
    return {'parallel_read_safe': True, 'version': '1'}
