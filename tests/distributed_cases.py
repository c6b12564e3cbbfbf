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

import contextlib
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


def flavour_modules(flavour: str):
    """``(keras module, tf_bertopt front end)`` of ``flavour`` ("keras3" or "tf_keras")."""
    import importlib

    keras = importlib.import_module("keras" if flavour == "keras3" else "tf_keras")
    return keras, importlib.import_module(f"tf_bertopt.{flavour}")


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


def train_custom_loop(strategy, kind, *, flavour="keras3", jit_compile=False, replica_clip_norm=None, **overrides):
    """``STEPS`` updates with ``strategy.run``; each replica gets a contiguous
    slice of the global batch. ``jit_compile`` compiles the whole replica step
    (forward, backward, optimizer) with XLA. ``replica_clip_norm`` clips each
    replica's gradient with ``tf.clip_by_global_norm`` before ``apply_gradients``,
    the loss of each replica being the mean over its own examples, as TF1 BERT
    did on TPU (each shard clipped the gradient of its mean loss, then the
    shards were summed)."""
    import tensorflow as tf

    keras, api = flavour_modules(flavour)
    with strategy.scope():
        model = build_model(keras)
        optimizer = make_optimizer(api, kind, **overrides)
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


def train_fit(strategy, kind, *, flavour="keras3", jit_compile=False, **overrides):
    """``STEPS`` updates with ``model.fit`` (Keras splits each global batch over replicas)."""
    keras, api = flavour_modules(flavour)
    with strategy.scope():
        model = build_model(keras)
        model.compile(optimizer=make_optimizer(api, kind, **overrides), loss="mse", jit_compile=jit_compile)
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


VOCAB, SEQ, EMBED = 6, 3, 4


def sparse_dataset() -> tuple[np.ndarray, np.ndarray]:
    """STEPS global batches of SEQ ids from VOCAB (ids repeat within every
    replica's half and across halves) and large targets: clipping acts on every step."""
    rng = np.random.default_rng(11)
    ids = rng.integers(0, VOCAB, (STEPS * GLOBAL_BATCH, SEQ)).astype(np.int32)
    y = rng.normal(0.0, 10.0, (STEPS * GLOBAL_BATCH, OUTPUTS)).astype(np.float32)
    return ids, y


def sparse_initial_weights() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [
        rng.normal(0.0, 0.5, (VOCAB, EMBED)).astype(np.float32),  # word_embeddings
        rng.normal(0.0, 0.5, (EMBED, OUTPUTS)).astype(np.float32),  # head/kernel
    ]


def train_sparse(strategy, kind, *, flavour="keras3", head=False, clip_in_loop=False):
    """``STEPS`` updates of an embedding model: a Keras ``Embedding`` (whose
    gradient is a ``tf.IndexedSlices``), the embeddings of each example summed,
    then, with ``head``, a matrix to the outputs (else the first OUTPUTS
    features are the outputs). Without ``head`` every lookup's gradient is
    computed element-wise from its own example, so N replicas' slices are
    exactly one device's.

    ``clip_in_loop`` clips in the training loop with ``tf.clip_by_global_norm``
    on the tape's gradients, as TF1 BERT's ``create_optimizer`` did, and
    gives the optimizer no clipping: TF1's arithmetic on one device."""
    import tensorflow as tf

    keras, api = flavour_modules(flavour)
    table, kernel = sparse_initial_weights()
    with strategy.scope():
        embedding = keras.layers.Embedding(VOCAB, EMBED, name="word_embeddings")
        embedding.build((None,))
        embedding.embeddings.assign(table)
        variables = [embedding.embeddings]
        if head:
            variables.append(tf.Variable(kernel, name="head/kernel") if flavour == "tf_keras" else keras.Variable(
                kernel, name="kernel"))
        optimizer = make_optimizer(
            api, kind, global_clipnorm=None if clip_in_loop else CLIPNORM, exclude_from_weight_decay=None
        )
        optimizer.build(variables)

    def step(ids, y):
        with tf.GradientTape() as tape:
            features = tf.reduce_sum(embedding(ids), axis=1)
            prediction = tf.matmul(features, variables[1]) if head else features[:, :OUTPUTS]
            loss = tf.reduce_sum(tf.square(prediction - y)) / float(GLOBAL_BATCH * OUTPUTS)
        grads = tape.gradient(loss, variables)
        if clip_in_loop:
            grads, _ = tf.clip_by_global_norm(grads, CLIPNORM)
        optimizer.apply_gradients(zip(grads, variables))

    @tf.function
    def distributed_step(ids, y):
        strategy.run(step, args=(ids, y))

    ids, y = sparse_dataset()
    size = GLOBAL_BATCH // strategy.num_replicas_in_sync
    for t in range(STEPS):

        def local(values):
            def value(context):
                first = t * GLOBAL_BATCH + context.replica_id_in_sync_group * size
                return values[first : first + size]

            return strategy.experimental_distribute_values_from_function(value)

        distributed_step(local(ids), local(y))
    return [tuple(np.array(x.numpy()) for x in (v, *slots_of(optimizer, v))) for v in variables]


