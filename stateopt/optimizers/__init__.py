"""The optimizer catalogue, one module per algorithm family.

Each module holds its optimizers' declarations (a table of hyper-parameters, the rule
and an example in the docstring) and the transforms of their update directions.
"""

from .adam import Adam, AdamW
from .sgd import SGD, Momentum, MomentumNesterov

# -- torch-named families (adagrad, adadelta, rmsprop, adamax, nadam, radam, rprop, adafactor) --
from .._optimizers_torch import *  # noqa: F403  (moving to family modules)

# -- families from papers and optax (lamb, lars, lookahead, yogi, lbfgs, adabelief, lion, sm3,
#    novograd, fromage, muon, schedule_free, prodigy, adopt, adan, sophia) ----------------------
from .._optimizers_more import *  # noqa: F403  (moving to family modules)

#: Every optimizer class of the catalogue, in documentation order.
__all__ = [
    'SGD', 'Momentum', 'MomentumNesterov', 'Adam', 'AdamW',
    'Adagrad', 'Adadelta', 'RMSprop', 'Adamax', 'Nadam', 'NAdam', 'RAdam', 'Rprop', 'Adafactor',
    'Lamb', 'Lars', 'Lookahead', 'Yogi', 'LBFGS', 'AdaBelief', 'Lion', 'SM3', 'Novograd', 'Fromage',
    'Muon', 'ScheduleFreeSGD', 'ScheduleFreeAdamW', 'Prodigy', 'ADOPT', 'Adan', 'NAdamW', 'Sophia',
]
