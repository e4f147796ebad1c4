"""The layout's rules: donation alone touches brainstate's internals; no private names cross packages."""

import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'stateopt'
MODULES = sorted(PACKAGE.rglob('*.py'))
IDS = [str(path.relative_to(PACKAGE)) for path in MODULES]

#: brainstate's internals: a State's stored value, its read and write paths, its hooks.
_INTERNALS = re.compile(r"vars\([^)]*\)\[['\"]_value['\"]\]|\b(?!self\b)\w+\._value\b|"
                        r"\._read_value\b|\._write_value\b|_hooks_manager|brainstate\._")


@pytest.mark.parametrize('path', MODULES, ids=IDS)
def test_only_the_donation_layer_reads_brainstate_internals(path):
    if path.name == '_donation.py':
        return
    found = [f'{path.name}:{number}: {line.strip()}' for number, line in
             enumerate(path.read_text().splitlines(), 1) if _INTERNALS.search(line)]
    assert not found, '\n'.join(found)


def _package_of(path: pathlib.Path) -> pathlib.Path:
    return path.parent


@pytest.mark.parametrize('path', MODULES, ids=IDS)
def test_no_private_name_is_imported_across_packages(path):
    crossing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*(node.module or '').split('.'))
            source_package = target if target.is_dir() else target.parent
            if source_package == _package_of(path):
                continue
            crossing += [f'{path.name}:{node.lineno}: {alias.name}' for alias in node.names
                         if alias.name.startswith('_') and not alias.name.startswith('__')]
    assert not crossing, '\n'.join(crossing)


@pytest.mark.parametrize('path', MODULES, ids=IDS)
def test_no_star_imports(path):
    stars = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.ImportFrom) and any(alias.name == '*' for alias in node.names)]
    assert not stars, f'{path.name} imports * at lines {stars}'
