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
# # Scaling out: a sharded model, ZeRO-1 and orbax checkpoints
#
# A digits classifier trained over every device there is, with jax's own machinery:
#
# - **a mesh** of the devices with a `'data'` axis (the batch is split over it) and a
#   `'model'` axis (the hidden layer's columns are split over it);
# - **ZeRO-1**: `state_sharding='data'` splits AdamW's moments further over `'data'`, so each
#   device holds a fraction of the optimizer state instead of a copy;
# - **`stateopt.donating_jit`** compiles the train step and updates every buffer in place,
#   keeping each State on its sharding;
# - **`stateopt.OrbaxCheckpointManager`** saves the run halfway and restores it onto **another
#   mesh**, where training continues.
#
# On a CPU the first line gives jax 8 fake devices (they share the CPU's cores: this shows the
# layout, not a speed-up). On a GPU or TPU host the same script runs unchanged on the real
# devices. `STATEOPT_FAST=1` runs a short version; `STATEOPT_OUT` chooses where the picture
# and the checkpoints go (default `outputs/`).

# %%
import os

# before jax starts
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import shutil  # noqa: E402

import brainstate  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import stateopt  # noqa: E402

FAST = os.environ.get('STATEOPT_FAST') == '1'
OUT = os.environ.get('STATEOPT_OUT', 'outputs')
os.makedirs(OUT, exist_ok=True)
STEPS = 60 if FAST else 400
BATCH = 64
HIDDEN = 256

# %% [markdown]
# ## The mesh
#
# Every device goes into one mesh: two columns for `'model'` when there is an even number of
# them, the rest for `'data'`.

# %%
devices = jax.devices()
model_axis = 2 if len(devices) % 2 == 0 else 1
grid = np.array(devices).reshape(len(devices) // model_axis, model_axis)
mesh = Mesh(grid, ('data', 'model'))
print(f'{len(devices)} {devices[0].platform} devices; mesh {dict(mesh.shape)}')

digits = load_digits()
images = (digits.data / 16.0).astype(np.float32)
labels = digits.target.astype(np.int32)
x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.3,
                                                    random_state=0)


# %% [markdown]
# ## A sharded model
#
# The hidden layer's weight is split by columns over `'model'` and the head's by rows, so a
# device holds a slice of each; the small arrays are replicated. Only where the arrays live
# changes: the model code is the usual brainstate code.

# %%
class Classifier(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = brainstate.nn.Linear(64, HIDDEN)
        self.head = brainstate.nn.Linear(HIDDEN, 10)

    def __call__(self, x):
        return self.head(jax.nn.relu(self.l1(x)))


LAYOUT = {'l1': {'weight': P(None, 'model'), 'bias': P('model')},
          'head': {'weight': P('model', None), 'bias': P()}}


def sharded_model(mesh, seed=0):
    """A fresh classifier with its parameters placed on ``mesh`` as LAYOUT says."""
    brainstate.random.seed(seed)
    model = Classifier()
    for name, specs in LAYOUT.items():
        state = getattr(model, name).weight
        state.value = {key: jax.device_put(value, NamedSharding(mesh, specs[key]))
                       for key, value in state.value.items()}
    return model


def cross_entropy(model, x, y):
    log_probs = jax.nn.log_softmax(model(x))
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def batch(mesh, step):
    """The step's batch, split over 'data' (each device sees BATCH / data images)."""
    rows = np.random.default_rng(step).choice(len(x_train), BATCH, replace=False)
    split = NamedSharding(mesh, P('data'))
    return jax.device_put(x_train[rows], split), jax.device_put(y_train[rows], split)


# %% [markdown]
# ## ZeRO-1 and the train step
#
# `state_sharding='data'` places each moment of AdamW like its parameter and splits it once
# more over `'data'`, on the first dimension the parameter does not split. The step still
# gives the parameters their own sharding: XLA gathers each parameter's update, nothing more.

# %%
def trainer(model):
    params = model.states(brainstate.ParamState)
    schedule = stateopt.WarmupCosineSchedule(base_lr=3e-3, warmup_steps=STEPS // 10,
                                             total_steps=STEPS)
    opt = stateopt.AdamW(lr=schedule, weight_decay=1e-4, state_sharding='data')
    opt.register_trainable_weights(params)

    @stateopt.donating_jit
    def train_step(x, y):
        grads, loss = brainstate.transform.grad(
            lambda: cross_entropy(model, x, y), grad_states=params, return_value=True)()
        opt.update(grads)
        schedule.step()
        return loss

    return opt, train_step


def device_bytes(tree, device):
    """The bytes of the shards of ``tree``'s arrays that ``device`` holds."""
    return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
               for shard in leaf.addressable_shards if shard.device == device)


