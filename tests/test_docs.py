"""The documentation builds with warnings as errors, and shows what the code has."""

import html
import json
import os
import re
import subprocess
import sys

import jax
import jupytext
import numpy as np
import pytest

import stateopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, 'docs')
sys.path.insert(0, os.path.join(DOCS, '_ext'))

import performance_table  # noqa: E402

# Widths measured once in headless Chromium at a 1280 px wide window (furo 2025.12, its default
# fonts): the content column is 736 px wide; a code block's text area is 708 px and a monospace
# character 7.8 px, so 90 characters fit. 88 leaves two characters for a scroll bar or a wider font.
CODE_LINE_LIMIT = 88
# A table needs, at the least, the widest unbreakable word of each column plus the cell's padding
# (0.25rem of padding and 0.25rem of paragraph margin on each side, and a border: 17 px; 5 px more
# for an inline code's own padding). Words count 8 px a character, prose or code: on the three
# tables of the old catalogue and migrating pages, this estimate is 2% to 23% over the width
# Chromium gave them at their narrowest, so a table it passes fits in the 736 px column.
TABLE_WIDTH_PX, CHAR_PX, CELL_PADDING_PX = 736, 8, 22


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    """The html site, built once with the documented command (warnings are errors)."""
    out = tmp_path_factory.mktemp('docs')
    result = subprocess.run([sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html',
                             '-d', str(out / 'doctrees'), 'docs', str(out / 'html')],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / 'html'


def _images(page_html: str) -> list[str]:
    return re.findall(r'<img [^>]*src="((?:\.\./)*_images/[^"]+\.png)"', page_html)


def _text(page_html: str) -> str:
    """A page's visible text, one space between words, straight apostrophes."""
    text = html.unescape(re.sub(r'<[^>]+>', '', page_html)).replace('\u2019', "'")
    return ' '.join(text.split())


def test_docs_build_without_warnings(site):
    schedulers = (site / 'schedulers.html').read_text()
    images = _images(schedulers)
    assert len(images) == 22 and all((site / image).stat().st_size > 5000 for image in images)
    catalogue = (site / 'catalogue.html').read_text()
    for name in stateopt.OPTIMIZERS:
        if name != 'NAdam':
            assert f'stateopt.{name}' in catalogue, name
    assert (site / '_autosummary' / 'stateopt.AdamW.html').exists()
    assert 'train step in donating_jit' in (site / 'performance.html').read_text()


def _readme_pitch() -> str:
    """The README's opening paragraph, as plain text."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        pitch = f.read().split('\n\n')[1]
    pitch = re.sub(r'\[([^\]]+)\]\([^)]+\)', r'\1', pitch).replace('`', '')
    return ' '.join(pitch.split())


def test_index_page_has_the_pitch_the_install_command_and_the_gallery(site):
    index = (site / 'index.html').read_text()
    text = _text(index)
    assert _readme_pitch() in text
    assert 'pip install -e ".[tutorials]"' in text
    gallery = [image for image in _images(index) if 'schedule' in image]
    assert len(gallery) == 1 and (site / gallery[0]).stat().st_size > 20000


@pytest.mark.parametrize('page', ['README.md', 'docs/index.md'])
def test_readme_example_runs_and_trains(page, tmp_path, monkeypatch):
    with open(os.path.join(ROOT, page)) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], page, 'exec'), namespace)
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


def _pages() -> list[str]:
    return sorted(name for name in os.listdir(DOCS) if name.endswith('.md'))


@pytest.mark.parametrize('page', _pages())
def test_code_blocks_fit_the_content_column(page):
    with open(os.path.join(DOCS, page)) as f:
        blocks = re.findall(r'```(?:python|bash)\n(.*?)```', f.read(), re.S)
    _assert_lines_fit(page, [line for block in blocks for line in block.splitlines()])


def _assert_lines_fit(where: str, lines: list[str]) -> None:
    long_lines = '\n'.join(line for line in lines if len(line) > CODE_LINE_LIMIT)
    assert not long_lines, f'{where}: wrap these lines to {CODE_LINE_LIMIT} characters:\n{long_lines}'


def _tutorials() -> list[str]:
    return sorted(name for name in os.listdir(os.path.join(ROOT, 'tutorials')) if name.endswith('.py'))


@pytest.mark.parametrize('tutorial', _tutorials())
def test_tutorial_code_fits_the_content_column(tutorial):
    # the code cells become code blocks of the tutorial's page; the markdown cells wrap as prose
    book = jupytext.read(os.path.join(ROOT, 'tutorials', tutorial), fmt='py:percent')
    _assert_lines_fit(tutorial, [line for cell in book.cells if cell.cell_type == 'code'
                                 for line in cell.source.splitlines()])


def _tables(markdown: str) -> list[list[list[str]]]:
    """The markdown tables of a page: rows of cells, without the separator row."""
    tables, rows = [], []
    for line in markdown.splitlines() + ['']:
        if line.startswith('|'):
            if not re.fullmatch(r'\|( *:?-+:? *\|)+', line.strip()):
                rows.append([cell.strip() for cell in re.split(r'(?<!\\)\|', line.strip())[1:-1]])
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def _words(cell: str) -> list[str]:
    """The unbreakable words of a table cell as shown: roles, links and code marks removed."""
    cell = re.sub(r'\{[a-z:]+\}`~?[\w.]*?([\w]+)`', r'\1', cell)         # {class}`~stateopt.SGD` -> SGD
    cell = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', cell)
    return cell.replace('`', '').replace('\\|', '|').replace('*', '').split()


def _min_table_width_px(table: list[list[str]]) -> int:
    columns = zip(*table)
    return sum(CELL_PADDING_PX + CHAR_PX * max(len(word) for cell in column for word in _words(cell) or [''])
               for column in columns)


def _generated_tables() -> list[str]:
    return ['_generated/catalogue_table.md', '_generated/performance_table.md']


@pytest.mark.parametrize('page', _pages() + _generated_tables())
def test_tables_fit_the_content_column(page, site):
    with open(os.path.join(DOCS, page)) as f:
        tables = _tables(f.read())
    for table in tables:
        width = _min_table_width_px(table)
        assert width <= TABLE_WIDTH_PX, f'{page}: the table {table[0]} needs {width} px'


def test_catalogue_table_is_read_from_the_classes(site):
    with open(os.path.join(DOCS, '_generated', 'catalogue_table.md')) as f:
        table = _tables(f.read())[0]
    rows = {_words(row[0])[0]: row for row in table[1:]}
    assert sorted(rows) == sorted(set(stateopt.OPTIMIZERS) - {'NAdam'})
    assert _words(rows['Adagrad'][2]) == ['lr_decay,', 'initial_accumulator_value,', 'eps']
    assert _words(rows['Lookahead'][2]) == ['base_optimizer,', 'sync_period,', 'alpha']
    assert 'torch 2.13' in rows['RMSprop'][1] and 'optax' in rows['Lars'][1] and 'paper' in rows['Lion'][1]
    with open(os.path.join(DOCS, '_generated', 'catalogue_table.md')) as f:
        packable = next(line for line in f if 'PackedParams' in line)
    listed = packable.split(': ', 1)[1].split('.')[0].split(', ')
    assert listed == [name for name in stateopt.OPTIMIZERS if name != 'NAdam'
                      and getattr(stateopt, name)._elementwise]


def _performance_data() -> dict:
    with open(os.path.join(ROOT, 'benchmarks', 'results', 'adamw.json')) as f:
        return json.load(f)


def test_performance_targets_say_which_ratios_miss(site):
    data = _performance_data()
    with open(os.path.join(DOCS, '_generated', 'performance_table.md')) as f:
        generated = f.read()
    tables = [table for table in _tables(generated) if table[0][0] == 'target']
    assert [name for table in tables for name in table[0][1:]] == list(data['results'])
    labels = {f'{target} (at most {_limit_of(data, target):.2f})': target
              for target in performance_table.all_targets(data)}
    misses = measured = 0
    for table in tables:
        sets = table[0][1:]
        shown = [labels[row[0]] for row in table[1:]]
        assert shown == [t for t in labels.values() if any(t in data['results'][n]['targets'] for n in sets)]
        measured += _check_target_rows(data, table, shown)
        misses += sum('misses' in cell for row in table[1:] for cell in row[1:])
    assert f'{misses} of {measured} ratios miss their target' in _text(generated)
    page = (site / 'performance.html').read_text()
    chart = [image for image in _images(page) if 'targets' in image]
    assert len(chart) == 1 and (site / chart[0]).stat().st_size > 20000


def _check_target_rows(data: dict, table: list, targets: list) -> int:
    """Check each cell of a target table against the results; return how many ratios it shows."""
    measured = 0
    sets = table[0][1:]
    for row, target in zip(table[1:], targets):
        for name, cell in zip(sets, row[1:]):
            result = data['results'][name]
            if target not in result['targets']:
                assert cell == '', (target, name, cell)
                continue
            ratio, bound = result['targets'][target], performance_table.limit(result, target)
            shown = float(cell.split()[0].rstrip(','))
            assert (f'misses {bound:.2f}' in cell) == (ratio > bound), (target, name, cell)
            assert (shown > bound) == (ratio > bound), f'{cell} hides whether {ratio} meets {bound}'
            measured += 1
    return measured


def _limit_of(data: dict, target: str) -> float:
    return next(performance_table.limit(result, target) for result in data['results'].values()
                if target in result['targets'])


def test_performance_chart_draws_every_target_ratio_against_its_limit():
    data = _performance_data()
    figure = performance_table.targets_chart(data)
    targets = performance_table.all_targets(data)
    assert [axes.get_title(loc='left') for axes in figure.axes] == [
        f'{target} (at most {_limit_of(data, target):.2f})' for target in targets]
    colours = {True: set(), False: set()}
    for axes, target in zip(figure.axes, targets):
        measured = {name: result['targets'][target] for name, result in data['results'].items()
                    if target in result['targets']}
        bound = _limit_of(data, target)
        bars = [patch for container in axes.containers for patch in container]
        assert [bar.get_width() for bar in bars] == list(measured.values())
        assert [label.get_text() for label in axes.get_yticklabels()] == list(measured)
        assert [list(line.get_xdata()) for line in axes.get_lines()] == [[bound, bound]]
        assert axes.get_xlim()[1] > max(bar.get_width() for bar in bars)
        for bar in bars:
            colours[bar.get_width() > bound].add(bar.get_facecolor())
    assert len(colours[True]) <= 1 and len(colours[False]) <= 1 and not colours[True] & colours[False]


#: The page of the guide that links to each tutorial, and the number of figures the tutorial draws.
TUTORIAL_PAGES = {
    '01_quickstart': ('getting_started', 1),
    '02_param_groups': ('param_groups', 1),
    '03_schedulers': ('schedulers', 3),
    '04_checkpointing': ('checkpoints', 1),
    '05_lbfgs_closure': ('training_loop', 1),
    '06_training_loop_features': ('accumulation', 1),
    '07_scaling_out': ('scaling_out', 1),
}


def test_every_tutorial_has_a_page():
    assert [name[:-3] for name in _tutorials()] == sorted(TUTORIAL_PAGES)


@pytest.mark.parametrize('tutorial', sorted(TUTORIAL_PAGES))
def test_tutorial_page_shows_its_figures_and_is_linked(tutorial, site):
    guide_page, figures = TUTORIAL_PAGES[tutorial]
    page = site / '_generated' / 'tutorials' / f'{tutorial}.html'
    assert page.exists(), f'no page for tutorials/{tutorial}.py'
    images = _images(page.read_text())
    assert len(images) == figures, images
    assert all((page.parent / image).stat().st_size > 10000 for image in images)
    assert f'href="_generated/tutorials/{tutorial}.html"' in (site / f'{guide_page}.html').read_text()
