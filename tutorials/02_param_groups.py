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
# # Param groups: fine-tune a new head while the body is frozen or slow
#
# A network learns to recognise the ten digits (the *source* task). We then ask it a new
# question about the same kind of images, "is the digit odd?" (the *target* task), with a
# new head and only a few labelled images. The body's features carry over, and param groups
# decide how much the body may change while the new head learns:
#
# 1. **from scratch**: a fresh network, every parameter at one lr (the baseline);
# 2. **frozen body**: only the head is registered with the optimizer, so the body cannot move;
# 3. **slow body**: the body has its own param group with a small lr, the head a large one;
# 4. **probe, then unfreeze**: the body's group starts at `lr=0` (bit-identical while the head
#    settles), and halfway through we assign `group['lr']` to unfreeze it, without recompiling
#    the train step.
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
SOURCE_EPOCHS = 3 if FAST else 20
FINE_TUNE_STEPS = 60 if FAST else 300
EVAL_EVERY = 10
SHOTS = 3          # images of each digit labelled for the target task
BATCH = 64
HEAD_LR = 1e-2     # the new head learns fast
BODY_LR = 1e-3     # a pretrained body that may move learns ten times slower

# %% [markdown]
# ## Data
#
# The images are split 75/25 into train and test. The source task learns the digit of every
# training image. The target task labels only `SHOTS` training images of each digit with
# its parity, and is tested on the parity of every test image.

# %%
digits = load_digits()
images = (digits.data / 16.0).astype(np.float32)
labels = digits.target.astype(np.int32)
x_train, x_test, digit_train, digit_test = train_test_split(
    images, labels, test_size=0.25, random_state=0)

labelled = np.concatenate([np.flatnonzero(digit_train == digit)[:SHOTS]
                           for digit in range(10)])
x_parity_train, parity_train = x_train[labelled], digit_train[labelled] % 2
parity_test = digit_test % 2
print(f'source task: {len(x_train)} labelled training images; '
      f'target task: {len(labelled)}; '
      f'both tested on {len(x_test)} images')

# %% [markdown]
# ## The network: a body and a head
#
# Param groups are chosen by the model's structure: `model.body.states(brainstate.ParamState)`
# is every parameter of the body, `model.head.states(...)` every parameter of the head.

# %%
class Body(brainstate.nn.Module):
    def __init__(self, n_in=64, n_hidden=128, n_features=64):
        super().__init__()
        self.l1 = brainstate.nn.Linear(n_in, n_hidden)
        self.l2 = brainstate.nn.Linear(n_hidden, n_features)

    def __call__(self, x):
        return jax.nn.relu(self.l2(jax.nn.relu(self.l1(x))))


class Classifier(brainstate.nn.Module):
    def __init__(self, n_classes):
        super().__init__()
        self.body = Body()
        self.head = brainstate.nn.Linear(64, n_classes)

    def __call__(self, x):
        return self.head(self.body(x))


def cross_entropy(model, x, y):
    log_probs = jax.nn.log_softmax(model(x))
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def make_train_step(model, optimizer, trainable):
    """A compiled step (gradients of the ``trainable`` States, then one update), and
    a count of the times jax has traced it: its Python body runs only while traced."""
    traces = {'count': 0}

    def train_step(x, y):
        traces['count'] += 1
        grads, loss = brainstate.transform.grad(
            lambda: cross_entropy(model, x, y), grad_states=trainable,
            return_value=True)()
        optimizer.update(grads)
        return loss

    return stateopt.donating_jit(train_step), traces


def make_accuracy(model):
    def accuracy(x, y):
        return jnp.mean(jnp.argmax(model(x), axis=1) == y)

    return brainstate.transform.jit(accuracy)


# %% [markdown]
# ## Train the body on the source task
#
# One optimizer, one param group: every parameter at `lr=3e-3`.

