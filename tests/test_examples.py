"""Every example in a public class's docstrings runs, methods included.

pytest's ``--doctest-modules`` skips the methods of classes that present themselves as
``stateopt.X`` (their ``__module__`` is not the file's), so they are collected here.
"""

import doctest
import inspect

import pytest

import stateopt


def _examples() -> list[doctest.DocTest]:
    finder, found = doctest.DocTestFinder(recurse=True), {}
    for name in stateopt.__all__:
        obj = getattr(stateopt, name)
        if inspect.isclass(obj):
            for test in finder.find(obj, f'stateopt.{name}', module=False, globs={}):
                if test.examples:
                    found.setdefault(test.name, test)
    return list(found.values())


EXAMPLES = _examples()


def test_the_examples_are_found():
    names = {test.name for test in EXAMPLES}
    assert {'stateopt.ParamGroup.check', 'stateopt.UniqueStateManager.get_state_by_path',
            'stateopt.LRScheduler.lr_at'} <= names


@pytest.mark.parametrize('test', EXAMPLES, ids=[test.name for test in EXAMPLES])
def test_example_runs_as_written(test):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    result = runner.run(test, out=report.append)
    assert not result.failed, ''.join(report)
