"""Tiny training jobs that can be killed at any moment and started again.

Run as a script by tests/test_kill_and_resume.py::

    python tests/resumable_training.py JOBS_JSON WORKDIR

JOBS is a list of jobs, run one after the other, each in ``WORKDIR/<name>``.
A job trains a small model with a tf_bertopt optimizer (default
construction) on batches that are a function of the step number alone, so a
resumed job sees the batches an uninterrupted one would. It resumes from
whatever checkpoint its folder holds; when done it writes ``final.npz`` there
(every model and optimizer variable, and the learning rate of the next
update), and a job with a ``final.npz`` is skipped: starting the script again
after a kill carries on where the killed process was.

Progress goes to stdout, one flushed line per event, for the parent to time
its ``SIGKILL`` by: ``<name> restored N`` (steps already done when starting),
``<name> step N`` (after each training step), ``<name> saving N`` /
``<name> saved N`` (around each checkpoint write), ``<name> done``.

A job's keys: ``name``, ``flavour`` ("keras3" or "tf_keras"), ``optimizer``
("AdamWeightDecay" or "LAMB"), ``driver`` ("fit": ``model.fit`` with the
flavour's ``BackupAndRestore`` saving at the end of each epoch; "loop": a
custom loop with ``tf.train.CheckpointManager`` saving every ``save_every``
steps), ``epochs`` and ``batches_per_epoch`` (steps = their product),
``accumulation`` (Keras 3 ``gradient_accumulation_steps``; 0 for none),
``save_freq`` (fit only: ``BackupAndRestore``'s, ``"epoch"`` by default),
``ema`` (``use_ema``), and optionally ``hold_after`` (a progress line, without
the name, after which the process waits for its parent's kill), ``pace_s``
(a pause after every step, so that a kill timed by the parent lands in the job
it was meant for), ``die_after`` (a progress line after which the process
kills itself, once) and ``die_inside_save``
(loop only: the step whose checkpoint write the process kills itself in,
once, after the checkpoint's files are written and before the checkpoint is
recorded as the latest).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BATCH = 4
HOLD_S = 10.0
FEATURES = 6
SEED = 1234


class Job:
    """One job's configuration and folder, and its progress lines."""

    def __init__(self, config: dict, workdir: str):
        self.config = dict(config, steps=config["epochs"] * config["batches_per_epoch"])
        self.name = config["name"]
        self.folder = os.path.join(workdir, self.name)
        os.makedirs(self.folder, exist_ok=True)

    def say(self, event: str, step: int | None = None) -> None:
        line = f"{event}" + ("" if step is None else f" {step}")
        print(f"{self.name} {line}", flush=True)
        if line == self.config.get("die_after"):
            self.die_once("died_after")
        if line == self.config.get("hold_after"):
            time.sleep(HOLD_S)  # the parent's SIGKILL lands here, whatever the machine's load
        elif event == "step" and self.config.get("pace_s"):
            time.sleep(self.config["pace_s"])

    def die_once(self, marker: str) -> None:
        """SIGKILL this process, unless this job did so here before."""
        marker = os.path.join(self.folder, marker)
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


def batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch of training step ``step``, the same in every run."""
    rng = np.random.default_rng([SEED, step])
    x = rng.normal(0.0, 1.0, (BATCH, FEATURES)).astype(np.float32)
    y = (x[:, :1] * 0.7 - x[:, 1:2] ** 2 + rng.normal(0.0, 0.1, (BATCH, 1))).astype(np.float32)
    return x, y


def keras_module(flavour: str):
    if flavour == "keras3":
        import keras

        return keras
    import tf_keras

    return tf_keras


def build_model(keras):
    initializer = lambda i: keras.initializers.GlorotUniform(seed=SEED + i)  # noqa: E731
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="tanh", kernel_initializer=initializer(0), name="dense")(inputs)
    hidden = keras.layers.LayerNormalization(name="LayerNorm")(hidden)
    outputs = keras.layers.Dense(1, kernel_initializer=initializer(1), name="output")(hidden)
    return keras.Model(inputs, outputs)


def build_optimizer(config: dict):
    import tf_bertopt

    api = getattr(tf_bertopt, config["flavour"])
    updates = config["steps"] // max(config["accumulation"], 1)
    keras_args = {}
    if config["accumulation"]:
        keras_args["gradient_accumulation_steps"] = config["accumulation"]
    if config["ema"]:
        keras_args.update(use_ema=True, ema_momentum=0.9)
    # Decaying over twice the run's updates: the learning rate at the end is not 0, so comparing it means something.
    schedule = api.WarmupPolynomialDecay(0.02, decay_steps=2 * updates, warmup_steps=2)
    return getattr(api, config["optimizer"])(
        learning_rate=schedule,
        weight_decay_rate=0.01,
        exclude_from_weight_decay=["LayerNorm", "bias"],
        global_clipnorm=1.0,
        **keras_args,
    )


def write_final_state(path: str, model, optimizer) -> None:
    state = {f"model/{i}/{v.name}": np.array(v.numpy()) for i, v in enumerate(model.weights)}
    for i, v in enumerate(optimizer.variables):
        state[f"optimizer/{i}/{v.name}"] = np.array(v.numpy())
    # The schedule at the number of updates done: the rate the next update would use
    # (tf-keras's `learning_rate` reports the rate of the last update instead).
    state["next_learning_rate"] = np.array(optimizer._learning_rate(optimizer.iterations).numpy(), np.float32)
    np.savez(path + ".tmp.npz", **state)
    os.replace(path + ".tmp.npz", path)


def run_loop(job: Job, keras, model, optimizer) -> None:
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(job.folder, "checkpoints"), max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    job.say("restored", int(step.numpy()))
    if job.config.get("die_inside_save") is not None:
        _die_inside_save(job, job.config["die_inside_save"])

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        step.assign_add(1)

    while int(step.numpy()) < job.config["steps"]:
        train_step(*batch(int(step.numpy())))
        done = int(step.numpy())
        job.say("step", done)
        if done % job.config["save_every"] == 0:
            job.say("saving", done)
            manager.save(checkpoint_number=done)
            job.say("saved", done)


def _die_inside_save(job: Job, at_step: int) -> None:
    """Kill this process inside the checkpoint write of step ``at_step`` (once):
    after the checkpoint's files are written, before it is recorded as the latest."""
    from tensorflow.python.checkpoint import checkpoint_management

    record = checkpoint_management.update_checkpoint_state_internal

    def record_or_die(save_dir, model_checkpoint_path, *args, **kwargs):
        if model_checkpoint_path.endswith(f"ckpt-{at_step}"):
            job.die_once("died_inside_save")
        return record(save_dir, model_checkpoint_path, *args, **kwargs)

    checkpoint_management.update_checkpoint_state_internal = record_or_die


def run_fit(job: Job, keras, model, optimizer) -> None:
    epochs, per_epoch = job.config["epochs"], job.config["batches_per_epoch"]
    pairs = [batch(t) for t in range(per_epoch)]
    x = np.concatenate([p[0] for p in pairs])
    y = np.concatenate([p[1] for p in pairs])

    class Progress(keras.callbacks.Callback):
        """Reports after BackupAndRestore (listed before it) has done its work."""

        def on_train_begin(self, logs=None):
            job.say("restored", int(self.model.optimizer.iterations.numpy()))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch_index, logs=None):
            done = self.epoch * per_epoch + batch_index + 1
            job.say("step", done)
            if save_freq != "epoch" and done % save_freq == 0:
                job.say("saved", done)

        def on_epoch_end(self, epoch, logs=None):
            if save_freq == "epoch":
                job.say("saved", (epoch + 1) * per_epoch)

    save_freq = job.config.get("save_freq", "epoch")
    backup = keras.callbacks.BackupAndRestore(os.path.join(job.folder, "backup"), save_freq=save_freq)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=[backup, Progress()])


def main(jobs_json: str, workdir: str) -> None:
    for config in json.loads(jobs_json):
        job = Job(config, workdir)
        final = os.path.join(job.folder, "final.npz")
        if os.path.exists(final):
            continue
        keras = keras_module(job.config["flavour"])
        model = build_model(keras)
        optimizer = build_optimizer(job.config)
        {"loop": run_loop, "fit": run_fit}[job.config["driver"]](job, keras, model, optimizer)
        write_final_state(final, model, optimizer)
        job.say("done")


if __name__ == "__main__":
    main(*sys.argv[1:])
