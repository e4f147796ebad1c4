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
# # Checkpoints: save, resume, and what happens when a file is bad
#
# We train an MLP on scikit-learn's digits with two param groups and a scheduler, save a
# checkpoint halfway, and resume from it in fresh objects: the resumed run continues
# bit for bit. Then we see how loading fails safely, leaving every target untouched:
#
# - a corrupted or truncated file raises `stateopt.CheckpointError`;
# - a file saved from a model of another shape raises `stateopt.CheckpointMismatchError`,
#   naming the entry that does not fit;
# - `overwrite=False` refuses to replace a file;
# - `save_checkpoint_async(...)` writes in the background, `.wait()` waits for it;
# - `strict=False` loads what the file and the target share, and reports the rest.
#
# `STATEOPT_FAST=1` runs a short version; `STATEOPT_OUT` chooses where the checkpoints and
# the picture go (default `outputs/`).

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
EPOCHS = 4 if FAST else 20
SAVE_AT = EPOCHS // 2          # the checkpoint is taken after this epoch
BATCH = 64

# %% [markdown]
# ## Data, model and training
#
# `Run(seed, n_hidden)` holds everything a run needs: a model, an AdamW optimizer whose
# output layer has a param group of its own, a warm-up cosine schedule driving both groups,
# and a compiled train step. `snapshot()` copies every number a load could change, so we can
# check bit for bit what a load did or did not do.

# %%
digits = load_digits()
x = (digits.data / 16.0).astype(np.float32)
y = digits.target.astype(np.int32)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25,
                                                    random_state=0)
steps_per_epoch = len(x_train) // BATCH
total_steps = EPOCHS * steps_per_epoch


class MLP(brainstate.nn.Module):
    def __init__(self, n_hidden, n_in=64, n_out=10):
        super().__init__()
        self.hidden = brainstate.nn.Linear(n_in, n_hidden)
        self.output = brainstate.nn.Linear(n_hidden, n_out)

    def __call__(self, x):
        return self.output(jax.nn.relu(self.hidden(x)))


class Run:
    """A model, its optimizer and scheduler, and a compiled train step."""

    def __init__(self, seed: int, n_hidden: int = 128):
        brainstate.random.seed(seed)
        self.model = MLP(n_hidden)
        self.params = self.model.states(brainstate.ParamState)
        self.schedule = stateopt.WarmupCosineSchedule(
            base_lr=3e-3, warmup_steps=steps_per_epoch, total_steps=total_steps)
        self.optimizer = stateopt.AdamW(lr=self.schedule, weight_decay=1e-4)
        self.optimizer.register_trainable_weights(self.params)
        output_params = self.model.output.states(brainstate.ParamState)
        self.optimizer.add_param_group(output_params, lr=1e-3)
        self.train_step = stateopt.donating_jit(self._train_step)

    def _train_step(self, xb, yb):
        def loss_fn():
            log_probs = jax.nn.log_softmax(self.model(xb))
            return -jnp.mean(jnp.take_along_axis(log_probs, yb[:, None], axis=1))

        grads, loss = brainstate.transform.grad(loss_fn, grad_states=self.params,
                                                return_value=True)()
        self.optimizer.update(grads)
        self.schedule.step()
        return loss

    def train(self, epochs) -> list[float]:
        """Train the given epochs (each in its own seeded order); return the losses."""
        losses = []
        for epoch in epochs:
            order = np.random.default_rng(epoch).permutation(len(x_train))
            order = order[:steps_per_epoch * BATCH]
            for index in np.array_split(order, steps_per_epoch):
                losses.append(float(self.train_step(x_train[index], y_train[index])))
        return losses

    def checkpoint_target(self, epoch: int = 0) -> dict:
        """What a checkpoint holds: States, optimizer (with scheduler) and epoch."""
        return {'model': self.params, 'optimizer': self.optimizer, 'epoch': epoch}

    def snapshot(self) -> list[np.ndarray]:
        """Every number a load could change, as numpy arrays."""
        values = {key: state.value for key, state in self.params.items()}
        leaves = jax.tree.leaves((values, self.optimizer.state_dict()))
        return [np.asarray(leaf) for leaf in leaves]

    def test_accuracy(self) -> float:
        return float(jnp.mean(jnp.argmax(self.model(x_test), axis=1) == y_test))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def raised(error_type: type, call, *args, **kwargs) -> Exception:
    """The ``error_type`` error that ``call(*args, **kwargs)`` raises; fail if none."""
    try:
        call(*args, **kwargs)
    except error_type as error:
        return error
    raise AssertionError(f'{call.__name__} should have raised {error_type.__name__}')


