# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Learning-rate schedulers: see them, attach them, step them inside `jit`
#
# First we draw six schedules with `stateopt.plot_schedule` before training anything. Then
# we train an MLP on scikit-learn's digits twice:
#
# - with a warm-up cosine schedule that drives two param groups at different lrs, stepped
#   inside the compiled train step, and we check that the lrs it used are the curves
#   `plot_schedule` drew;
# - with `ReduceLROnPlateau`, which cuts the lr when the validation loss stops improving,
#   stepped with that loss inside a compiled validation function.
#
# `STATEOPT_FAST=1` runs a short version; `STATEOPT_OUT` chooses where the pictures go
# (default `outputs/`).

# %%
import os

import brainstate
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import stateopt

FAST = os.environ.get('STATEOPT_FAST') == '1'
OUT = os.environ.get('STATEOPT_OUT', 'outputs')
os.makedirs(OUT, exist_ok=True)
EPOCHS = 6 if FAST else 40
BATCH = 64

# %% [markdown]
# ## A gallery of schedules
#
# A scheduler on its own (not yet attached to an optimizer) already knows its whole curve:
# `stateopt.plot_schedule(scheduler, steps, ax=...)` draws it from step 0 without stepping
# the scheduler. Six common shapes over 200 steps, all peaking at `lr=0.1`:
#
# - `StepLR` halves the lr every 50 steps;
# - `CosineAnnealingLR` decays along half a cosine;
# - `OneCycleLR` rises for the first 30% of the steps, then anneals far below its start;
# - `WarmupCosineSchedule` warms up linearly for 20 steps, then decays along a cosine;
# - `CyclicLR` in `'triangular2'` mode goes up and down, halving the height every cycle;
# - `SequentialLR` runs one scheduler, then another from a milestone on: here a `LinearLR`
#   warm-up from 1% of the lr, then a `CosineAnnealingLR`. From the milestone on it is the
#   `WarmupCosineSchedule` curve, built from two torch-style parts.

# %%
GALLERY_STEPS = 200
WARMUP = 20
gallery = {
    'StepLR(step_size=50, gamma=0.5)': stateopt.StepLR(
        base_lr=0.1, step_size=50, gamma=0.5),
    'CosineAnnealingLR(T_max=200)': stateopt.CosineAnnealingLR(
        base_lr=0.1, T_max=GALLERY_STEPS),
    'OneCycleLR(max_lr=0.1)': stateopt.OneCycleLR(
        max_lr=0.1, total_steps=GALLERY_STEPS),
    'WarmupCosineSchedule': stateopt.WarmupCosineSchedule(
        base_lr=0.1, warmup_steps=WARMUP, total_steps=GALLERY_STEPS),
    "CyclicLR(mode='triangular2')": stateopt.CyclicLR(
        base_lr=0.01, max_lr=0.1, step_size_up=25, mode='triangular2'),
    'SequentialLR(LinearLR, CosineAnnealingLR)': stateopt.SequentialLR(
        [stateopt.LinearLR(base_lr=0.1, start_factor=0.01, total_iters=WARMUP),
         stateopt.CosineAnnealingLR(base_lr=0.1, T_max=GALLERY_STEPS - WARMUP)],
        milestones=[WARMUP]),
}
figure, grid = plt.subplots(2, 3, figsize=(12, 6), sharey=True)
curves = {}
for axes, (title, scheduler) in zip(grid.flat, gallery.items()):
    stateopt.plot_schedule(scheduler, GALLERY_STEPS, ax=axes)
    axes.set_title(title, fontsize=10)
    curves[title] = axes.get_lines()[0].get_ydata()
figure.tight_layout()
figure.savefig(os.path.join(OUT, 'scheduler_gallery.png'), dpi=80)
print('saved', os.path.join(OUT, 'scheduler_gallery.png'))

step_lr = curves['StepLR(step_size=50, gamma=0.5)']
np.testing.assert_allclose(step_lr[[0, 49, 50, 100, 199]],
                           [0.1, 0.1, 0.05, 0.025, 0.0125], rtol=1e-6)
np.testing.assert_allclose(curves['CosineAnnealingLR(T_max=200)'][[0, 100]],
                           [0.1, 0.05], rtol=1e-5)
cyclic_heights = curves["CyclicLR(mode='triangular2')"][[25, 75, 125]] - 0.01
np.testing.assert_allclose(cyclic_heights, [0.09, 0.045, 0.0225], rtol=1e-5)
one_cycle = curves['OneCycleLR(max_lr=0.1)']
assert np.argmax(one_cycle) == int(0.3 * GALLERY_STEPS) - 1
assert one_cycle[-1] < one_cycle[0] / 1000
sequential = curves['SequentialLR(LinearLR, CosineAnnealingLR)']
assert np.argmax(sequential) == WARMUP and np.all(np.diff(sequential[:WARMUP + 1]) > 0)
np.testing.assert_allclose(sequential[WARMUP:], curves['WarmupCosineSchedule'][WARMUP:],
                           rtol=1e-5, atol=1e-8)
