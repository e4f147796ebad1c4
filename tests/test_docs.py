"""The documentation builds with warnings as errors, and shows what the code has."""

import os
import re
import subprocess
import sys

import jax
import numpy as np

import stateopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_docs_build_without_warnings(tmp_path):
    # the documented command: python -m sphinx -W --keep-going -b html docs docs/_build/html
    result = subprocess.run([sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html',
                             '-d', str(tmp_path / 'doctrees'), 'docs', str(tmp_path / 'html')],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = tmp_path / 'html'
    schedulers = (html / 'schedulers.html').read_text()
    images = re.findall(r'<img [^>]*src="(_images/[^"]+\.png)"', schedulers)
    assert len(images) == 22 and all((html / image).stat().st_size > 5000 for image in images)
    catalogue = (html / 'catalogue.html').read_text()
    for name in stateopt.OPTIMIZERS:
        if name != 'NAdam':
            assert f'stateopt.{name}' in catalogue, name
    assert (html / '_autosummary' / 'stateopt.AdamW.html').exists()
    assert 'train step in donating_jit' in (html / 'performance.html').read_text()


def test_readme_example_runs_and_trains(tmp_path, monkeypatch):
    with open(os.path.join(ROOT, 'README.md')) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], 'README.md', 'exec'), namespace)
    losses, opt = namespace['losses'], namespace['opt']
    assert len(losses) == 200 and losses[-1] < 0.1 * losses[0]
    assert namespace['sched'].base_lrs == [3e-3, 1e-3]            # the head group's own base lr
    np.testing.assert_allclose([float(group['lr']) for group in opt.param_groups], 0.0, atol=1e-9)
    params = namespace['params']
    trained = {k: jax.tree.map(np.asarray, s.value) for k, s in params.items()}
    for state in params.values():
        state.value = jax.tree.map(np.zeros_like, state.value)
    stateopt.load_checkpoint('run.msgpack', {'model': params, 'optimizer': opt})
    for key, state in params.items():
        np.testing.assert_equal(jax.tree.map(np.asarray, state.value), trained[key], err_msg=str(key))
    assert int(opt.step_count.value) == 200
