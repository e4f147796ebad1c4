"""Every performance target with its measured figure and OK or OVER, from the committed results.

Run from the repository root:

    python benchmarks/targets.py             # read benchmarks/results/*.json (instant)
    python benchmarks/targets.py --measure   # measure again first (about 25 minutes on 2 cores)

The figures come from three benchmarks, each of which also prints its own targets:
``bench_optimizers.py`` (time per step, side by side in one process; ``results/adamw.json``),
``bench_memory.py`` (peak memory, a fresh process per runner; ``results/memory.json``) and
``bench_groups.py`` (many groups and States, a fresh process per case; ``results/groups.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results')


def _load(name: str) -> dict | None:
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def rows() -> list[tuple[str, str, float, float, str]]:
    """``(area, target, measured, limit, unit)`` of every target with a committed figure."""
    out = []
    speed = _load('adamw.json')
    if speed:
        for name, result in speed['results'].items():
            for target, ratio in result['targets'].items():
                out.append(('time per step', f'{target}, {name}', ratio,
                            result.get('limits', {}).get(target, 1.10), 'x'))
    memory = _load('memory.json')
    if memory:
        for target, ratio in memory['targets'].items():
            out.append(('peak memory', f'{target}, {memory["shape"]}', ratio, 1.02, 'x'))
    groups = _load('groups.json')
    if groups:
        if '1000 groups' in groups:
            out.append(('many groups', 'registering 1,000 groups', groups['1000 groups']['register_s'],
                        2.0, 's'))
        if '5000 states' in groups:
            out.append(('many groups', 'first step (compilation) of 5,000 States',
                        groups['5000 states']['first_step_s'], 20.0, 's'))
        if '5000 packed' in groups:
            out.append(('many groups', 'first step (compilation) of 5,000 States, packed',
                        groups['5000 packed']['first_step_s'], 20.0, 's'))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--measure', action='store_true', help='run the three benchmarks first')
    args = parser.parse_args()
    if args.measure:
        for script, out in (('bench_optimizers.py', 'adamw.json'), ('bench_memory.py', 'memory.json'),
                            ('bench_groups.py', 'groups.json')):
            subprocess.run([sys.executable, os.path.join(HERE, script), '--json', os.path.join(RESULTS, out)],
                           check=True)
        # the per-call set again, without the peers' threads in the process (see bench_optimizers.py)
        subprocess.run([sys.executable, os.path.join(HERE, 'bench_optimizers.py'), '--sets', 'tiny 6 x 16',
                        '--no-peers', '--json', os.path.join(RESULTS, 'adamw.json'), '--add-to'], check=True)
    table = rows()
    if not table:
        sys.exit('no results in benchmarks/results: run with --measure')
    width = max(len(target) for _, target, *_ in table)
    print(f'{"area":14s} {"target":{width}s} {"measured":>9s} {"limit":>7s}')
    for area, target, value, limit, unit in table:
        verdict = 'OK' if value <= limit else 'OVER'
        print(f'{area:14s} {target:{width}s} {value:8.2f}{unit} {limit:6.2f}{unit}  {verdict}')
    over = sum(value > limit for _, _, value, limit, _ in table)
    print(f'\n{over} of {len(table)} targets OVER')


if __name__ == '__main__':
    main()
