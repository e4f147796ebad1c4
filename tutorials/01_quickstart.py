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
# # Quickstart: train an MLP on the digits data set
#
# A brainstate MLP learns scikit-learn's bundled 8x8 digits with `stateopt.AdamW` and a
# warm-up cosine schedule. The whole train step (forward, backward, update, scheduler step)
# is one compiled function. Along the way we save a checkpoint, and at the end we resume
# from it in a fresh model and optimizer and check that the resumed run continues exactly
# as the uninterrupted one did.
#
# Run it as a script (`python tutorials/01_quickstart.py`) or open it as a notebook with
# jupytext. `STATEOPT_FAST=1` runs a short version; `STATEOPT_OUT` chooses where the
# pictures and the checkpoint go (default `outputs/`).

# %%
import os

import brainstate
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import stateopt

FAST = os.environ.get('STATEOPT_FAST') == '1'
OUT = os.environ.get('STATEOPT_OUT', 'outputs')
os.makedirs(OUT, exist_ok=True)
EPOCHS = 4 if FAST else 30
SAVE_AT = EPOCHS // 2          # the checkpoint is taken after this epoch
BATCH = 64

# %% [markdown]
# ## Data
#
# 1797 images of 8x8 pixels in 16 grey levels, split 75/25 into train and test.

# %%
digits = load_digits()
x = (digits.data / 16.0).astype(np.float32)
y = digits.target.astype(np.int32)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25,
                                                    random_state=0)
steps_per_epoch = len(x_train) // BATCH
total_steps = EPOCHS * steps_per_epoch
print(f'{len(x_train)} training and {len(x_test)} test images; {total_steps} steps')

# %% [markdown]
# ## Model, optimizer and schedule
#
# The scheduler is passed as `lr=`: it attaches to the optimizer and drives every param
# group. Its counters are States, so stepping it inside the compiled train step works.

# %%
class MLP(brainstate.nn.Module):
    def __init__(self, n_in=64, n_hidden=128, n_out=10):
        super().__init__()
        self.l1 = brainstate.nn.Linear(n_in, n_hidden)
        self.l2 = brainstate.nn.Linear(n_hidden, n_out)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def build(seed: int):
    """A model, its optimizer and its scheduler, freshly initialised from ``seed``."""
    brainstate.random.seed(seed)
    model = MLP()
    params = model.states(brainstate.ParamState)
    schedule = stateopt.WarmupCosineSchedule(base_lr=3e-3, warmup_steps=steps_per_epoch,
                                             total_steps=total_steps)
    optimizer = stateopt.AdamW(lr=schedule, weight_decay=1e-4)
    optimizer.register_trainable_weights(params)

    def loss_fn(xb, yb):
        logits = model(xb)
        log_probs = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_probs, yb[:, None], axis=1))

    @stateopt.donating_jit
    def train_step(xb, yb):
        grads, loss = brainstate.transform.grad(
            loss_fn, grad_states=params, return_value=True)(xb, yb)
        optimizer.update(grads)
        schedule.step()
        return loss

    @brainstate.transform.jit
    def accuracy(xs, ys):
        return jnp.mean(jnp.argmax(model(xs), axis=1) == ys)

    return params, optimizer, schedule, train_step, accuracy


params, optimizer, schedule, train_step, accuracy = build(seed=0)
print(optimizer)

# %% [markdown]
# ## Train
#
# Each epoch visits the training images in a fixed, seeded order, so a resumed run sees the
# same batches. We record the loss and the learning rate of every step.

# %%
def batches(epoch: int):
    order = np.random.default_rng(epoch).permutation(len(x_train))
    order = order[:steps_per_epoch * BATCH]
    return np.array_split(order, steps_per_epoch)


def train(epochs, train_step, accuracy, optimizer, log):
    # a resumed run's bar counts on from the checkpoint: SAVE_AT/EPOCHS to EPOCHS/EPOCHS
    bar = tqdm(epochs, desc='training', unit='epoch', initial=epochs.start,
               total=EPOCHS)
    for epoch in bar:
        for index in batches(epoch):
            log['lr'].append(optimizer.get_last_lr()[0])
            log['loss'].append(float(train_step(x_train[index], y_train[index])))
        bar.set_postfix(loss=f'{np.mean(log["loss"][-steps_per_epoch:]):.4f}',
                        test_acc=f'{float(accuracy(x_test, y_test)):.3f}')
        if epoch + 1 == SAVE_AT and 'checkpoint' in log:
            target = {'model': params, 'optimizer': optimizer, 'epoch': epoch + 1}
            stateopt.save_checkpoint(log['checkpoint'], target)


checkpoint = os.path.join(OUT, 'quickstart.msgpack')
log = {'loss': [], 'lr': [], 'checkpoint': checkpoint}
train(range(EPOCHS), train_step, accuracy, optimizer, log)
test_accuracy = float(accuracy(x_test, y_test))
final_loss = np.mean(log['loss'][-steps_per_epoch:])
print(f'steps: {int(optimizer.step_count.value)}  final loss: {final_loss:.4f}'
      f'  test accuracy: {test_accuracy:.3f}')

# %% [markdown]
# ## Curves
#
# The loss falls fast during the warm-up and flattens as the cosine schedule brings the
# learning rate down to zero.

# %%
figure, (loss_axes, lr_axes) = plt.subplots(1, 2, figsize=(9, 3.2))
window = np.ones(steps_per_epoch) / steps_per_epoch
smooth = np.convolve(log['loss'], window, mode='valid')
loss_axes.plot(log['loss'], lw=0.6, alpha=0.5, label='per step')
loss_axes.plot(np.arange(steps_per_epoch - 1, len(log['loss'])), smooth,
               label='epoch mean')
loss_axes.set(xlabel='step', ylabel='training loss', yscale='log', title='loss')
loss_axes.legend()
lr_axes.plot(log['lr'])
lr_axes.set(xlabel='step', ylabel='learning rate', title='WarmupCosineSchedule')
lr_axes.axvline(SAVE_AT * steps_per_epoch, color='grey', ls=':', label='checkpoint')
lr_axes.legend()
figure.tight_layout()
figure.savefig(os.path.join(OUT, 'quickstart_curves.png'), dpi=100)
print('saved', os.path.join(OUT, 'quickstart_curves.png'))

# %% [markdown]
# ## Resume from the checkpoint
#
# A fresh model, optimizer and scheduler, built from another seed, load the checkpoint:
# parameters, moments, step counts, every group's learning rate and the scheduler's
# position. Training the remaining epochs then reproduces the uninterrupted run bit for bit.

# %%
params2, optimizer2, schedule2, train_step2, accuracy2 = build(seed=1)
restored = stateopt.load_checkpoint(
    checkpoint, {'model': params2, 'optimizer': optimizer2, 'epoch': 0})
start = int(restored.tree['epoch'])
resumed = {'loss': [], 'lr': []}
train(range(start, EPOCHS), train_step2, accuracy2, optimizer2, resumed)

uninterrupted_tail = log['loss'][start * steps_per_epoch:]
same_losses = np.array_equal(resumed['loss'], uninterrupted_tail)
same_params = all(np.array_equal(a, b) for a, b in zip(
    jax.tree.leaves({k: s.value for k, s in params.items()}),
    jax.tree.leaves({k: s.value for k, s in params2.items()})))
print(f'resumed at epoch {start}: '
      f'losses identical to the uninterrupted run: {same_losses}; '
      f'final parameters identical: {same_params}')
assert same_losses and same_params, 'a resumed run must continue exactly'
if not FAST:
    assert test_accuracy > 0.95, 'the quickstart should reach over 95% test accuracy'