# %%
brainstate.random.seed(0)
source_model = Classifier(n_classes=10)
source_params = source_model.states(brainstate.ParamState)
source_optimizer = stateopt.AdamW(lr=3e-3, weight_decay=1e-4)
source_optimizer.register_trainable_weights(source_params)
source_step, _ = make_train_step(source_model, source_optimizer, source_params)
for epoch in range(SOURCE_EPOCHS):
    order = np.random.default_rng(epoch).permutation(len(x_train))
    for index in np.array_split(order, len(order) // BATCH):
        source_step(x_train[index], digit_train[index])
source_accuracy = float(make_accuracy(source_model)(x_test, digit_test))
print(f'source task (which digit): test accuracy {source_accuracy:.3f}')
source_body = source_model.body.states(brainstate.ParamState)
pretrained_body = {key: state.value for key, state in source_body.items()}

# %% [markdown]
# ## Fine-tuning runs
#
# Every run starts from the same new two-class head (seed 1); the runs that transfer load
# the pretrained body under it. Each run takes `FINE_TUNE_STEPS` full-batch steps on the few
# parity labels and records the parity test accuracy every `EVAL_EVERY` steps.

# %%
def new_model(pretrained: bool):
    brainstate.random.seed(1)
    model = Classifier(n_classes=2)
    if pretrained:
        for key, state in model.body.states(brainstate.ParamState).items():
            state.value = pretrained_body[key]
    return model


def body_values(model):
    """The body's parameters as numpy arrays, to compare bit for bit."""
    return [np.asarray(leaf) for leaf in jax.tree.leaves(
        {key: state.value
         for key, state in model.body.states(brainstate.ParamState).items()})]


def same_values(before, after):
    return all(np.array_equal(a, b) for a, b in zip(before, after))


def fine_tune(model, optimizer, trainable, before_step=None):
    """Train on the parity labels; ``before_step(step)`` runs before each step.

    Returns the test accuracies and the number of times the train step was traced."""
    train_step, traces = make_train_step(model, optimizer, trainable)
    accuracy = make_accuracy(model)
    accuracies = []
    for step in range(FINE_TUNE_STEPS):
        if before_step is not None:
            before_step(step)
        train_step(x_parity_train, parity_train)
        if (step + 1) % EVAL_EVERY == 0:
            accuracies.append(float(accuracy(x_test, parity_test)))
    return accuracies, traces['count']


results = {}

# %% [markdown]
# ### 1. From scratch
#
# The baseline: a fresh network learns parity from the few labelled images alone.

# %%
model = new_model(pretrained=False)
params = model.states(brainstate.ParamState)
optimizer = stateopt.AdamW(lr=HEAD_LR, weight_decay=1e-4)
optimizer.register_trainable_weights(params)
results['from scratch'], _ = fine_tune(model, optimizer, params)

# %% [markdown]
# ### 2. Frozen body: register only the head
#
# An optimizer moves only the States registered with it. Registering the head alone freezes
# the body, and taking gradients with respect to the head's States alone spares computing
# the body's.

# %%
model = new_model(pretrained=True)
head = model.head.states(brainstate.ParamState)
optimizer = stateopt.AdamW(lr=HEAD_LR, weight_decay=1e-4)
optimizer.register_trainable_weights(head)
body_before = body_values(model)
results['frozen body'], _ = fine_tune(model, optimizer, head)
assert same_values(body_before, body_values(model)), \
    'a body left out of the optimizer must not move'
print('frozen body: the body is bit-identical after fine-tuning')

# %% [markdown]
# ### 3. Slow body, fast head: two param groups
#
# `register_trainable_weights` puts every parameter in the default group, at `HEAD_LR`.
# `add_param_group` then moves the body's States, found by identity, into a group of their
# own at `BODY_LR`; they could also override any other hyper-parameter (`weight_decay=`,
# `betas=`, ...). `opt.param_groups` lists the groups; each one is a dict of its States
# and hyper-parameters.

# %%
model = new_model(pretrained=True)
params = model.states(brainstate.ParamState)
optimizer = stateopt.AdamW(lr=HEAD_LR, weight_decay=1e-4)
optimizer.register_trainable_weights(params)
optimizer.add_param_group(model.body.states(brainstate.ParamState), lr=BODY_LR)
print(optimizer.param_groups)
for group in optimizer.param_groups:
    print(f"group {group.index}: lr={float(group['lr']):g}, params {group.names}")
assert optimizer.get_last_lr() == [HEAD_LR, BODY_LR]
results['slow body'], _ = fine_tune(model, optimizer, params)

# %% [markdown]
# ### 4. Probe, then unfreeze: `group['lr']` changed mid-run
#
# The body's group starts at `lr=0`: its parameters stay bit-identical while the new head
# learns on top of the pretrained features. Halfway through, `group['lr'] = BODY_LR`
# unfreezes the body. Learning rates are inputs of the compiled train step, not constants
# baked into it, so the assignment takes effect at the next step and nothing is recompiled:
# the step's Python body runs (jax traces it) once in the whole run.

# %%
model = new_model(pretrained=True)
params = model.states(brainstate.ParamState)
optimizer = stateopt.AdamW(lr=HEAD_LR, weight_decay=1e-4)
optimizer.register_trainable_weights(params)
body_group = optimizer.add_param_group(model.body.states(brainstate.ParamState), lr=0.0)
body_before = body_values(model)
UNFREEZE_AT = FINE_TUNE_STEPS // 2


def unfreeze_halfway(step):
    if step == UNFREEZE_AT:
        assert same_values(body_before, body_values(model)), \
            'a group with lr=0 must stay bit-identical'
        print(f'step {step}: the body is still bit-identical; unfreezing it')
        body_group['lr'] = BODY_LR


results['probe, then unfreeze'], traces = fine_tune(model, optimizer, params,
                                                   before_step=unfreeze_halfway)
assert not same_values(body_before, body_values(model)), 'the unfrozen body must move'
assert traces == 1, "changing a group's lr must not recompile the train step"
print(f'lrs at the end: {optimizer.get_last_lr()}; '
      f'the train step was traced {traces} time')

# %% [markdown]
# ## Results
#
# With three labelled images per digit, the network trained from scratch has little to
# learn from; the pretrained body brings features learnt from every labelled digit, and each
# run that reuses it ends well ahead. Until the body is unfrozen, run 4 is run 2: a group at
# `lr=0` trains exactly like States left out of the optimizer, and the two curves coincide.

# %%
for name, accuracies in results.items():
    print(f'{name:>21}: parity test accuracy {accuracies[-1]:.3f}')
probed = UNFREEZE_AT // EVAL_EVERY
assert results['probe, then unfreeze'][:probed] == results['frozen body'][:probed]
if not FAST:
    assert all(results[name][-1] > results['from scratch'][-1] + 0.03
               for name in ('frozen body', 'slow body', 'probe, then unfreeze')), \
        'every run that reuses the pretrained body should beat the one from scratch'

figure, axes = plt.subplots(figsize=(6.4, 3.8))
evaluated_at = np.arange(1, len(results['from scratch']) + 1) * EVAL_EVERY
for name, accuracies in results.items():
    axes.plot(evaluated_at, accuracies, label=name)
axes.axvline(UNFREEZE_AT, color='grey', ls=':', label='body unfrozen (run 4)')
axes.set(xlabel='fine-tuning step', ylabel='parity test accuracy',
         title=f'Is the digit odd? {SHOTS} labelled images per digit')
axes.legend(loc='center right')
figure.tight_layout()
figure.savefig(os.path.join(OUT, 'param_groups_fine_tuning.png'), dpi=100)
print('saved', os.path.join(OUT, 'param_groups_fine_tuning.png'))
