"""The suite's float comparisons: `assert_close_f32`'s tolerances, and a guard against fragile ones.

A comparison of two float32 results of different compiled code (eager, jit, for_loop, scan,
another CPU, a GPU, a float64 reference) must allow for float32 rounding, near zero too; the
guard scans the test sources for comparisons that do not, and names them by file and line.
"""

import ast
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F32_EPS, F32_STEP_RTOL, assert_close_f32, f32_tolerances

TESTS = Path(__file__).parent

#: The functions whose tolerance keywords the guard checks.
CLOSE_CALLS = {'assert_allclose', 'allclose', 'isclose'}
#: A relative tolerance below this (about 8 float32 ulps) cannot hold across compiled paths.
MIN_RTOL = 1e-6


def _name(node: ast.AST) -> str:
    """The called name: ``assert_allclose`` for ``np.testing.assert_allclose(...)``."""
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ''


def _number(node: ast.AST | None) -> float | None:
    """The value of a literal number (``1e-6``, ``-1``), else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _number(node.operand)
        return None if value is None else -value
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    return None


def _problems_of_close(call: ast.Call) -> list[str]:
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    if None in keywords:                                     # **tolerances: checked where they are made
        return []
    rtol = keywords.get('rtol', call.args[2] if len(call.args) > 2 else None)
    atol = keywords.get('atol', call.args[3] if len(call.args) > 3 else None)
    problems = []
    if (value := _number(rtol)) is not None and value < MIN_RTOL:
        problems.append(f'rtol={value:g} is below {MIN_RTOL:g}, about 8 float32 ulps')
    if atol is None or _number(atol) == 0:
        default = " (and numpy's default rtol, 1e-7, is below float32 rounding)" if rtol is None else ''
        problems.append(f'no atol: a relative tolerance alone fails near zero{default}')
    return problems


def _is_float_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and _name(node.func) == 'float'


def _problems_of_compare(compare: ast.Compare) -> list[str]:
    """``float(x) == 0.05``: a float32 value never equals a literal float32 cannot hold."""
    problems = []
    operands = [compare.left, *compare.comparators]
    for op, left, right in zip(compare.ops, operands, operands[1:]):
        if not isinstance(op, (ast.Eq, ast.NotEq)):
            continue
        for value, other in ((left, right), (right, left)):
            number = _number(value)
            if _is_float_call(other) and number is not None and float(np.float32(number)) != number:
                problems.append(f'float(...) == {number!r}, which no float32 equals')
    return problems


def _expected_to_fail(tree: ast.AST) -> set[int]:
    """The ids of the nodes inside ``with pytest.raises(...)`` blocks: demonstrations of failures."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(isinstance(item.context_expr, ast.Call)
                                              and _name(item.context_expr.func) == 'raises'
                                              for item in node.items):
            inside |= {id(child) for statement in node.body for child in ast.walk(statement)}
    return inside


