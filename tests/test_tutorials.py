"""Every tutorial runs to the end in its fast mode, writes what it says only under STATEOPT_OUT, and
draws figures that show their data."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

TUTORIALS = sorted((pathlib.Path(__file__).parent.parent / 'tutorials').glob('*.py'))

#: The files each tutorial writes; a tutorial missing here must write at least one PNG.
OUTPUTS = {
    '01_quickstart.py': {'quickstart_curves.png', 'quickstart.msgpack'},
    '02_param_groups.py': {'param_groups_fine_tuning.png'},
    '03_schedulers.py': {'scheduler_gallery.png', 'scheduler_two_groups.png', 'scheduler_training.png'},
    '04_checkpointing.py': {'checkpoint_resume.png', 'run.msgpack', 'corrupted.msgpack', 'truncated.msgpack',
                            'narrow.msgpack', 'background.msgpack'},
    '05_lbfgs_closure.py': {'lbfgs_vs_adam.png'},
    '06_training_loop_features.py': {'training_loop_ema.png'},
    '07_scaling_out.py': {'scaling_out.png', 'scaling_out_checkpoints'},
}
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
CHECKPOINT_MAGIC = b'\x89STOPT\r\n'

#: Runs a tutorial as its own __main__, then records what its open figures show: each axes' title,
#: limits and box on the canvas, each line's data and its points on the canvas, and the canvas box of
#: every legend (of an axes or of the figure).
DRIVER = '''
import json, runpy, sys
import matplotlib.pyplot as plt
import numpy as np
runpy.run_path(sys.argv[1], run_name='__main__')
figures = []
for number in plt.get_fignums():
    figure = plt.figure(number)
    figure.canvas.draw()
    axes_seen = []
    for axes in figure.axes:
        lines = []
        for line in axes.get_lines():
            x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            canvas = axes.transData.transform(np.column_stack([x, y]))
            lines.append({'label': line.get_label(), 'x': x.tolist(), 'y': y.tolist(),
                          'canvas': canvas.tolist()})
        axes_seen.append({'title': axes.get_title(), 'ylim': list(axes.get_ylim()), 'lines': lines,
                          'box': axes.get_window_extent().bounds})
    legends = figure.legends + [axes.get_legend() for axes in figure.axes if axes.get_legend()]
    figures.append({'axes': axes_seen, 'legends': [legend.get_window_extent().bounds for legend in legends]})
with open(sys.argv[2], 'w') as f:
    json.dump(figures, f, allow_nan=True)
'''


@pytest.fixture(scope='module')
def fast_run(tmp_path_factory):
    """``fast_run(tutorial)``: the tutorial run once in fast mode, in a fresh working directory."""
    runs = {}

    def run(tutorial: pathlib.Path) -> dict:
        if tutorial not in runs:
            root = tmp_path_factory.mktemp(tutorial.stem)
            out, working_dir, facts = root / 'out', root / 'cwd', root / 'figures.json'
            working_dir.mkdir()
            env = {**os.environ, 'STATEOPT_FAST': '1', 'STATEOPT_OUT': str(out), 'MPLBACKEND': 'Agg'}
            process = subprocess.run([sys.executable, '-c', DRIVER, str(tutorial), str(facts)],
                                     cwd=working_dir, env=env, capture_output=True, timeout=300)
            # decoded by hand: text mode would turn the \r of progress bars into line breaks
            process.stdout, process.stderr = process.stdout.decode(), process.stderr.decode()
            figures = json.loads(facts.read_text()) if process.returncode == 0 else None
            runs[tutorial] = {'process': process, 'out': out, 'cwd': working_dir, 'figures': figures}
        return runs[tutorial]

    return run


def _tutorial(name: str) -> pathlib.Path:
    return next(path for path in TUTORIALS if path.name == name)


@pytest.mark.parametrize('tutorial', TUTORIALS, ids=lambda path: path.stem)
def test_tutorial_runs_in_fast_mode(tutorial, fast_run):
    run = fast_run(tutorial)
    process, out, working_dir = run['process'], run['out'], run['cwd']
    assert process.returncode == 0, \
        f'{tutorial.name} failed:\n{process.stdout[-4000:]}\n{process.stderr[-4000:]}'

    written = {path.name for path in out.iterdir()}
    expected = OUTPUTS.get(tutorial.name)
    if expected is None:
        assert any(name.endswith('.png') for name in written), f'{tutorial.name} wrote no picture'
    else:
        assert expected <= written, f'{tutorial.name} did not write {sorted(expected - written)}'
    for name in written:
        if (out / name).is_dir():       # an orbax checkpoint directory
            continue
        opening = (out / name).read_bytes()[:8]
        if name.endswith('.png'):
            assert opening == PNG_SIGNATURE, f'{name} is not a PNG'
        elif name.endswith('.msgpack'):
            assert opening == CHECKPOINT_MAGIC, f'{name} is not a stateopt checkpoint'
    assert not any(working_dir.iterdir()), f'{tutorial.name} wrote outside STATEOPT_OUT'


@pytest.mark.parametrize('tutorial', TUTORIALS, ids=lambda path: path.stem)
def test_tutorial_opens_as_a_notebook(tutorial):
    source = tutorial.read_text()
    assert source.startswith('# ---\n# jupyter:\n') and 'format_name: percent' in source, \
        f'{tutorial.name} needs the jupytext percent-format header'
    assert source.count('\n# %% [markdown]\n') >= 2 and '\n# %%\n' in source


def _bar_states(stderr: str, description: str) -> list[list[str]]:
    """Each tqdm bar with ``description``: the states it printed, in order (tqdm redraws with \\r)."""
    bars = []
    for line in stderr.split('\n'):
        states = [state for state in line.split('\r') if state.startswith(f'{description}:')]
        if states:
            bars.append(states)
    return bars


def test_quickstart_resumed_progress_bar_counts_on_from_the_checkpoint(fast_run):
    run = fast_run(_tutorial('01_quickstart.py'))
    assert run['process'].returncode == 0, run['process'].stderr[-4000:]
    epochs, saved_at = 4, 2                      # the fast mode's EPOCHS and SAVE_AT
    first, resumed = _bar_states(run['process'].stderr, 'training')
    counts = [re.search(r'\| *(\d+)/(\d+) ', state).groups() for state in resumed]
    assert counts[0] == (str(saved_at), str(epochs)), resumed[0]
    assert counts[-1] == (str(epochs), str(epochs)), resumed[-1]
    assert re.search(r'\| *(\d+)/(\d+) ', first[-1]).groups() == (str(epochs), str(epochs))


def _scheduler_training_figure(run: dict) -> tuple[dict, dict]:
    """The scheduler tutorial's figure of both training runs, and its lr axes."""
    for figure in run['figures']:
        for axes in figure['axes']:
            if axes['title'] == 'learning rate':
                return figure, axes
    raise AssertionError('no axes titled "learning rate"')