# %% [markdown]
# ## Save halfway, then finish the run
#
# `save_checkpoint(path, target)` takes a nested dict: here the model's States, the
# optimizer (which brings its param groups' hyper-parameters and lrs, its moments, its step
# count and its scheduler's counters) and the epoch. It writes the file atomically: to a
# temporary file first, renamed over `path` only once complete.

# %%
checkpoint = os.path.join(OUT, 'run.msgpack')
original = Run(seed=0)
losses = original.train(range(SAVE_AT))
stateopt.save_checkpoint(checkpoint, original.checkpoint_target(epoch=SAVE_AT))
saved_accuracy = original.test_accuracy()
print(f'saved {checkpoint} after epoch {SAVE_AT} '
      f'({os.path.getsize(checkpoint)} bytes), test accuracy {saved_accuracy:.3f}')
losses += original.train(range(SAVE_AT, EPOCHS))
print(f'the uninterrupted run ends at step {int(original.optimizer.step_count.value)} '
      f'with test accuracy {original.test_accuracy():.3f}')

# %% [markdown]
# ## Resume in fresh objects
#
# A new run, built from another seed, loads the checkpoint. States and optimizers are
# restored in place; plain values, like the epoch, come back in `result.tree`. The resumed
# run then takes exactly the steps the uninterrupted run took: the same losses, the same
# final parameters, bit for bit.

# %%
resumed = Run(seed=1)
result = stateopt.load_checkpoint(checkpoint, resumed.checkpoint_target())
start = result.tree['epoch']
print(f'resumed at epoch {start}: step {int(resumed.optimizer.step_count.value)}, '
      f'lrs {resumed.optimizer.get_last_lr()}')
resumed_losses = resumed.train(range(start, EPOCHS))
assert resumed_losses == losses[start * steps_per_epoch:], \
    'a resumed run must repeat the losses exactly'
assert same(resumed.snapshot(), original.snapshot()), \
    'and end with the same parameters and optimizer'
print('the resumed run repeats the uninterrupted one bit for bit')

figure, axes = plt.subplots(figsize=(6.4, 3.6))
axes.plot(losses, lw=1.5, label='uninterrupted run')
axes.plot(np.arange(start * steps_per_epoch, len(losses)), resumed_losses, 'C1--', lw=1,
          label='resumed from the checkpoint')
axes.axvline(start * steps_per_epoch, color='grey', ls=':', label='checkpoint')
axes.set(xlabel='step', ylabel='training loss', yscale='log',
         title='resuming repeats the run')
axes.legend()
figure.tight_layout()
figure.savefig(os.path.join(OUT, 'checkpoint_resume.png'), dpi=100)
print('saved', os.path.join(OUT, 'checkpoint_resume.png'))

# %% [markdown]
# ## A corrupted file
#
# A SHA-256 checksum covers the whole file, and loading verifies it before reading anything
# else. One flipped byte, or a copy cut short, raises `stateopt.CheckpointError`, and the
# targets keep their values.

# %%
with open(checkpoint, 'rb') as file:
    data = bytearray(file.read())
