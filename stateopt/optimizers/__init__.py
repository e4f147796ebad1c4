"""The optimizer catalogue, one module per algorithm family.

Each module holds its optimizers' declarations (a table of hyper-parameters, the rule
and an example in the docstring) and the transforms of their update directions.
"""

# -- families from papers and optax (lamb, lars, lookahead, yogi, lbfgs, adabelief, lion, sm3,
#    novograd, fromage, muon, schedule_free, prodigy, adopt, adan, sophia) ----------------------
# isort: split
from .adabelief import AdaBelief
from .adan import Adan
from .adopt import ADOPT
from .fromage import Fromage
from .lamb import Lamb
from .lars import Lars
from .lbfgs import LBFGS
from .lion import Lion
from .lookahead import Lookahead
from .muon import Muon
from .novograd import Novograd
from .prodigy import Prodigy
from .schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD
from .sm3 import SM3
from .sophia import Sophia
from .yogi import Yogi

# isort: split

# -- torch-named families (adagrad, adadelta, rmsprop, adamax, nadam, radam, rprop, adafactor) --
from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .nadam import NAdam, Nadam, NAdamW
from .radam import RAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .sgd import SGD, Momentum, MomentumNesterov

#: Every optimizer class of the catalogue, in documentation order.
__all__ = [
    'SGD', 'Momentum', 'MomentumNesterov', 'Adam', 'AdamW',
    'Adagrad', 'Adadelta', 'RMSprop', 'Adamax', 'Nadam', 'NAdam', 'RAdam', 'Rprop', 'Adafactor',
    'Lamb', 'Lars', 'Lookahead', 'Yogi', 'LBFGS', 'AdaBelief', 'Lion', 'SM3', 'Novograd', 'Fromage',
    'Muon', 'ScheduleFreeSGD', 'ScheduleFreeAdamW', 'Prodigy', 'ADOPT', 'Adan', 'NAdamW', 'Sophia',
]
