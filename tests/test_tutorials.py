"""Every tutorial runs to the end in its fast mode and writes what it says, only under STATEOPT_OUT."""

import os
import pathlib
import subprocess
import sys

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
}
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
CHECKPOINT_MAGIC = b'\x89STOPT\r\n'


@pytest.mark.parametrize('tutorial', TUTORIALS, ids=lambda path: path.stem)
def test_tutorial_runs_in_fast_mode(tutorial, tmp_path):
    out, working_dir = tmp_path / 'out', tmp_path / 'cwd'
    working_dir.mkdir()
    env = {**os.environ, 'STATEOPT_FAST': '1', 'STATEOPT_OUT': str(out), 'MPLBACKEND': 'Agg'}
    run = subprocess.run([sys.executable, str(tutorial)], cwd=working_dir, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f'{tutorial.name} failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}'

    written = {path.name for path in out.iterdir()}
    expected = OUTPUTS.get(tutorial.name)
    if expected is None:
        assert any(name.endswith('.png') for name in written), f'{tutorial.name} wrote no picture'
    else:
        assert expected <= written, f'{tutorial.name} did not write {sorted(expected - written)}'
    for name in written:
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
