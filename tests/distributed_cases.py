"""Training runs shared by the multi-device tests and the processes they start.

A device layout is fixed when TensorFlow first initializes its devices, so the
runs that need two logical CPUs or a ``MultiWorkerMirroredStrategy`` worker run
in a child process (``python distributed_cases.py CASE OUTPUT``), which
pickles ``{run name: result}`` to OUTPUT. Every process builds the same model
from the same numpy arrays, so a result can be compared with a run made in any
other process.

A result is a list with one entry per trainable variable (model order):
``(weight, slot_1, slot_2)`` as numpy arrays.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

STEPS = 4
GLOBAL_BATCH = 8
FEATURES, HIDDEN, OUTPUTS = 6, 5, 3
CLIPNORM = 1.0
EXCLUSIONS = ["LayerNorm", "bias"]


def dataset() -> tuple[np.ndarray, np.ndarray]:
    """STEPS global batches. The targets are large, so every step's gradient has
    a global norm far above CLIPNORM and clipping is active on every step."""
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, (STEPS * GLOBAL_BATCH, FEATURES)).astype(np.float32)
    y = rng.normal(0.0, 10.0, (STEPS * GLOBAL_BATCH, OUTPUTS)).astype(np.float32)
    # The two halves of every batch differ in scale, so clipping each replica's
    # half on its own would give another gradient than clipping their sum.
    y[GLOBAL_BATCH // 2 :: GLOBAL_BATCH] *= 0.1
    return x, y


def initial_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [
        rng.normal(0.0, 0.5, (FEATURES, HIDDEN)).astype(np.float32),  # hidden/kernel
        rng.normal(0.0, 0.5, (HIDDEN,)).astype(np.float32),  # hidden/bias
        np.ones(HIDDEN, np.float32),  # LayerNorm/gamma
        np.zeros(HIDDEN, np.float32),  # LayerNorm/beta
        rng.normal(0.0, 0.5, (HIDDEN, OUTPUTS)).astype(np.float32),  # output/kernel
        rng.normal(0.0, 0.5, (OUTPUTS,)).astype(np.float32),  # output/bias
    ]


def build_model(keras):
    """The same small model in Keras 3 or tf-keras (``keras`` is the module)."""
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(HIDDEN, activation="tanh", name="hidden"),
            keras.layers.LayerNormalization(name="LayerNorm"),
            keras.layers.Dense(OUTPUTS, name="output"),
        ]
    )
    model.set_weights(initial_weights())
    return model


def make_optimizer(namespace, kind: str, **overrides):
    """BERT-like settings: warmup + decay schedule, decay with exclusions,
    global-norm clipping. ``namespace`` is ``tf_bertopt.keras3`` or ``tf_bertopt.tf_keras``."""
    options = dict(
        learning_rate=namespace.WarmupPolynomialDecay(0.05, decay_steps=10, warmup_steps=2),
        weight_decay_rate=0.01,
        exclude_from_weight_decay=EXCLUSIONS,
        global_clipnorm=CLIPNORM,
    )
    options.update(overrides)
    cls = namespace.AdamWeightDecay if kind == "adamw" else namespace.LAMB
    return cls(**options)


def slots_of(optimizer, variable):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return tuple(inner.get_slots(variable))


def state(model, optimizer) -> list[tuple[np.ndarray, ...]]:
    """``(weight, slot_1, slot_2[, moving average])`` per trainable variable."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    rows = []
    for i, v in enumerate(model.trainable_variables):
        row = (v, *slots_of(optimizer, v))
        if inner.use_ema:
            row += (inner._model_variables_moving_average[i],)
        rows.append(tuple(np.array(x.numpy()) for x in row))
    return rows


def replica_loss(model, x, y):
    """Squared error summed over the replica's examples, divided by the global
    batch (and outputs): the sum over replicas is the global-batch mean."""
    import tensorflow as tf

    prediction = tf.cast(model(x, training=True), tf.float32)  # float16/bfloat16 under mixed precision
    return tf.reduce_sum(tf.square(prediction - y)) / float(GLOBAL_BATCH * OUTPUTS)


