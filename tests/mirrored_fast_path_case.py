"""Child process of ``test_execution_modes``: the fast path under ``MirroredStrategy``.

Two logical CPUs must be made before TensorFlow starts, hence a process of
its own. Thresholds are lowered so that variables take every route (compiled
in place, compiled in groups of one shape, LAMB's reused buffer, packed,
TensorFlow's kernels). Prints one JSON line: for each flavour and optimizer,
whether the fast path traced compiled code, the most variables it planned
together (every variable: each replica's are planned as one step), and
whether its weights equal the reference path's (``fused=False``) bit for bit.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402

from tf_bertopt import fused_updates, keras3, tf_keras, update_plan  # noqa: E402

update_plan.SMALL_ELEMENTS, fused_updates.SCRATCH_MIN_ELEMENTS = 9, 12
update_plan.GROUP_MIN_VARIABLES, update_plan.GROUP_SIZE = 3, 2
SHAPES = [(6, 4), (4, 3), (3,), (3,), (5, 5), (2,), (2,), (2,), (1, 2), (4,)]
planned = []
_plan = update_plan.plan


def recording_plan(variables, *args, **kwargs):
    planned.append(len(variables))
    return _plan(variables, *args, **kwargs)


update_plan.plan = recording_plan


def trained(api, name, fused):
    rng = np.random.default_rng(0)
    initial = [rng.normal(0, 0.5, shape).astype(np.float32) for shape in SHAPES]
    steps = [[rng.normal(0, 0.3, shape).astype(np.float32) for shape in SHAPES] for _ in range(3)]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    make = keras.Variable if api is keras3 else tf.Variable
    with strategy.scope():
        variables = [make(value, name=f"kernel_{i}") for i, value in enumerate(initial)]
        optimizer = getattr(api, name)(1e-2, weight_decay_rate=0.01, fused=fused)
        optimizer.build(variables)

    @tf.function
    def step(grads):
        strategy.run(lambda: optimizer.apply_gradients(zip([g / 2 for g in grads], variables)))

    planned.clear()
    for grads in steps:
        step(grads)
    traced = fused and sum(f.experimental_get_tracing_count() for f in optimizer._fused_updates.compiled_functions())
    return [variable.numpy() for variable in variables], bool(traced), max(planned, default=0)


results = {}
for api in (keras3, tf_keras):
    for name in ("AdamWeightDecay", "LAMB"):
        (fast, traced, together), (reference, *_) = trained(api, name, True), trained(api, name, False)
        identical = all(np.array_equal(a, b) for a, b in zip(fast, reference))
        results[f"{api.__name__.rsplit('.', 1)[1]}/{name}"] = {
            "compiled": traced, "planned_together": together, "identical": identical
        }
print(json.dumps(results))
