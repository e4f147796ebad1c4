"""The public protocol between an optimizer and whatever drives its hyper-parameters."""

import doctest

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import stateopt


def _opt(cls=stateopt.SGD, **kwargs):
    return cls(**kwargs).register_trainable_weights({'w': brainstate.ParamState(jnp.ones(2))})


class HalvingDriver:
    """A driver written against the public protocol only: halves every group's lr per step."""

    def __init__(self, optimizer, max_groups=3):
        self.optimizer, self.max_groups, self.seen = optimizer, max_groups, []
        optimizer.scheduler_attached(self)

    def step(self):
        for group in self.optimizer.param_groups:
            group.assign('lr', group['lr'] / 2)

    def check_new_group(self, hyperparams):
        if len(self.optimizer.param_groups) >= self.max_groups:
            raise ValueError(f'this driver takes {self.max_groups} groups')
        self.seen.append(('check', float(hyperparams['lr'])))

    def group_added(self, group):
        self.seen.append(('added', group.index))


def test_a_driver_built_on_the_public_protocol_drives_and_is_told_of_groups():
    opt = _opt(lr=0.8)
    driver = HalvingDriver(opt)
    assert opt.lr_scheduler is driver
    opt.add_param_group({'b': brainstate.ParamState(jnp.ones(3))}, lr=0.4)
    driver.step()
    assert [round(float(lr), 6) for lr in opt.get_last_lr()] == [0.4, 0.2]
    assert driver.seen == [('check', 0.4), ('added', 1)]
    opt.add_param_group({'c': brainstate.ParamState(jnp.ones(1))})
    with pytest.raises(ValueError, match='this driver takes 3 groups'):
        opt.add_param_group({'d': brainstate.ParamState(jnp.ones(1))})
    assert [name for group in opt.param_groups for name in group.names] == ['w', 'b', 'c']


def test_a_second_driver_is_refused_and_nothing_changes():
    opt = _opt(lr=0.8)
    first = HalvingDriver(opt)
    with pytest.raises(ValueError, match=r'already driven by a HalvingDriver.*SequentialLR\(optimizer'):
        stateopt.StepLR(opt, step_size=1)
    assert opt.lr_scheduler is first and float(opt.param_groups[0]['lr']) == pytest.approx(0.8)


def test_a_cycled_momentum_the_optimizer_cannot_follow_is_refused_before_anything_changes():
    opt = _opt(stateopt.RMSprop, lr=0.1)           # momentum=0: RMSprop keeps no buffer
    before = opt.state_dict()
    with pytest.raises(ValueError, match=r'OneCycleLR cycles the momentum.*keeps no momentum buffer'):
        stateopt.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    assert opt.schedulers == []
    np.testing.assert_equal(opt.state_dict()['param_groups'], before['param_groups'])


#: key, value -> what ``group[key] = value`` raises, and so ``group.check(key, value)``.
REFUSED = {
    'negative lr': ('lr', -1.0, ValueError, 'lr must be >= 0'),
    'unknown key': ('betas', (0.9, 0.99), KeyError, "SGD has no hyper-parameter 'betas'"),
    'static key': ('nesterov', True, ValueError, "'nesterov' is fixed when the group is created"),
    'params': ('params', {}, KeyError, "a group's params are set by add_param_group"),
    'momentum of a bufferless group': ('momentum', 0.9, ValueError, 'keeps no momentum buffer'),
}


@pytest.mark.parametrize('key, value, error, match', REFUSED.values(), ids=REFUSED)
def test_check_refuses_what_assignment_refuses_and_changes_nothing(key, value, error, match):
    opt = _opt(lr=0.1)
    group = opt.param_groups[0]
    before = group.hyperparams()
    with pytest.raises(error, match=match):
        group.check(key, value)
    with pytest.raises(error, match=match):
        group[key] = value
    assert group.hyperparams() == before


def test_check_returns_the_value_and_assign_writes_without_checks():
    opt = _opt(stateopt.SGD, lr=0.1, momentum=0.5)
    group = opt.param_groups[0]
    assert group.check('momentum', 0.9) == 0.9 and group['momentum'] == pytest.approx(0.5)
    group.assign('lr', 0.25)
    assert float(group['lr']) == 0.25


#: The protocol's and the rule hooks' methods with examples. Their classes present themselves
#: as ``stateopt.X``, so the doctest collector of the modules that define them skips them.
EXAMPLES = {
    'ParamGroup.assign': stateopt.ParamGroup.assign,
    'ParamGroup.check': stateopt.ParamGroup.check,
    'LRScheduler.lr_at': stateopt.LRScheduler.lr_at,
    'LRScheduler.next_lr': stateopt.LRScheduler.next_lr,
}


