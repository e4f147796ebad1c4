"""The documentation builds with warnings as errors, and shows what the code has."""

import os
import re
import subprocess
import sys

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
