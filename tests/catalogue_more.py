"""Rows of the optimizer table (see catalogue.py) for stateopt/_optimizers_more.py."""

CASES: list = []    # catalogue.Case rows
INVALID: list = []  # (class, kwargs, parameter name) the constructor must refuse
CONVERGE: list = []  # (class, kwargs, steps) that minimise the quadratic and Rosenbrock tests