corrupted = os.path.join(OUT, 'corrupted.msgpack')
truncated = os.path.join(OUT, 'truncated.msgpack')
flipped = bytearray(data)
flipped[len(data) // 2] ^= 0xFF
with open(corrupted, 'wb') as file:
    file.write(flipped)
with open(truncated, 'wb') as file:
    file.write(data[:len(data) - 100])

spare = Run(seed=2)
before = spare.snapshot()
for path in (corrupted, truncated):
    error = raised(stateopt.CheckpointError, stateopt.load_checkpoint, path,
                   spare.checkpoint_target())
    print(f'{type(error).__name__}: {error}')
    assert same(spare.snapshot(), before), 'a failed load must change nothing'
print('the targets are unchanged')

# %% [markdown]
# ## A file that does not fit
#
# An intact checkpoint of a model with 64 hidden units cannot go into one with 128.
# Everything is checked (structure, shapes, dtypes, the optimizer's groups) before anything
# is written, and the error, a `stateopt.CheckpointMismatchError` (a subclass of
# `CheckpointError`), names the entry that does not fit.

# %%
narrow = Run(seed=0, n_hidden=64)
narrow_checkpoint = os.path.join(OUT, 'narrow.msgpack')
stateopt.save_checkpoint(narrow_checkpoint, narrow.checkpoint_target())
error = raised(stateopt.CheckpointMismatchError, stateopt.load_checkpoint,
               narrow_checkpoint, spare.checkpoint_target())
print(f'{type(error).__name__}: {error}')
assert "model/('hidden', 'weight')/weight" in str(error), 'the error names the entry'
assert same(spare.snapshot(), before), 'a failed load must change nothing'

# %% [markdown]
# ## `overwrite=False`
#
# A checkpoint you mean to keep, say the best one so far, can be written with
# `overwrite=False`: saving over an existing file then raises `FileExistsError`, and the
# file keeps its bytes.

# %%
error = raised(FileExistsError, stateopt.save_checkpoint, checkpoint,
               spare.checkpoint_target(), overwrite=False)
print(f'FileExistsError: {error}')
with open(checkpoint, 'rb') as file:
    assert file.read() == data, 'the existing file is untouched'

# %% [markdown]
# ## Saving in the background
#
# `save_checkpoint_async` copies the values to host memory and returns at once; training
# goes on while a background thread writes the file. The file holds the values of the
# moment of the call, not those of the steps taken meanwhile. `.wait()` blocks until the
# file is written and raises any error the write met. The spare run, untrained so far,
# saves its initial state this way and trains an epoch meanwhile.

# %%
background = os.path.join(OUT, 'background.msgpack')
at_call = spare.snapshot()
pending = stateopt.save_checkpoint_async(background, spare.checkpoint_target())
spare.train(range(1))
pending.wait()
reloaded = Run(seed=3)
stateopt.load_checkpoint(background, reloaded.checkpoint_target())
assert same(reloaded.snapshot(), at_call), 'the file holds the values at the call'
assert not same(spare.snapshot(), at_call), 'while training went on'
print(f'{pending}: holds the initial values, the run is one epoch further')

# %% [markdown]
# ## Partial loads: `strict=False`
#
# To evaluate the saved model we need its parameters only. A target without the optimizer
# and the epoch does not match the file, and by default that is an error that lists the
# differences. With `strict=False` the entries both have are loaded, and the result reports
# those the checkpoint lacks (`missing_keys`) and those the target lacks (`unexpected_keys`).

# %%
evaluation = Run(seed=4)
evaluation_target = {'model': evaluation.params, 'best_accuracy': 0.0}
error = raised(stateopt.CheckpointMismatchError, stateopt.load_checkpoint, checkpoint,
               evaluation_target)
print(f'strict=True: {error}')
result = stateopt.load_checkpoint(checkpoint, evaluation_target, strict=False)
print(f'strict=False: missing {result.missing_keys}, '
      f'unexpected {result.unexpected_keys}')
assert result.missing_keys == ['best_accuracy']
assert sorted(result.unexpected_keys) == ['epoch', 'optimizer']
assert evaluation.test_accuracy() == saved_accuracy, 'the model is the one saved'
assert int(evaluation.optimizer.step_count.value) == 0, 'the optimizer was not loaded'
print(f'the evaluation model has the saved test accuracy, '
      f'{evaluation.test_accuracy():.3f}')