def replica_batches(strategy, t):
    """Global batch ``t`` as per-replica values: replica ``r`` gets the r-th contiguous slice."""
    x, y = dataset()
    size = GLOBAL_BATCH // strategy.num_replicas_in_sync
    start = t * GLOBAL_BATCH

    def local(values):
        def value(context):
            first = start + context.replica_id_in_sync_group * size
            return values[first : first + size]

        return strategy.experimental_distribute_values_from_function(value)

    return local(x), local(y)


def train_custom_loop(strategy, kind, *, jit_compile=False, replica_clip_norm=None, **overrides):
    """``STEPS`` updates with ``strategy.run``; each replica gets a contiguous
    slice of the global batch. ``jit_compile`` compiles the whole replica step
    (forward, backward, optimizer) with XLA. ``replica_clip_norm`` clips each
    replica's gradient with ``tf.clip_by_global_norm`` before ``apply_gradients``,
    the loss of each replica being the mean over its own examples, as TF1 BERT
    did on TPU (each shard clipped the gradient of its mean loss, then the
    shards were summed)."""
    import keras
    import tensorflow as tf

    from tf_bertopt import keras3

    with strategy.scope():
        model = build_model(keras)
        optimizer = make_optimizer(keras3, kind, **overrides)
        optimizer.build(model.trainable_variables)

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = replica_loss(model, x, y)
            if replica_clip_norm is not None:
                loss *= strategy.num_replicas_in_sync
        grads = tape.gradient(loss, model.trainable_variables)
        if replica_clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, replica_clip_norm)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    replica_step = tf.function(step, jit_compile=True) if jit_compile else step

    @tf.function
    def distributed_step(x, y):
        strategy.run(replica_step, args=(x, y))

    for t in range(STEPS):
        distributed_step(*replica_batches(strategy, t))
    return state(model, optimizer)


def train_fit(strategy, kind, *, jit_compile=False, **overrides):
    """``STEPS`` updates with ``model.fit`` (Keras splits each global batch over replicas)."""
    import keras

    from tf_bertopt import keras3

    with strategy.scope():
        model = build_model(keras)
        model.compile(optimizer=make_optimizer(keras3, kind, **overrides), loss="mse", jit_compile=jit_compile)
    x, y = dataset()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    return state(model, model.optimizer)


def train_emulating_tf1_tpu_clipping(kind, replicas):
    """One device doing what TF1 BERT on a TPU did: clip the gradient of each
    shard's mean loss to global norm CLIPNORM, sum the shards, apply."""
    import keras
    import tensorflow as tf

    from tf_bertopt import keras3

    model = build_model(keras)
    optimizer = make_optimizer(keras3, kind, global_clipnorm=None)
    x, y = dataset()
    size = GLOBAL_BATCH // replicas

    @tf.function
    def step(x, y):
        total = None
        for r in range(replicas):
            with tf.GradientTape() as tape:
                loss = replica_loss(model, x[r * size : (r + 1) * size], y[r * size : (r + 1) * size]) * replicas
            grads, _ = tf.clip_by_global_norm(tape.gradient(loss, model.trainable_variables), CLIPNORM)
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        optimizer.apply_gradients(zip(total, model.trainable_variables))

    for t in range(STEPS):
        step(x[t * GLOBAL_BATCH : (t + 1) * GLOBAL_BATCH], y[t * GLOBAL_BATCH : (t + 1) * GLOBAL_BATCH])
    return state(model, optimizer)


