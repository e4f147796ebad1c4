"""Black-box search over parameters: scipy.optimize.minimize (and, with nevergrad, gradient-free search).

These are not gradient-step optimizers: each call of ``minimize`` runs a whole search, either
over the registered States (starting from their values, writing the best point back) or over
a box given as ``bounds`` (braintools' form: random restarts inside the box).
"""

from ._nevergrad import NevergradOptimizer
from ._scipy import ScipyOptimizer

__all__ = ['ScipyOptimizer', 'NevergradOptimizer']