model = sharded_model(mesh)
opt, train_step = trainer(model)
moment = opt.state_dict()['state']['l1.weight']['exp_avg.weight']
print('moments of l1.weight:', moment.sharding.spec,
      '(the parameter:', model.l1.weight.value['weight'].sharding.spec, ')')

# %% [markdown]
# ## Train, save halfway, and go on
#
# The manager saves in the background; every process of a multi-host run makes the same
# calls. The run goes on to the end.

# %%
directory = os.path.abspath(os.path.join(OUT, 'scaling_out_checkpoints'))
shutil.rmtree(directory, ignore_errors=True)
manager = stateopt.OrbaxCheckpointManager(directory, max_to_keep=2)
losses = []
for step in range(STEPS):
    losses.append(float(train_step(*batch(mesh, step))))
    if step + 1 == STEPS // 2:
        run = {'model': model.states(brainstate.ParamState), 'optimizer': opt}
        manager.save(step + 1, run)
manager.wait()
accuracy = float(jnp.mean(jnp.argmax(model(x_test), axis=1) == y_test))
print(f'loss {losses[0]:.3f} -> {losses[-1]:.3f}; test accuracy {accuracy:.3f}')

# %% [markdown]
# ## Restore onto another mesh
#
# A new run on a mesh with every device on `'data'` (the parameters replicated, the moments
# split eight ways) restores the halfway step. Each array is read straight into its new
# sharding, and the run continues from the same numbers: the losses agree with the first run's
# up to float32 rounding (the two meshes compile to different code).

# %%
flat = Mesh(np.array(devices), ('data',))
LAYOUT = {'l1': {'weight': P(), 'bias': P()}, 'head': {'weight': P(), 'bias': P()}}
# other initial values: the checkpoint replaces them
resumed = sharded_model(flat, seed=1)
resumed_opt, resumed_step = trainer(resumed)
resumed_params = resumed.states(brainstate.ParamState)
manager.restore({'model': resumed_params, 'optimizer': resumed_opt})
start = manager.latest_step()
resumed_losses = [float(resumed_step(*batch(flat, step)))
                  for step in range(start, STEPS)]
gap = max(abs(a - b) for a, b in zip(resumed_losses, losses[start:]))
print(f'restored step {start} onto mesh {dict(flat.shape)}; '
      f'largest loss difference after it: {gap:.1e}')
assert gap < 1e-3 * max(losses), gap

# %% [markdown]
# ## What each device holds
#
# AdamW keeps two moments per parameter. Without ZeRO-1 each moment is placed like its
# parameter, so on the flat mesh every device holds both moments of every parameter; with it,
# each device holds 1/8 of them (on a mesh of 8).

# %%
device = devices[0]
plain_opt = stateopt.AdamW(lr=1e-3).register_trainable_weights(resumed_params)
held = {
    'parameters': device_bytes(resumed_params.to_dict_values(), device),
    'AdamW state': device_bytes(plain_opt.opt_state.value, device),
    'AdamW state, ZeRO-1': device_bytes(resumed_opt.opt_state.value, device),
}
for what, size in held.items():
    print(f'{what:22s} {size / 1024:8.1f} KiB per device')
manager.close()

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
left.plot(range(1, STEPS + 1), losses, label=f'mesh {dict(mesh.shape)}')
left.plot(range(start + 1, STEPS + 1), resumed_losses, '--',
          label=f'restored at {start} on {dict(flat.shape)}')
left.set_title('training loss')
left.set_xlabel('step')
left.legend()
right.bar(list(held), [size / 1024 for size in held.values()], color=['C0', 'C1', 'C2'])
right.set_title(f'bytes per device (KiB), {len(devices)} devices')
fig.tight_layout()
fig.savefig(os.path.join(OUT, 'scaling_out.png'), dpi=100)
