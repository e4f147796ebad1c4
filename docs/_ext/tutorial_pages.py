"""Turns the tutorials (``tutorials/*.py``, jupytext percent-format scripts) into pages of the site.

Each script becomes ``_generated/tutorials/<name>.ipynb``, which myst-nb executes when the pages are
read, so every page shows the code with what it prints and draws. A hidden first cell runs the
tutorial in its fast mode (``STATEOPT_FAST=1``), writes its files under ``_generated/tutorials/outputs``
and shows figures inline; a note under the title says so. A notebook is rewritten only when its
script changed, so an incremental build reruns only the changed tutorials (``-E`` reruns them all).
"""

from __future__ import annotations

import os

import jupytext
import nbformat

TUTORIALS = os.path.join(os.path.dirname(__file__), '..', '..', 'tutorials')

_SETUP = """import os

os.environ['STATEOPT_FAST'] = '1'
os.environ['STATEOPT_OUT'] = 'outputs'
%matplotlib inline"""

_NOTE = """```{{note}}
This page is the script `tutorials/{name}` of the repository, run in its fast mode
(`STATEOPT_FAST=1`) when the documentation was built: it trains for fewer steps than
`python tutorials/{name}`, so its numbers and curves are those of a shorter run.
```"""


def notebook(script: str):
    """The tutorial ``script`` as a notebook with the setup cell and the note added, not executed."""
    book = jupytext.read(script, fmt='py:percent')
    name = os.path.basename(script)
    setup = nbformat.v4.new_code_cell(_SETUP, metadata={'tags': ['remove-cell']})
    note = nbformat.v4.new_markdown_cell(_NOTE.format(name=name))
    book.cells = [setup, book.cells[0], note, *book.cells[1:]]
    return book


def generate(app) -> None:
    out = os.path.join(app.srcdir, '_generated', 'tutorials')
    os.makedirs(out, exist_ok=True)
    for name in sorted(os.listdir(TUTORIALS)):
        if not name.endswith('.py'):
            continue
        text = nbformat.writes(notebook(os.path.join(TUTORIALS, name)))
        path = os.path.join(out, name[:-3] + '.ipynb')
        if os.path.exists(path):
            with open(path) as f:
                if f.read() == text:
                    continue
        with open(path, 'w') as f:
            f.write(text)


def setup(app):
    app.connect('builder-inited', generate)
    return {'parallel_read_safe': True, 'version': '1'}