def sparse_first_step_norms() -> tuple[float, float]:
    """The global norm of the first global batch's embedding gradient over its
    values (TF1's) and over its summed rows (the dense gradient's)."""
    ids, y = sparse_dataset()
    table = sparse_initial_weights()[0]
    features = table[ids[:GLOBAL_BATCH]].sum(axis=1)
    upstream = 2.0 * (features[:, :OUTPUTS] - y[:GLOBAL_BATCH]) / float(GLOBAL_BATCH * OUTPUTS)
    values = np.zeros((GLOBAL_BATCH, SEQ, EMBED))
    values[:, :, :OUTPUTS] = upstream[:, None, :]
    dense = np.zeros_like(table, np.float64)
    np.add.at(dense, ids[:GLOBAL_BATCH].reshape(-1), values.reshape(-1, EMBED))
    return float(np.sqrt(np.sum(values**2))), float(np.sqrt(np.sum(dense**2)))


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


def loss_scaled_skip(strategy, kind, flavour="keras3"):
    """Mixed-precision loss scaling under ``strategy``: a finite step, a step whose
    gradient is inf on every replica, another finite step. Returns, after each
    step, the state, the loss scale and the inner optimizer's update count."""
    import tensorflow as tf

    keras, api = flavour_modules(flavour)
    with strategy.scope():
        model = build_model(keras)
        if flavour == "keras3":
            optimizer = keras.optimizers.LossScaleOptimizer(make_optimizer(api, kind), initial_scale=2.0**10)
            scale, unscale, current_scale = optimizer.scale_loss, lambda grads: grads, lambda: optimizer.dynamic_scale
        else:  # tf-keras: the custom loop scales and unscales itself
            optimizer = keras.mixed_precision.LossScaleOptimizer(make_optimizer(api, kind), initial_scale=2.0**10)
            scale, unscale = optimizer.get_scaled_loss, optimizer.get_unscaled_gradients
            current_scale = lambda: optimizer.loss_scale  # noqa: E731
        optimizer.build(model.trainable_variables)

    @tf.function
    def distributed_step(x, y, poison):
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = scale(replica_loss(model, x, y)) * poison
            grads = unscale(tape.gradient(loss, model.trainable_variables))
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

        strategy.run(step, args=(x, y))

    states, scales, updates = [], [], []
    for t, poison in enumerate([1.0, np.inf, 1.0]):
        distributed_step(*replica_batches(strategy, t), tf.constant(poison, tf.float32))
        states.append(state(model, optimizer))
        scales.append(float(current_scale().numpy()))
        updates.append(int(strategy.experimental_local_results(optimizer.inner_optimizer.iterations)[0].numpy()))
    return states, scales, updates