def test_scheduler_training_lr_curves_stay_within_the_axes(fast_run):
    run = fast_run(_tutorial('03_schedulers.py'))
    assert run['process'].returncode == 0, run['process'].stderr[-4000:]
    _, axes = _scheduler_training_figure(run)
    low, high = axes['ylim']
    assert len(axes['lines']) == 3
    for line in axes['lines']:
        y = np.array(line['y'], float)
        shown = y[np.isfinite(y)]
        assert len(shown) > 0.9 * len(y), f"{line['label']}: most of the curve is not drawn"
        assert low <= shown.min() and shown.max() <= high, f"{line['label']}: {shown.min()}..{shown.max()} " \
                                                           f'outside the axes ({low}, {high})'


def _inside(point, box) -> bool:
    left, bottom, width, height = box
    return left <= point[0] <= left + width and bottom <= point[1] <= bottom + height


def _overlap(box, other) -> bool:
    return (box[0] < other[0] + other[2] and other[0] < box[0] + box[2]
            and box[1] < other[1] + other[3] and other[1] < box[1] + box[3])


def test_scheduler_training_legend_leaves_the_warm_up_visible(fast_run):
    run = fast_run(_tutorial('03_schedulers.py'))
    assert run['process'].returncode == 0, run['process'].stderr[-4000:]
    figure, axes = _scheduler_training_figure(run)
    assert figure['legends'], 'the curves need a legend'
    # the warm-up is the first epoch
    warm_up = [(line['label'], x, point) for line in axes['lines']
               for x, point in zip(line['x'], line['canvas']) if x <= 1.0 and np.all(np.isfinite(point))]
    assert warm_up
    for legend in figure['legends']:
        for label, x, point in warm_up:
            assert not _inside(point, legend), f'the legend covers {label} at epoch {x:.2f}'
        # outside every plot, a legend covers no curve in the long run either, whatever the data
        assert not any(_overlap(legend, other['box']) for other in figure['axes'])