assert all(scheduler.last_epoch.value == 0 for scheduler in gallery.values()), \
    'drawing steps nothing'

# %% [markdown]
# ## Data and model
#
# The digits are split 60/20/20 into train, validation and test sets. The MLP's output
# layer is a module of its own, so it can get a param group of its own. `train` records the
# lr of every step and the validation loss of every epoch.

# %%
digits = load_digits()
x = (digits.data / 16.0).astype(np.float32)
y = digits.target.astype(np.int32)
x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=0)
x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5,
                                                random_state=0)
steps_per_epoch = len(x_train) // BATCH
total_steps = EPOCHS * steps_per_epoch
print(f'{len(x_train)} training, {len(x_val)} validation and {len(x_test)} test '
      f'images; {total_steps} steps')


class MLP(brainstate.nn.Module):
    def __init__(self, n_in=64, n_hidden=128, n_out=10):
        super().__init__()
        self.hidden = brainstate.nn.Linear(n_in, n_hidden)
        self.output = brainstate.nn.Linear(n_hidden, n_out)

    def __call__(self, x):
        return self.output(jax.nn.relu(self.hidden(x)))


def cross_entropy(model, x, y):
    log_probs = jax.nn.log_softmax(model(x))
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def batches(epoch: int):
    order = np.random.default_rng(epoch).permutation(len(x_train))
    order = order[:steps_per_epoch * BATCH]
    return np.array_split(order, steps_per_epoch)


def train(model, optimizer, train_step, validate):
    """Train for EPOCHS epochs, calling ``validate(x_val, y_val)`` after each one.

    Returns the lrs of every step (one column per group), the validation losses and the
    final test accuracy."""
    lrs, val_losses = [], []
    for epoch in range(EPOCHS):
        for index in batches(epoch):
            lrs.append(optimizer.get_last_lr())
            train_step(x_train[index], y_train[index])
        val_losses.append(float(validate(x_val, y_val)))
    test_accuracy = float(jnp.mean(jnp.argmax(model(x_test), axis=1) == y_test))
    return {'lr': np.array(lrs), 'val_loss': val_losses, 'test_accuracy': test_accuracy}


# %% [markdown]
# ## Two param groups, one schedule, stepped inside `jit`
#
# A scheduler passed as `lr=` attaches to the optimizer and drives every param group. Group
# 0 takes the scheduler's `base_lr=1e-2`; the output layer's group, added with `lr=2e-3`,
# follows the same shape from its own lr, so the ratio of the two lrs stays 5 at every step.
# `plot_schedule` of the attached scheduler draws one curve per group.
#
# `schedule.step()` sits inside the compiled train step: a scheduler's counters are States,
# so the step carries them in and out like the parameters, and the lr is an input of the
# compiled function rather than a constant. The step is traced once, whatever the lr does.

# %%
brainstate.random.seed(0)
model = MLP()
params = model.states(brainstate.ParamState)
schedule = stateopt.WarmupCosineSchedule(base_lr=1e-2, warmup_steps=steps_per_epoch,
                                         total_steps=total_steps)
optimizer = stateopt.AdamW(lr=schedule, weight_decay=1e-4)
optimizer.register_trainable_weights(params)
optimizer.add_param_group(model.output.states(brainstate.ParamState), lr=2e-3)
print(f'base lr of each group: {schedule.base_lrs}')

figure, axes = stateopt.plot_schedule(schedule, total_steps)
axes.legend(['group 0: the hidden layer', 'group 1: the output layer'])
figure.savefig(os.path.join(OUT, 'scheduler_two_groups.png'), dpi=80)
print('saved', os.path.join(OUT, 'scheduler_two_groups.png'))
drawn = np.stack([line.get_ydata() for line in axes.get_lines()], axis=1)

traces = {'count': 0}


@stateopt.donating_jit
def cosine_train_step(xb, yb):
    traces['count'] += 1
    grads, loss = brainstate.transform.grad(
        lambda: cross_entropy(model, xb, yb), grad_states=params, return_value=True)()
    optimizer.update(grads)
    schedule.step()
    return loss


@brainstate.transform.jit
def validation_loss(xs, ys):
    return cross_entropy(model, xs, ys)


cosine = train(model, optimizer, cosine_train_step, validation_loss)
np.testing.assert_allclose(cosine['lr'], drawn, rtol=1e-6, atol=1e-12)
positive = cosine['lr'][:, 1] > 0
np.testing.assert_allclose(cosine['lr'][positive, 0] / cosine['lr'][positive, 1], 5.0,
                           rtol=1e-5)