def fragile_comparisons(source: str, filename: str = '<source>') -> list[str]:
    """``file:line: what is fragile`` for every fragile float comparison in ``source``.

    Fragile: ``assert_allclose`` / ``allclose`` / ``isclose`` without an atol, or with a literal
    rtol below ``MIN_RTOL``; ``pytest.approx`` with a literal ``rel`` below ``MIN_RTOL``;
    ``float(x) == c`` for a ``c`` that is not a float32. Use `assert_close_f32`, or
    ``assert_array_equal`` where the same compiled code ran.
    Comparisons inside ``with pytest.raises(...)`` are expected to fail and are not counted.
    """
    found = []
    tree = ast.parse(source, filename)
    skipped = _expected_to_fail(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        problems = []
        if isinstance(node, ast.Call) and _name(node.func) in CLOSE_CALLS:
            problems = _problems_of_close(node)
        elif isinstance(node, ast.Call) and _name(node.func) == 'approx':
            rel = next((keyword.value for keyword in node.keywords if keyword.arg == 'rel'), None)
            if (value := _number(rel)) is not None and value < MIN_RTOL:
                problems = [f'approx(rel={value:g}) is below {MIN_RTOL:g}, about 8 float32 ulps']
        elif isinstance(node, ast.Compare):
            problems = _problems_of_compare(node)
        found += [f'{filename}:{node.lineno}: {problem}' for problem in problems]
    return sorted(found, key=lambda line: int(line.split(':')[1]))


def test_no_test_compares_floats_fragilely():
    found = [line for path in sorted(TESTS.glob('*.py'))
             for line in fragile_comparisons(path.read_text(), path.name)]
    assert not found, 'fragile float comparisons (use assert_close_f32):\n' + '\n'.join(found)


@pytest.mark.parametrize('line, problems', [
    ('np.testing.assert_allclose(a, b)', ["fails near zero (and numpy's default rtol"]),
    ('np.testing.assert_allclose(a, b, rtol=1e-6)', ['no atol']),
    ('np.testing.assert_allclose(a, b, rtol=1e-7)', ['rtol=1e-07 is below 1e-06', 'no atol']),
    ('np.testing.assert_allclose(a, b, 1e-5, 0.0)', ['no atol']),
    ('assert_allclose(a, b, rtol=1e-7, atol=1e-6)', ['rtol=1e-07 is below']),
    ('ok = np.allclose(a, b, rtol=1e-5)', ['no atol']),
    ('assert x == pytest.approx(y, rel=1e-7)', ['approx(rel=1e-07)']),
    ('assert float(x) == 0.05', ['0.05, which no float32 equals']),
    ('assert 0.1 != float(x)', ['0.1, which no float32 equals']),
])
def test_the_guard_names_each_fragile_comparison(line, problems):
    found = fragile_comparisons(f'\n\n{line}\n', 'test_x.py')
    assert len(found) == len(problems), found
    for got, problem in zip(found, problems):
        assert got.startswith('test_x.py:3: ') and problem in got, found


@pytest.mark.parametrize('line', [
    'np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)',
    'np.testing.assert_allclose(lrs, 0.0, atol=1e-9)',
    'np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)',
    'np.testing.assert_allclose(a, b, **f32_tolerances(steps=3))',
    'assert_close_f32(a, b, steps=12)',
    'np.testing.assert_array_equal(a, b)',
    'assert x == pytest.approx(0.007)',
    'assert float(x) == -1.5',
    'assert x == 0.05',
    'with pytest.raises(AssertionError):\n    np.testing.assert_allclose(a, b, rtol=1e-7)',
])
def test_the_guard_passes_portable_comparisons(line):
    assert fragile_comparisons(line) == []


# -- assert_close_f32 -------------------------------------------------------------------------

def test_one_ulp_of_the_operands_passes_near_zero_where_an_rtol_alone_fails():
    """A model output near zero, summed from terms of order 1, taken by eager and jitted code."""
    jitted = np.float32([-0.016400, 0.121867, -0.000805320218205452])
    eager = np.float32([-0.016400, 0.121867, -0.0008053798228502274])
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    assert_close_f32(jitted, eager, scale=1.0)
    with pytest.raises(AssertionError):                      # at the scale of the output near zero
        assert_close_f32(jitted, eager, scale=1e-3)


@pytest.mark.parametrize('steps, ulps, passes', [
    (1, 15, True), (1, 17, False), (4, 60, True), (4, 70, False), (12, 190, True), (12, 200, False),
])
def test_the_tolerance_grows_by_sixteen_ulps_a_step(steps, ulps, passes):
    desired = np.float32([1.0, -0.5, 2.0])
    actual = desired.astype(np.float64) * (1 + ulps * F32_EPS)
    if passes:
        assert_close_f32(actual, desired, steps=steps, scale=0.0)
    else:
        with pytest.raises(AssertionError):
            assert_close_f32(actual, desired, steps=steps, scale=0.0)


def test_the_default_scale_is_each_arrays_largest_magnitude():
    desired = {'small': np.float32([1e-3, 0.0]), 'large': np.float32([2.0, 0.0])}
    off = {'small': np.float32([1e-3, 1e-9]), 'large': np.float32([2.0, 3e-6])}
    assert_close_f32(off, desired)                           # atol: 1.9e-9 and 3.8e-6
    with pytest.raises(AssertionError, match=r"\['small'\]"):
        assert_close_f32({**off, 'small': np.float32([1e-3, 1e-8])}, desired)
    assert f32_tolerances(steps=2, scale=0.5) == dict(rtol=2 * F32_STEP_RTOL, atol=F32_STEP_RTOL)


def test_integer_leaves_must_be_equal_and_structures_the_same():
    state = {'count': jnp.int32(3), 'mu': jnp.float32([0.5, 1.0])}
    assert_close_f32(state, {'count': np.int32(3), 'mu': np.float32([0.5, 1.0 + F32_EPS])})
    with pytest.raises(AssertionError, match=r"moments \['count'\]"):
        assert_close_f32(state, {**state, 'count': jnp.int32(4)}, err_msg='moments')
    with pytest.raises(AssertionError, match='structures differ'):
        assert_close_f32(state, {'mu': state['mu']})
    with pytest.raises(AssertionError, match='structures differ'):   # a list is a pytree, not an array
        assert_close_f32([0.1, 0.2], np.float32([0.1, 0.2]))
    assert_close_f32([[0.1], (0.2, 3)], [[np.float32(0.1)], (np.float32(0.2), 3)])
