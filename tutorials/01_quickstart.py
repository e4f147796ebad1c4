# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Quickstart: train an MLP on the digits data set
#
# A brainstate MLP learns scikit-learn's bundled 8x8 digits with `stateopt.AdamW`.
# The whole train step (forward, backward, update) is compiled with
# `brainstate.transform.jit`.

# %%
import os

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import stateopt

FAST = os.environ.get('STATEOPT_FAST') == '1'   # CI runs the tutorials in a fast mode
EPOCHS = 5 if FAST else 40
BATCH = 64

# %% [markdown]
# ## Data

# %%
digits = load_digits()
x = (digits.data / 16.0).astype(np.float32)
y = digits.target.astype(np.int32)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)

# %% [markdown]
# ## Model, optimizer, train step

# %%
class MLP(brainstate.nn.Module):
    def __init__(self, n_in=64, n_hidden=128, n_out=10):
        super().__init__()
        self.l1 = brainstate.nn.Linear(n_in, n_hidden)
        self.l2 = brainstate.nn.Linear(n_hidden, n_out)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


brainstate.random.seed(0)
model = MLP()
params = model.states(brainstate.ParamState)
opt = stateopt.AdamW(lr=3e-3, weight_decay=1e-4).register_trainable_weights(params)
print(opt)


def loss_fn(xb, yb):
    logits = model(xb)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], axis=1))


@brainstate.transform.jit
def train_step(xb, yb):
    grads, loss = brainstate.transform.grad(loss_fn, grad_states=params, return_value=True)(xb, yb)
    opt.update(grads)
    return loss


@brainstate.transform.jit
def accuracy(xs, ys):
    return jnp.mean(jnp.argmax(model(xs), axis=1) == ys)

# %% [markdown]
# ## Train

# %%
rng = np.random.default_rng(0)
steps_per_epoch = len(x_train) // BATCH
bar = tqdm(range(EPOCHS), desc='training', unit='epoch')
for _ in bar:
    order = rng.permutation(len(x_train))
    losses = [float(train_step(x_train[idx], y_train[idx]))
              for idx in np.array_split(order[:steps_per_epoch * BATCH], steps_per_epoch)]
    bar.set_postfix(loss=f'{np.mean(losses):.4f}', test_acc=f'{float(accuracy(x_test, y_test)):.3f}')

test_accuracy = float(accuracy(x_test, y_test))
print(f'steps: {int(opt.step_count.value)}  final loss: {np.mean(losses):.4f}  '
      f'test accuracy: {test_accuracy:.3f}')
if not FAST:
    assert test_accuracy > 0.9, 'the quickstart should reach over 90% test accuracy'