assert traces['count'] == 1, 'stepping the scheduler must not recompile the train step'
print(f'{total_steps} steps: the lrs used are the curves plot_schedule drew; '
      f'the train step was traced {traces["count"]} time')

# %% [markdown]
# ## `ReduceLROnPlateau`, driven by the validation loss
#
# `ReduceLROnPlateau` cannot know its curve in advance: it multiplies the lr by `factor=0.3`
# once the validation loss has gone more than `patience=2` epochs without improving on its
# best. `plot_schedule` draws it flat; we record its lr as we train. `plateau.step(loss)`
# takes the loss as a jax scalar, so it steps inside the compiled validation function.

# %%
brainstate.random.seed(0)
model = MLP()
params = model.states(brainstate.ParamState)
plateau = stateopt.ReduceLROnPlateau(base_lr=1e-2, factor=0.3, patience=2)
optimizer = stateopt.AdamW(lr=plateau, weight_decay=1e-4)
optimizer.register_trainable_weights(params)


@stateopt.donating_jit
def plateau_train_step(xb, yb):
    grads, loss = brainstate.transform.grad(
        lambda: cross_entropy(model, xb, yb), grad_states=params, return_value=True)()
    optimizer.update(grads)
    return loss


@brainstate.transform.jit
def validate_and_step(xs, ys):
    loss = cross_entropy(model, xs, ys)
    plateau.step(loss)
    return loss


reduced = train(model, optimizer, plateau_train_step, validate_and_step)

# the lr each epoch trained with, then the lr after the last validation
epoch_lr = np.append(reduced['lr'][::steps_per_epoch, 0], optimizer.get_last_lr()[0])
cuts = np.flatnonzero(epoch_lr[1:] < epoch_lr[:-1])   # epochs whose validation cut it
for cut in cuts:
    best_before = min(reduced['val_loss'][:cut - plateau.patience])
    stalled = reduced['val_loss'][cut - plateau.patience:cut + 1]
    assert min(stalled) >= best_before * (1 - plateau.threshold), \
        'the lr is cut only after more than `patience` epochs without improvement'
    np.testing.assert_allclose(epoch_lr[cut + 1], epoch_lr[cut] * plateau.factor,
                               rtol=1e-6)
print(f'ReduceLROnPlateau cut the lr after epochs {(cuts + 1).tolist()}: '
      f'from {epoch_lr[0]:.0e} to {epoch_lr[-1]:.2e}')
if not FAST:
    assert len(cuts) > 0, 'the validation loss plateaus in the run: the lr must be cut'

# %% [markdown]
# ## The two runs side by side
#
# The cosine run's lr follows the curve drawn before training. The plateau run's lr drops in
# steps: once the validation loss stops improving, every three epochs. The lr axis is
# logarithmic, to show those steps; it cannot show the warm-up's first lr, 0, so the cosine
# curves start at the first step's lr, and the axis spans every lr the runs used.

# %%
for name, run in (('warm-up cosine', cosine), ('ReduceLROnPlateau', reduced)):
    print(f'{name:>17}: best validation loss {min(run["val_loss"]):.4f}, '
          f'test accuracy {run["test_accuracy"]:.3f}')

figure, (loss_axes, lr_axes) = plt.subplots(1, 2, figsize=(10, 4), layout='constrained')
epochs = np.arange(1, EPOCHS + 1)
loss_axes.plot(epochs, cosine['val_loss'], color='C0')
loss_axes.plot(epochs, reduced['val_loss'], color='C1')
loss_axes.set(xlabel='epoch', ylabel='validation loss', yscale='log',
              title='validation loss')
epoch_of_step = np.arange(total_steps) / steps_per_epoch
lrs = np.column_stack([cosine['lr'], reduced['lr'][:, 0]])
lrs = np.where(lrs > 0, lrs, np.nan)          # a log axis has no 0
lr_axes.plot(epoch_of_step, lrs[:, 0], 'C0', label='warm-up cosine, hidden layer')
lr_axes.plot(epoch_of_step, lrs[:, 1], 'C0--', label='warm-up cosine, output layer')
lr_axes.plot(epoch_of_step, lrs[:, 2], 'C1', label='ReduceLROnPlateau')
lr_axes.set(xlabel='epoch', ylabel='learning rate', yscale='log', title='learning rate',
            ylim=(np.nanmin(lrs) / 2, np.nanmax(lrs) * 2))
figure.legend(loc='outside lower center', ncols=3)   # below the plots: covers no curve
figure.savefig(os.path.join(OUT, 'scheduler_training.png'), dpi=100)
print('saved', os.path.join(OUT, 'scheduler_training.png'))
