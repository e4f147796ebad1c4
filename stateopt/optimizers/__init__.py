"""The optimizer catalogue, one module per algorithm family.

Each module holds its optimizers' declarations (a table of hyper-parameters, the rule
and an example in the docstring) and the transforms of their update directions.
"""

from .adam import Adam, AdamW
from .sgd import SGD, Momentum, MomentumNesterov

__all__ = ['SGD', 'Momentum', 'MomentumNesterov', 'Adam', 'AdamW']