def nonfinite_skip(strategy, kind, flavour="keras3"):
    """``skip_nonfinite_steps=True`` under ``strategy``: a finite step, a step whose
    gradient is inf on the last replica only, another finite step. Returns, after
    each step, the state and, per replica, the first weight, the skip count and
    the update count."""
    import tensorflow as tf

    keras, api = flavour_modules(flavour)
    with strategy.scope():
        model = build_model(keras)
        optimizer = make_optimizer(api, kind, skip_nonfinite_steps=True)
        optimizer.build(model.trainable_variables)

    @tf.function
    def distributed_step(x, y, poison):
        def step(x, y, poison):
            with tf.GradientTape() as tape:
                loss = replica_loss(model, x, y) * poison
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

        strategy.run(step, args=(x, y, poison))

    def local(variable):
        variable = variable if isinstance(variable, tf.Variable) else variable.value  # a Keras 3 variable
        return [np.array(v.numpy()) for v in strategy.experimental_local_results(variable)]

    last = strategy.num_replicas_in_sync - 1
    history = []
    for t in range(3):
        poison = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(np.inf if t == 1 and context.replica_id_in_sync_group == last else 1.0)
        )
        distributed_step(*replica_batches(strategy, t), poison)
        history.append(
            (
                state(model, optimizer),
                local(model.trainable_variables[0]),
                [int(c) for c in local(optimizer.nonfinite_step_count)],
                [int(c) for c in local(optimizer.iterations)],
            )
        )
    return history


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

    # tf-keras: it sums over replicas before clipping on its own.
    for kind in ("adamw", "lamb"):
        results[f"tf_keras/loop/{kind}/single"] = train_custom_loop(
            single, kind, flavour="tf_keras", use_ema=True, ema_momentum=0.5
        )
        results[f"tf_keras/loop/{kind}/mirrored"] = train_custom_loop(
            two, kind, flavour="tf_keras", use_ema=True, ema_momentum=0.5
        )
    results["tf_keras/fit/lamb/mirrored"] = train_fit(two, "lamb", flavour="tf_keras")
    results["tf_keras/fit/adamw/xla_mirrored"] = train_fit(one, "adamw", flavour="tf_keras", jit_compile=True)
    results["tf_keras/loss_scale/adamw/mirrored"] = loss_scaled_skip(two, "adamw", flavour="tf_keras")
    results["nonfinite/adamw/mirrored"] = nonfinite_skip(two, "adamw")
    results["tf_keras/nonfinite/lamb/mirrored"] = nonfinite_skip(two, "lamb", flavour="tf_keras")

    # Sparse gradients: the replicas' slices are gathered before clipping.
    for flavour, prefix in (("keras3", ""), ("tf_keras", "tf_keras/")):
        for kind in ("adamw", "lamb"):
            results[f"{prefix}sparse/{kind}/mirrored"] = train_sparse(two, kind, flavour=flavour)
            results[f"{prefix}sparse/{kind}/tf1_clipping"] = train_sparse(single, kind, flavour=flavour, clip_in_loop=True)
    for flavour, prefix, kind in (("keras3", "", "lamb"), ("tf_keras", "tf_keras/", "adamw")):
        results[f"{prefix}sparse_head/{kind}/mirrored"] = train_sparse(two, kind, flavour=flavour, head=True)
        results[f"{prefix}sparse_head/{kind}/tf1_clipping"] = train_sparse(
            single, kind, flavour=flavour, head=True, clip_in_loop=True
        )
    return results


def multi_worker_run() -> dict:
    """One worker of a two-worker ``MultiWorkerMirroredStrategy`` (TF_CONFIG set by the caller)."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if strategy.num_replicas_in_sync != 2:
        raise RuntimeError(f"expected 2 replicas, got {strategy.num_replicas_in_sync}")
    results = {
        f"{prefix}loop/{kind}/multi_worker": train_custom_loop(
            strategy, kind, flavour=flavour, use_ema=True, ema_momentum=0.5
        )
        for flavour, prefix in (("keras3", ""), ("tf_keras", "tf_keras/"))
        for kind in ("adamw", "lamb")
    }
    # Sparse gradients: the workers' slices are gathered (all-gather) before clipping.
    results["sparse/lamb/multi_worker"] = train_sparse(strategy, "lamb")
    results["tf_keras/sparse/adamw/multi_worker"] = train_sparse(strategy, "adamw", flavour="tf_keras")
    return results


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def parameter_server_strategy(shards: int):
    """A ``ParameterServerStrategy`` on an in-process cluster on 127.0.0.1 (one
    worker, ``shards`` parameter servers) that splits variables into ``shards``."""
    import tensorflow as tf

    ports = iter(free_ports(shards + 2))
    cluster = {
        "chief": [f"127.0.0.1:{next(ports)}"],
        "worker": [f"127.0.0.1:{next(ports)}"],
        "ps": [f"127.0.0.1:{next(ports)}" for _ in range(shards)],
    }
    spec = tf.train.ClusterSpec(cluster)
    servers = [
        tf.distribute.Server(spec, job_name=job, task_index=i, protocol="grpc", start=True)
        for job in ("worker", "ps")
        for i in range(len(cluster[job]))
    ]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, task_type="chief", task_id=0, rpc_layer="grpc"
    )
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(shards)
    )
    strategy.servers = servers  # keep them alive as long as the strategy
    return strategy


def sharded_problem():
    """A linear layer whose kernel rows differ in scale by shard: the first half
    of the rows (shard 0) is 10x smaller, so each shard's own norms give
    another trust ratio than the whole kernel's."""
    rng = np.random.default_rng(9)
    kernel = rng.normal(0.0, 1.0, (8, 3)).astype(np.float32)
    kernel[:4] *= 0.1
    bias = rng.normal(0.0, 1.0, (3,)).astype(np.float32)
    x = rng.normal(0.0, 1.0, (STEPS, 16, 8)).astype(np.float32)
    y = rng.normal(0.0, 1.0, (STEPS, 16, 3)).astype(np.float32)
    return {"kernel": kernel, "bias": bias}, x, y


