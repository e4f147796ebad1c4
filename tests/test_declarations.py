"""Each optimizer's hyper-parameters are declared once; its signature, checks and docs agree with them."""

import inspect
import re

import numpy as np
import pytest

import stateopt
from stateopt import functional

CLASSES = [stateopt.OptaxOptimizer] + [getattr(stateopt, name) for name in stateopt.OPTIMIZERS]


def _documented(cls) -> list[tuple[str, str]]:
    """``(name, 'type, default ...')`` of each entry of the class docstring's Parameters section."""
    doc = inspect.getdoc(cls)
    section = doc.split('Parameters\n----------\n', 1)[1].split('\n\n', 1)[0]
    return re.findall(r'^(\w+) : (.+)$', section, re.M)


@pytest.mark.parametrize('cls', CLASSES, ids=[cls.__name__ for cls in CLASSES])
def test_signature_checks_and_docs_come_from_the_table(cls):
    table = vars(cls).get('hyperparameters')
    assert table is not None, f'{cls.__name__} declares no hyperparameters table'
    assert inspect.signature(cls.__init__) == table.signature()
    assert '__init__' in vars(cls) and vars(cls)['__init__'].__signature__ is not None
    assert cls._hyperparams == table.stored()
    documented = _documented(cls)
    assert [name for name, _ in documented] == [param.name for param in table.params]
    for (name, text), param in zip(documented, table.params):
        assert text.startswith(param.type), name
        if param.default is not inspect.Parameter.empty:
            assert text.endswith(f'default {param.default!r}'), name
        assert param.doc.strip(), f'{cls.__name__}.{name} has no doc'
    assert inspect.getdoc(cls).count('Parameters\n----------') == 1


@pytest.mark.parametrize('cls', CLASSES[1:], ids=[cls.__name__ for cls in CLASSES[1:]])
def test_defaults_and_the_functional_defaults_are_the_tables(cls):
    table = cls.hyperparameters
    if any(param.default is inspect.Parameter.empty for param in table.params):
        pytest.skip('a required argument (Lookahead\'s base optimizer) has no default to compare')
    optimizer = cls()
    defaults = table.defaults()
    assert optimizer.defaults.keys() == defaults.keys()
    name = next(name for name, value in functional.OPTIMIZERS.items() if value is cls)
    stored = functional._hyperparams(cls, {})
    checked = cls._validated(defaults)  # the table's defaults as its checks store them
    assert stored.keys() == checked.keys(), name
    for key, value in stored.items():
        # dynamic values reach the step in float32, as the classes store them
        assert _float32(value) == _float32(checked[key]), (name, key)


def _float32(value):
    if isinstance(value, tuple):
        return tuple(map(_float32, value))
    if value is None or isinstance(value, (bool, str)):
        return value
    try:
        return np.float32(value)
    except (TypeError, ValueError):
        return value


@pytest.mark.parametrize('cls', CLASSES[1:], ids=[cls.__name__ for cls in CLASSES[1:]])
def test_no_declaration_repeats_the_shared_boilerplate(cls):
    own = vars(cls)
    assert '__init__' not in own or own['__init__'].__doc__.startswith('A new '), \
        f'{cls.__name__} writes its own __init__'
    assert '_setup' not in own


SCHEDULER_CLASSES = [stateopt.LRScheduler] + [getattr(stateopt, name) for name in stateopt.SCHEDULERS]


@pytest.mark.parametrize('cls', SCHEDULER_CLASSES, ids=[cls.__name__ for cls in SCHEDULER_CLASSES])
def test_every_scheduler_documents_its_signature(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    documented = _documented(cls)
    assert [name for name, _ in documented] == [param.name for param in params]
    for (name, text), param in zip(documented, params):
        assert text.endswith(f'default {param.default!r}') or param.default is inspect.Parameter.empty, name
    assert inspect.getdoc(cls).count('Parameters\n----------') == 1
    assert inspect.getdoc(cls).index('Parameters') < inspect.getdoc(cls).index('Examples')
