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
# # Fine-tuning with gradient accumulation, a decay mask and an EMA of the weights
#
# A network first learns the ten digits of scikit-learn's `digits` images; then it is
# fine-tuned on a harder question about them, "is the digit 5 or more?", from a few labelled
# images, with the training-loop features of stateopt working together:
#
# - **gradient accumulation**: the labelled set is fed in micro-batches of 8 images, and
#   `gradient_accumulation_steps=4` steps once per 4 of them, on their mean gradient (a
#   batch of 32 that is never in memory at once);
# - **a weight-decay mask**: `weight_decay_mask=stateopt.decay_matrices_only` decays the
#   weight matrices and leaves the biases alone;
# - **non-finite skipping**: `skip_nonfinite=True`, and one corrupted micro-batch (a NaN
#   image) in the run: its step is skipped and counted, and training goes on;
# - **an EMA of the weights**: `stateopt.EMA` averages the weights after every step, and
#   `with ema.swapped():` evaluates the averaged network, restoring the trained weights after.
#
# `STATEOPT_FAST=1` runs a short version; `STATEOPT_OUT` chooses where the picture goes
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
SOURCE_EPOCHS = 3 if FAST else 15
FINE_TUNE_STEPS = 60 if FAST else 400      # applied steps
ACCUMULATE = 4                             # micro-batches per step
MICRO_BATCH = 8
LABELLED = 40                              # labelled images of the new task
EVAL_EVERY = 5

# %% [markdown]
# ## Data
#
# The source task sees every training image with its digit; the fine-tuning task sees only
# `LABELLED` of them, labelled "5 or more", and is tested on every test image.

# %%
digits = load_digits()
images = (digits.data / 16.0).astype(np.float32)
x_train, x_test, digit_train, digit_test = train_test_split(
    images, digits.target.astype(np.int32), test_size=0.3, random_state=0)
rng = np.random.default_rng(0)
labelled = rng.choice(len(x_train), LABELLED, replace=False)
x_fine, y_fine = x_train[labelled], (digit_train[labelled] >= 5).astype(np.int32)
y_fine_test = (digit_test >= 5).astype(np.int32)
print(f'source task: {len(x_train)} images; fine-tuning: {LABELLED}; '
      f'test: {len(x_test)}')


# %%
class Classifier(brainstate.nn.Module):
    def __init__(self, n_classes, n_hidden=64):
        super().__init__()
        self.l1 = brainstate.nn.Linear(64, n_hidden)
        self.l2 = brainstate.nn.Linear(n_hidden, n_hidden)
        self.head = brainstate.nn.Linear(n_hidden, n_classes)

    def __call__(self, x):
        return self.head(jax.nn.relu(self.l2(jax.nn.relu(self.l1(x)))))


def cross_entropy(model, x, y):
    log_probs = jax.nn.log_softmax(model(x))
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def accuracy(model, x, y):
    return float(jnp.mean(jnp.argmax(model(x), axis=1) == y))


# %% [markdown]
# ## Learning the digits
#
# A plain AdamW run on the source task gives the body the fine-tuning starts from.

# %%
brainstate.random.seed(0)
model = Classifier(10)
params = model.states(brainstate.ParamState)
source_opt = stateopt.AdamW(lr=3e-3).register_trainable_weights(params)


@stateopt.donating_jit
def source_step(x, y):
    grads = brainstate.transform.grad(
        lambda: cross_entropy(model, x, y), grad_states=params)()
    source_opt.update(grads)


for _ in range(SOURCE_EPOCHS):
    order = rng.permutation(len(x_train))
    for start in range(0, len(order) - 63, 64):
        batch = order[start:start + 64]
        source_step(x_train[batch], digit_train[batch])
print(f'digit accuracy after pre-training: {accuracy(model, x_test, digit_test):.3f}')

# %% [markdown]
# ## Fine-tuning
#
# A new two-class head replaces the digit head. The body learns ten times slower than the
# head (its own param group), the weight decay spares the biases, and the optimizer steps
# once per `ACCUMULATE` micro-batches. The EMA averages the weights after each applied step,
# with a warm-up, so its first averages follow the weights closely.

# %%
model.head = brainstate.nn.Linear(64, 2)
params = model.states(brainstate.ParamState)
opt = stateopt.AdamW(lr=1e-3, weight_decay=0.05,
                     weight_decay_mask=stateopt.decay_matrices_only,
                     gradient_accumulation_steps=ACCUMULATE, skip_nonfinite=True)
opt.register_trainable_weights(params)
# the head moves to a group of its own
opt.add_param_group(model.head.states(brainstate.ParamState), lr=1e-2)
ema = stateopt.EMA(params, decay=0.98, warmup=True)


@stateopt.donating_jit
def micro_step(x, y):
    grads = brainstate.transform.grad(
        lambda: cross_entropy(model, x, y), grad_states=params)()
    opt.update(grads)
    return opt.step_count.value               # it counts applied steps only


corrupt_at = ACCUMULATE * FINE_TUNE_STEPS // 2 + 1   # one micro-batch with a NaN image
history = {'step': [], 'raw': [], 'ema': []}
calls, step = 0, 0
while step + int(opt.skipped_steps.value) < FINE_TUNE_STEPS:
    batch = rng.choice(LABELLED, MICRO_BATCH, replace=False)
    x = x_fine[batch].copy()
    calls += 1
    if calls == corrupt_at:
        x[0, 0] = np.nan
    applied = int(micro_step(x, y_fine[batch])) > step
    if applied:
        step += 1
        ema.update()
        if step % EVAL_EVERY == 0:
            history['step'].append(step)
            history['raw'].append(accuracy(model, x_test, y_fine_test))
            with ema.swapped():                  # the averages, in the model's States
                history['ema'].append(accuracy(model, x_test, y_fine_test))

print(f'{calls} micro-batches, {int(opt.step_count.value)} steps applied, '
      f'{int(opt.skipped_steps.value)} skipped (the NaN batch)')
print(f'test accuracy at the end: raw {history["raw"][-1]:.3f}, '
      f'EMA {history["ema"][-1]:.3f}')
late = len(history['step']) // 2            # the second half of the run
for name in ('raw', 'ema'):
    curve = np.asarray(history[name][late:])
    change = np.abs(np.diff(curve)).mean()
    print(f'{name:>3}: mean change between evaluations {change:.4f}, '
          f'spread (max - min) {curve.max() - curve.min():.4f}')

# %% [markdown]
# The averaged weights change less from one evaluation to the next than the raw ones, and
# end about where the raw weights are; which of the two is the better network to keep is
# decided on held-out data, as here. Outside `ema.swapped()` the model holds the trained
# weights, so training goes on from them.

# %%
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(history['step'], history['raw'], label='raw weights', alpha=0.7)
ax.plot(history['step'], history['ema'], label='EMA of the weights', linewidth=2)
ax.set_xlabel('applied step (4 micro-batches each)')
ax.set_ylabel('test accuracy, "5 or more?"')
ax.set_title('Fine-tuning: raw vs EMA validation accuracy')
ax.legend(loc='lower right')
fig.tight_layout()
fig.savefig(os.path.join(OUT, 'training_loop_ema.png'), dpi=120)
plt.show()