def train_lamb_on_layout(layout: str, strategy=None, **lamb_args):
    """``STEPS`` tf-keras LAMB updates of ``sharded_problem``'s layer, its variables
    held as ``layout``: "sharded" (ShardedVariables of ``strategy``),
    "whole" (one variable each) or "split" (two unrelated variables each, the
    shards' values). Returns ``{name: (weight, m, v)}`` of the whole tensors."""
    import tensorflow as tf

    from tf_bertopt import tf_keras as api

    start, x, y = sharded_problem()
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        if layout == "split":
            parts = {
                n: [tf.Variable(p, name=f"{n}/part_{i}") for i, p in enumerate(np.array_split(w, 2))]
                for n, w in start.items()
            }
        else:
            parts = {n: tf.Variable(w, name=n) for n, w in start.items()}
            if layout == "sharded":
                assert all(len(v.variables) == 2 for v in parts.values()), "variables were not split"
        optimizer = api.LAMB(learning_rate=0.05, exclude_from_weight_decay=["bias"], **lamb_args)

    def members(name):
        value = parts[name]
        return list(value) if layout == "split" else (list(value.variables) if layout == "sharded" else [value])

    trainable = [v for n in start for v in members(n)]

    def whole(name):
        return tf.concat([tf.convert_to_tensor(v) for v in members(name)], axis=0)

    @tf.function
    def step(inputs, targets):
        def replica_fn(inputs, targets):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.matmul(inputs, whole("kernel")) + whole("bias") - targets))
            optimizer.apply_gradients(zip(tape.gradient(loss, trainable), trainable))

        if strategy is None:
            return replica_fn(inputs, targets)
        return strategy.run(replica_fn, args=(inputs, targets))

    if strategy is None:
        for t in range(STEPS):
            step(x[t], y[t])
    else:
        coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
        for t in range(STEPS):
            coordinator.schedule(step, args=(tf.constant(x[t]), tf.constant(y[t])))
        coordinator.join()
    result = {}
    for name in start:
        columns = [[v.numpy() for v in (var, *optimizer.get_slots(var))] for var in members(name)]
        result[name] = tuple(np.concatenate(column, axis=0) for column in zip(*columns))
    return result


def sharded_runs() -> dict:
    """tf-keras LAMB on variables split over two parameter servers, and on one device."""
    strategy = parameter_server_strategy(shards=2)
    return {
        "sharded": train_lamb_on_layout("sharded", strategy),
        "whole": train_lamb_on_layout("whole"),
        "split": train_lamb_on_layout("split"),
        "sharded/bias_correction": train_lamb_on_layout("sharded", strategy, bias_correction=True),
        "whole/bias_correction": train_lamb_on_layout("whole", bias_correction=True),
        "sharded/layerwise": train_lamb_on_layout("sharded", strategy, **LAYERWISE),
        "whole/layerwise": train_lamb_on_layout("whole", **LAYERWISE),
    }


# Layer-wise learning rates: the kernel (both its shards) at half the bias's rate.
LAYERWISE = dict(layerwise_lr_decay=0.5, layer_depths=[("kernel", 0), ("bias", 1)])


def ulps(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in float32 ulps of b's largest magnitude."""
    scale = np.float32(np.max(np.abs(b)))
    difference = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return difference / float(np.spacing(scale if scale else np.float32(0)))


def start_child(case: str, output, **extra_env):
    """Starts ``python distributed_cases.py CASE OUTPUT`` with the tf_bertopt the caller imported."""
    import subprocess

    import tf_bertopt

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(tf_bertopt.__file__)))
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, **extra_env)
    env["PYTHONPATH"] = os.pathsep.join([package_root, tests_dir, env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, os.path.join(tests_dir, "distributed_cases.py"), case, str(output)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_children(processes, timeout: float) -> list[str]:
    """Waits for every child; returns the stderr tails of those that failed.
    Kills any still running when the time is up or something goes wrong."""
    import subprocess

    try:
        errors = []
        for process in processes:
            if process.returncode is not None:
                continue  # waited for before
            try:
                _, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                errors.append(f"timed out after {timeout} s")
                continue
            if process.returncode != 0:
                errors.append(stderr[-4000:])
        return errors
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def run_in_child(case: str, output, timeout: float) -> dict:
    errors = finish_children([start_child(case, output)], timeout)
    if errors:
        raise AssertionError(f"{case} runs failed:\n{errors[0]}")
    with open(output, "rb") as stream:
        return pickle.load(stream)


CASES = {"mirrored": mirrored_runs, "multi_worker": multi_worker_run, "sharded": sharded_runs}

if __name__ == "__main__":
    case, output = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    results = CASES[case]()
    results["seconds"] = time.perf_counter() - start
    with open(output, "wb") as stream:
        pickle.dump(results, stream)
    print(json.dumps({"case": case, "seconds": results["seconds"]}))