def replica_gradients(replicas: int = 2) -> list[list[np.ndarray]]:
    """Each replica's first-step gradient (its share of the global-batch loss)."""
    import keras
    import tensorflow as tf

    model = build_model(keras)
    x, y = dataset()
    size = GLOBAL_BATCH // replicas
    grads = []
    for r in range(replicas):
        with tf.GradientTape() as tape:
            loss = replica_loss(model, x[r * size : (r + 1) * size], y[r * size : (r + 1) * size])
        grads.append([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    return grads


def loss_scaled_skip(strategy, kind):
    """Mixed-precision loss scaling under ``strategy``: a finite step, a step whose
    gradient is inf on every replica, another finite step. Returns the states
    after each step and the loss scale after each step."""
    import keras
    import tensorflow as tf

    from tf_bertopt import keras3

    with strategy.scope():
        model = build_model(keras)
        optimizer = keras.optimizers.LossScaleOptimizer(make_optimizer(keras3, kind), initial_scale=2.0**10)
        optimizer.build(model.trainable_variables)

    @tf.function
    def distributed_step(x, y, poison):
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = optimizer.scale_loss(replica_loss(model, x, y)) * poison
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

        strategy.run(step, args=(x, y))

    states, scales = [], []
    for t, poison in enumerate([1.0, np.inf, 1.0]):
        distributed_step(*replica_batches(strategy, t), tf.constant(poison, tf.float32))
        states.append(state(model, optimizer))
        scales.append(float(optimizer.dynamic_scale.numpy()))
    return states, scales


def configure_logical_cpus(count: int) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def mirrored_runs() -> dict:
    """Everything that needs two logical CPUs, in one process."""
    configure_logical_cpus(2)
    import tensorflow as tf

    single = tf.distribute.get_strategy()
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one = tf.distribute.MirroredStrategy(["/cpu:0"])
    results = {"replica_gradients": replica_gradients(2)}
    for kind in ("adamw", "lamb"):
        # EMA on: it adds the moving averages to the state and leaves the weights alone.
        results[f"loop/{kind}/single"] = train_custom_loop(single, kind, use_ema=True, ema_momentum=0.5)
        results[f"loop/{kind}/mirrored"] = train_custom_loop(two, kind, use_ema=True, ema_momentum=0.5)
        results[f"fit/{kind}/mirrored"] = train_fit(two, kind)
    # XLA: TensorFlow compiles a replica function only on one device or on
    # all-GPU replicas (no merge_call otherwise), so this distributed step has one replica.
    results["fit/adamw/xla_mirrored"] = train_fit(one, "adamw", jit_compile=True)
    results["loop/lamb/xla_mirrored"] = train_custom_loop(one, "lamb", jit_compile=True)
    for kind, clip in (("adamw", dict(clipnorm=0.5)), ("lamb", dict(clipvalue=0.05))):
        name = next(iter(clip))
        results[f"loop/{kind}/{name}/single"] = train_custom_loop(single, kind, global_clipnorm=None, **clip)
        results[f"loop/{kind}/{name}/mirrored"] = train_custom_loop(two, kind, global_clipnorm=None, **clip)
    results["loss_scale/lamb/mirrored"] = loss_scaled_skip(two, "lamb")
    results["replica_clip/adamw/mirrored"] = train_custom_loop(
        two, "adamw", global_clipnorm=None, replica_clip_norm=CLIPNORM
    )
    results["replica_clip/adamw/emulated"] = train_emulating_tf1_tpu_clipping("adamw", replicas=2)
    return results


def multi_worker_run() -> dict:
    """One worker of a two-worker ``MultiWorkerMirroredStrategy`` (TF_CONFIG set by the caller)."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if strategy.num_replicas_in_sync != 2:
        raise RuntimeError(f"expected 2 replicas, got {strategy.num_replicas_in_sync}")
    return {
        f"loop/{kind}/multi_worker": train_custom_loop(strategy, kind, use_ema=True, ema_momentum=0.5)
        for kind in ("adamw", "lamb")
    }


CASES = {"mirrored": mirrored_runs, "multi_worker": multi_worker_run}

if __name__ == "__main__":
    case, output = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    results = CASES[case]()
    results["seconds"] = time.perf_counter() - start
    with open(output, "wb") as stream:
        pickle.dump(results, stream)
    print(json.dumps({"case": case, "seconds": results["seconds"]}))