@pytest.mark.parametrize('method', EXAMPLES.values(), ids=EXAMPLES)
def test_the_protocol_methods_examples_run_as_written(method):
    test = doctest.DocTestParser().get_doctest(method.__doc__, {}, method.__qualname__, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=lambda text: None)
    assert result.attempted >= 2, method.__qualname__
    assert result.failed == 0, f'{result.failed} of {method.__qualname__}\'s examples fail'


class PlainGroup(dict):
    """A param group of a plain optimizer: the group side of the public protocol."""

    def __init__(self, index, lr):
        super().__init__(lr=lr)
        self.index, self.initial_lr, self.lr_schedule, self.names = index, lr, None, ['p']

    def assign(self, key, value):
        self[key] = value


class PlainOptimizer:
    """Not a stateopt optimizer: only the protocol a scheduler uses (groups, defaults, scheduler_attached)."""

    def __init__(self, lrs):
        self.param_groups = [PlainGroup(i, lr) for i, lr in enumerate(lrs)]
        self.defaults = {'lr': lrs[0]}
        self.driver = None

    def scheduler_attached(self, scheduler, cycles=None, first=None):
        self.driver = scheduler


@pytest.mark.parametrize('form', ['torch', 'lr='])
def test_a_scheduler_drives_any_optimizer_that_speaks_the_protocol(form):
    opt = PlainOptimizer([0.8, 0.2])
    if form == 'torch':
        sched = stateopt.StepLR(opt, step_size=1, gamma=0.5)
    else:
        sched = stateopt.StepLR(base_lr=0.8, step_size=1, gamma=0.5)
        sched.attach_optimizer(opt)
    assert opt.driver is sched
    for _ in range(2):
        sched.step()
    # torch's StepLR: each group's lr is its base lr times gamma ** (steps // step_size)
    assert [round(float(group['lr']), 6) for group in opt.param_groups] == [0.2, 0.05]
    with pytest.raises(TypeError, match='expects a stateopt optimizer'):
        stateopt.StepLR(base_lr=0.1).attach_optimizer(object())


def _composite(kind):
    if kind == 'SequentialLR':
        return stateopt.SequentialLR([stateopt.ConstantLR(base_lr=0.8, factor=0.5, total_iters=1),
                                      stateopt.StepLR(base_lr=0.8, step_size=1, gamma=0.5)], milestones=[1])
    return stateopt.ChainedScheduler([stateopt.StepLR(base_lr=0.8, step_size=1, gamma=0.5),
                                      stateopt.ExponentialLR(base_lr=0.8, gamma=0.5)])


# Each group's lr after 0, 1 and 2 steps, from torch's rules with base lr b:
# SequentialLR: ConstantLR (factor 0.5 for 1 step) gives b/2 at step 0; at the milestone StepLR
# starts fresh (b), then halves each step (b/2).
# ChainedScheduler: StepLR and ExponentialLR both halve each step, so b, b/4, b/16.
COMPOSITE_LRS = {'SequentialLR': [0.5, 1.0, 0.5], 'ChainedScheduler': [1.0, 0.25, 0.0625]}


@pytest.mark.parametrize('kind', COMPOSITE_LRS)
def test_a_composite_drives_a_plain_optimizer_through_the_same_protocol(kind):
    """A composite reaches the optimizer through the calls a plain scheduler uses, and nothing else."""
    opt = PlainOptimizer([0.8, 0.2])
    sched = _composite(kind)
    sched.attach_optimizer(opt)
    assert opt.driver is sched
    factors = COMPOSITE_LRS[kind]
    assert [float(group['lr']) for group in opt.param_groups] == pytest.approx(
        [0.8 * factors[0], 0.2 * factors[0]], rel=1e-6, abs=0)
    sched.step()
    # a group added mid-run joins at the current step with its own base lr
    opt.param_groups.append(PlainGroup(2, 0.4))
    sched.check_new_group({'lr': 0.4})
    sched.group_added(opt.param_groups[-1])
    assert float(opt.param_groups[2]['lr']) == pytest.approx(0.4 * factors[1], rel=1e-6, abs=0)
    sched.step()
    assert [float(group['lr']) for group in opt.param_groups] == pytest.approx(
        [0.8 * factors[2], 0.2 * factors[2], 0.4 * factors[2]], rel=1e-6, abs=0)
