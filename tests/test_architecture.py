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


def _module_of(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The stateopt modules ``path`` imports anywhere (in functions, under TYPE_CHECKING too)."""
    package = _module_of(path) if path.name == '__init__.py' else _module_of(path).rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split('.')[:len(package.split('.')) - (node.level - 1)]
            module = '.'.join(base + ([node.module] if node.module else []))
            # ``from package import submodule`` imports the submodule; ``from module import name``, the module
            found |= {f'{module}.{alias.name}' if f'{module}.{alias.name}' in modules else module
                      for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_no_modules_import_each_other_in_a_circle():
    # the schedulers speak to an optimizer through the Driven protocol, never by importing it
    modules = {_module_of(path): path for path in MODULES}
    edges = {name: {other for other in _imports(path, set(modules)) if other in modules and other != name}
             for name, path in modules.items()}

    def cycle_from(start, node, trail):
        for other in edges[node]:
            if other == start:
                return trail + [other]
            if other not in trail:
                found = cycle_from(start, other, trail + [other])
                if found:
                    return found
        return None

    circles = [cycle_from(name, name, [name]) for name in modules]
    assert not any(circles), ' -> '.join(next(circle for circle in circles if circle))
