"""``tf-bertopt bench``: optimizer step time against Keras and the memory-bandwidth floor.

An optimizer step is memory-bound (SPEC §8): AdamWeightDecay must read
``w, g, m, v`` and write ``w, m, v``, 28 bytes per float32 parameter; LAMB at
least 40 (its trust ratio needs ``||w||`` and ``||u||`` before ``w`` can be
written, so one more read of ``w, m, v`` and a write of ``w``). The floor is
those bytes over the memory bandwidth, which this module measures in the same
process, round by round, with streaming copies and a triad.

Every candidate (our optimizers as every user gets them, their reference
path ``fused=False``, Keras's ``AdamW`` and ``Lamb``) is built on the *same* variables and gradients, and timed
calling ``apply_gradients`` in a ``tf.function`` and in a
``tf.function(jit_compile=True)``, interleaved round by round; the table gives
the median, min and max of the per-round times, the ratio to Keras's
optimizer and to the floor, the first call's time (tracing, graph
optimisation, XLA compilation and one step) and the peak memory one step
allocates beyond what was live before it:

* on a GPU, ``tf.config.experimental.get_memory_info`` (peak minus current,
  after ``reset_memory_stats``);
* on a CPU, the process's peak resident set (``VmHWM``, reset through
  ``/proc/self/clear_refs``) minus its resident set before the step, after
  ``malloc_trim(0)`` has handed freed heap pages back, so that temporaries
  show up even when the allocator reuses memory.

Under ``--modes mirrored`` every candidate first sums the gradients over the
replicas, which costs the same whoever updates the variables; the same rounds
time that sum alone (``all-reduce``), and the table gives each candidate's
time beyond it (``update ms``) and that time's ratio to Keras's. On logical
CPUs the replicas share one memory, so the floor there counts every
replica's update.

For each ``jit_compile`` step the table also gives the bytes per parameter
XLA's optimized program reads and writes (``tf_bertopt.compiled_traffic``):
the traffic it planned, which bounds how close to the floor it can get.

The step applies a constant learning rate without clipping, the same for
every candidate, with BERT's exclusions from weight decay.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import functools
import gc
import json
import math
import os
import platform
import statistics
import time
import warnings
from typing import Callable, Sequence

import numpy as np

from tf_bertopt.cli import compiled_traffic
from tf_bertopt.cli.arguments import UsageError

BYTES_PER_PARAMETER = {"adamw": 28, "lamb": 40}
CANDIDATES = ("adamw", "adamw-reference", "keras-adamw", "lamb", "lamb-reference", "keras-lamb")
MODES = ("function", "jit", "mirrored")
DEFAULT_MODES = ("function", "jit")
# The mirrored mode's replicas: logical CPU devices made before TensorFlow starts (or the GPUs).
MIRRORED_REPLICAS = 2
# The mirrored mode's extra entry: the gradients' all-reduce alone.
ALL_REDUCE = "all-reduce"
LEARNING_RATE = 1e-4
WEIGHT_DECAY_RATE = 0.01
EXCLUSIONS = ["LayerNorm", "layer_norm", "bias"]  # BERT's list (keras-hub names its LayerNorms layer_norm)


# --------------------------------------------------------------------------- variable sets


def bert_shapes(hidden: int, layers: int, intermediate: int, vocab: int = 30522, positions: int = 512):
    """``(path, shape)`` of every trainable variable of a BERT encoder with pooler."""
    shapes = [
        ("bert/embeddings/word_embeddings", (vocab, hidden)),
        ("bert/embeddings/position_embeddings", (positions, hidden)),
        ("bert/embeddings/token_type_embeddings", (2, hidden)),
        ("bert/embeddings/LayerNorm/gamma", (hidden,)),
        ("bert/embeddings/LayerNorm/beta", (hidden,)),
    ]
    for i in range(layers):
        prefix = f"bert/encoder/layer_{i}"
        for dense, fan_in, fan_out in (
            ("attention/self/query", hidden, hidden),
            ("attention/self/key", hidden, hidden),
            ("attention/self/value", hidden, hidden),
            ("attention/output/dense", hidden, hidden),
            ("intermediate/dense", hidden, intermediate),
            ("output/dense", intermediate, hidden),
        ):
            shapes += [(f"{prefix}/{dense}/kernel", (fan_in, fan_out)), (f"{prefix}/{dense}/bias", (fan_out,))]
            if dense in ("attention/output/dense", "output/dense"):
                layer_norm = dense.rsplit("/", 1)[0] + "/LayerNorm"
                shapes += [(f"{prefix}/{layer_norm}/gamma", (hidden,)), (f"{prefix}/{layer_norm}/beta", (hidden,))]
    shapes += [("bert/pooler/dense/kernel", (hidden, hidden)), ("bert/pooler/dense/bias", (hidden,))]
    return shapes


def tiny_shapes(count: int):
    """``count`` small variables (16 to 1024 parameters) in blocks of dense + LayerNorm layers."""
    block = [
        ("dense/kernel", (32, 32)),
        ("dense/bias", (32,)),
        ("LayerNorm/gamma", (32,)),
        ("LayerNorm/beta", (32,)),
        ("projection/kernel", (32, 16)),
        ("projection/bias", (16,)),
        ("gate/kernel", (16, 8)),
        ("gate/bias", (8,)),
    ]
    return [(f"block_{i // len(block)}/{block[i % len(block)][0]}", block[i % len(block)][1]) for i in range(count)]


def keras_hub_bert_shapes(**config):
    """``(path, shape)`` of the trainable variables of a ``keras_hub.models.BertBackbone`` built from ``config``."""
    import keras_hub

    backbone = keras_hub.models.BertBackbone(**config)
    shapes = [(variable.path, tuple(variable.shape)) for variable in backbone.trainable_variables]
    del backbone
    return shapes


TINY_BERT = dict(vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=128, max_sequence_length=128)

VARIABLE_SETS: dict[str, Callable[[], list]] = {
    "bert-base": lambda: bert_shapes(768, 12, 3072),
    "bert-large": lambda: bert_shapes(1024, 24, 4096),
    "tiny-2000": lambda: tiny_shapes(2000),
    "tiny-bert": lambda: keras_hub_bert_shapes(**TINY_BERT),
    "quick": lambda: bert_shapes(16, 1, 32, vocab=64, positions=16) + tiny_shapes(16),
}
SET_NOTES = {
    "bert-base": "BERT-base encoder and pooler (width 768, 12 layers, 30522-token vocabulary)",
    "bert-large": "BERT-large encoder and pooler (width 1024, 24 layers, 30522-token vocabulary)",
    "tiny-2000": "2000 small variables of 8 to 1024 parameters (8 shapes)",
    "tiny-bert": "keras_hub.models.BertBackbone(vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=64, "
    "intermediate_dim=128, max_sequence_length=128), built from its config",
    "quick": "a 1-layer BERT of width 16 and 16 tiny variables (a smoke test, not a measurement)",
}


# --------------------------------------------------------------------------- measurement helpers


@functools.lru_cache(maxsize=None)
def on_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _sync():
    if on_gpu():
        import tensorflow as tf

        tf.test.experimental.sync_devices()


def _timed(function: Callable[[], object], repeats: int = 1) -> float:
    """Seconds per call of ``function``, over ``repeats`` back-to-back calls."""
    _sync()
    began = time.perf_counter()
    for _ in range(repeats):
        function()
    _sync()
    return (time.perf_counter() - began) / repeats


class PeakMemory:
    """Bytes allocated at the peak of a call beyond what was live before it (see the module docstring)."""

    def __init__(self):
        import tensorflow as tf

        self.gpu = bool(tf.config.list_logical_devices("GPU"))
        self.method = (
            "tf.config.experimental.get_memory_info('GPU:0'): peak - current"
            if self.gpu
            else "VmHWM - VmRSS (reset via /proc/self/clear_refs, after malloc_trim(0))"
        )
        self._libc = None
        if not self.gpu:
            with contextlib.suppress(OSError):
                self._libc = ctypes.CDLL("libc.so.6")
            self.available = os.path.exists("/proc/self/clear_refs") and self._libc is not None

        else:
            self.available = True

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"no {field} in /proc/self/status")

    def measure(self, function: Callable[[], object]) -> int | None:
        if not self.available:
            return None
        import tensorflow as tf

        gc.collect()
        _sync()
        try:
            if self.gpu:
                tf.config.experimental.reset_memory_stats("GPU:0")
                before = tf.config.experimental.get_memory_info("GPU:0")["current"]
                function()
                _sync()
                return tf.config.experimental.get_memory_info("GPU:0")["peak"] - before
            self._libc.malloc_trim(0)
            before = self._status("VmRSS")
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
            function()
            return max(0, self._status("VmHWM") - before)
        except (OSError, ValueError):
            self.available = False
            return None


class Bandwidth:
    """Streaming kernels over float32 arrays of ``size`` elements, in bytes per second.

    ``xla triad`` computes ``a <- b + s*a`` in place with XLA, on the device
    the optimizers run on (12 bytes per element: XLA writes a variable in
    place only when the computation also reads it); ``numpy copy`` (CPU only)
    is a single-threaded ``np.copyto`` (8 bytes per element). The machine's
    bandwidth is taken as the best of them.
    """

    def __init__(self, size: int):
        import tensorflow as tf

        self.size = size
        self._a, self._b = (tf.Variable(tf.fill([size], float(i + 1))) for i in range(2))
        def triad():
            # a converges to 2*b: no overflow, no denormals however many rounds run. Returning
            # nothing matters: a returned value of `a` would keep XLA from updating it in place.
            self._a.assign(self._b + 0.5 * self._a)

        triad = tf.function(triad, jit_compile=True, autograph=False)
        self.methods: dict[str, tuple[Callable, int]] = {"xla triad": (triad, 12)}
        if not on_gpu():
            source, target = np.ones(size, np.float32), np.zeros(size, np.float32)
            self.methods["numpy copy"] = (lambda: np.copyto(target, source), 8)
        for function, _ in self.methods.values():
            function()
        self.samples: dict[str, list[float]] = {name: [] for name in self.methods}

    def sample(self, repeats: int = 3) -> None:
        for name, (function, bytes_per_element) in self.methods.items():
            seconds = min(_timed(function) for _ in range(repeats))
            self.samples[name].append(bytes_per_element * self.size / seconds)

    def summary(self) -> dict:
        medians = {name: statistics.median(values) for name, values in self.samples.items()}
        best = max(medians, key=medians.get)
        return {"bytes_per_second": medians[best], "method": best, "median_by_method": medians}


# --------------------------------------------------------------------------- candidates


def make_optimizer(candidate: str):
    """A fresh optimizer for ``candidate`` (one of ``CANDIDATES``)."""
    import keras

    from tf_bertopt import keras3

    ours = dict(
        learning_rate=LEARNING_RATE,
        weight_decay_rate=WEIGHT_DECAY_RATE,
        exclude_from_weight_decay=EXCLUSIONS,
        fused=not candidate.endswith("-reference"),
    )
    if candidate.startswith("adamw"):
        return keras3.AdamWeightDecay(**ours)
    if candidate.startswith("lamb"):
        return keras3.LAMB(**ours)
    keras_class = {"keras-adamw": keras.optimizers.AdamW, "keras-lamb": keras.optimizers.Lamb}[candidate]
    optimizer = keras_class(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY_RATE, epsilon=1e-6)
    # Keras matches the leaf name only: these leaves are BERT's LayerNorm and bias variables.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def family(candidate: str) -> str:
    return "lamb" if "lamb" in candidate else "adamw"


def keras_counterpart(candidate: str) -> str:
    return f"keras-{family(candidate)}"


@dataclasses.dataclass
class Entry:
    candidate: str
    mode: str
    step: Callable[[], object]
    first_call_s: float = math.nan
    repeats: int = 1
    times_s: list = dataclasses.field(default_factory=list)
    peak_bytes: int | None = None
    compiled_bytes_per_parameter: float | None = None

    @property
    def key(self) -> str:
        return f"{self.candidate}/{self.mode}"


# --------------------------------------------------------------------------- one variable set


def make_variables(shapes, seed: int = 0):
    """Keras variables at the given paths, and one fixed gradient per variable (a ``tf.Variable``)."""
    import keras
    import tensorflow as tf

    tf.random.set_seed(seed)
    variables, gradients = [], []
    for path, shape in shapes:
        *scopes, leaf = path.split("/")
        with contextlib.ExitStack() as stack:
            for scope in scopes:
                stack.enter_context(keras.name_scope(scope))
            variables.append(keras.Variable(tf.random.normal(shape, stddev=0.02), name=leaf))
        gradients.append(tf.Variable(tf.random.normal(shape, stddev=0.01), trainable=False))
    return variables, gradients


def memory_needed(shapes, candidates: Sequence[str]) -> int:
    """Bytes the variables, gradients and every candidate's two slots take (float32)."""
    parameters = sum(int(np.prod(shape)) for _, shape in shapes)
    return 4 * parameters * (2 + 2 * len(candidates))


def available_memory() -> int | None:
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return None  # the GPU allocator reports out-of-memory clearly itself
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def run_set(
    set_name: str,
    candidates: Sequence[str],
    modes: Sequence[str],
    rounds: int,
    min_seconds: float,
    bandwidth: Bandwidth,
    printer=print,
) -> dict:
    """Times every candidate and mode on one variable set; returns the results as a dict."""
    shapes = VARIABLE_SETS[set_name]()
    parameters = sum(int(np.prod(shape)) for _, shape in shapes)
    needed, available = memory_needed(shapes, candidates), available_memory()
    if available is not None and needed > 0.9 * available:
        raise UsageError(
            f"the {set_name} set with {len(candidates)} candidates needs about {needed / 2**30:.1f} GiB "
            f"(variables, gradients and two slots per candidate) but only {available / 2**30:.1f} GiB is "
            "available; pass fewer --candidates"
        )
    printer(f"\n{set_name}: {SET_NOTES[set_name]} ({len(shapes)} variables, {parameters / 1e6:.1f}M parameters)")
    entries = []
    single_modes = [mode for mode in modes if mode != "mirrored"]
    if single_modes:
        variables, gradients = make_variables(shapes)
        for candidate in candidates:
            optimizer = built_optimizer(candidate, variables)
            for mode in single_modes:
                step = tf_function(applying(optimizer, gradients, variables), jit_compile=mode == "jit")
                entries.append(Entry(candidate, mode, step))
    if "mirrored" in modes:
        strategy = mirrored_strategy()
        with strategy.scope():
            variables, gradients = make_variables(shapes)
            optimizers = {candidate: built_optimizer(candidate, variables) for candidate in candidates}
        for candidate, optimizer in optimizers.items():
            apply = applying(optimizer, gradients, variables)
            entries.append(Entry(candidate, "mirrored", tf_function(lambda apply=apply: strategy.run(apply), False)))
        summing = summing_gradients(gradients)
        entries.append(Entry(ALL_REDUCE, "mirrored", tf_function(lambda: strategy.run(summing), False)))

    for entry in entries:
        entry.first_call_s = _timed(entry.step)
        steady = _timed(entry.step)
        entry.repeats = max(1, min(200, math.ceil(min_seconds / max(steady, 1e-6))))
        if entry.mode == "jit":
            entry.compiled_bytes_per_parameter = compiled_traffic.compiled_bytes_per_parameter(entry.step, parameters)
        printer(f"  first call {entry.key:<22} {entry.first_call_s:8.2f} s   then {steady * 1e3:9.2f} ms/step")
    for round_index in range(rounds):
        bandwidth.sample()
        shift = round_index % len(entries)
        for entry in entries[shift:] + entries[:shift]:
            entry.times_s.append(_timed(entry.step, entry.repeats))
    memory = PeakMemory()
    for entry in entries:
        entry.peak_bytes = memory.measure(entry.step)
    return summarize(set_name, shapes, entries, bandwidth.summary(), memory.method)


def built_optimizer(candidate: str, variables):
    optimizer = make_optimizer(candidate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an exclusion that matches no name in this set
        optimizer.build(variables)
    return optimizer


def make_logical_cpus() -> None:
    """Splits the CPU into ``MIRRORED_REPLICAS`` logical devices; must run before TensorFlow starts."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * MIRRORED_REPLICAS)


def mirrored_strategy():
    """``MirroredStrategy`` over the GPUs, or over the logical CPUs of ``make_logical_cpus``."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    devices = [device.name for device in (gpus or tf.config.list_logical_devices("CPU"))[:MIRRORED_REPLICAS]]
    return tf.distribute.MirroredStrategy(devices)


def applying(optimizer, gradients, variables) -> Callable[[], None]:
    """A function of no arguments (as ``experimental_get_compiler_ir`` wants) applying ``gradients``."""

    def apply():
        optimizer.apply_gradients(zip([g.read_value() for g in gradients], variables))

    return apply


def summing_gradients(gradients) -> Callable[[], None]:
    """The gradients summed over the replicas, as ``apply_gradients`` sums them first, and nothing else."""
    import tensorflow as tf

    def reduce():
        summed = tf.distribute.get_replica_context().all_reduce("sum", [g.read_value() for g in gradients])
        # Depending on every sum keeps the collective from being pruned; the scalar costs nothing.
        return tf.add_n([tf.reshape(s[(0,) * len(s.shape)], []) for s in summed])

    return reduce


def tf_function(function, jit_compile: bool):
    import tensorflow as tf

    return tf.function(function, jit_compile=jit_compile, autograph=False)


def summarize(set_name, shapes, entries, bandwidth, memory_method) -> dict:
    parameters = sum(int(np.prod(shape)) for _, shape in shapes)
    largest = 4 * max(int(np.prod(shape)) for _, shape in shapes)
    medians = {entry.key: statistics.median(entry.times_s) for entry in entries}
    reduced = medians.get(f"{ALL_REDUCE}/mirrored")
    results = []
    for entry in entries:
        median = medians[entry.key]
        if entry.candidate == ALL_REDUCE:
            times = {"median_ms": 1e3 * median, "min_ms": 1e3 * min(entry.times_s), "max_ms": 1e3 * max(entry.times_s)}
            samples = {"samples_ms": [1e3 * t for t in entry.times_s], "first_call_s": entry.first_call_s}
            results.append({"candidate": ALL_REDUCE, "mode": entry.mode, **times, **samples})
            continue
        replicas = MIRRORED_REPLICAS if entry.mode == "mirrored" and not on_gpu() else 1
        floor = replicas * BYTES_PER_PARAMETER[family(entry.candidate)] * parameters / bandwidth["bytes_per_second"]
        reference = medians.get(f"{keras_counterpart(entry.candidate)}/{entry.mode}")
        update = None if reduced is None or entry.mode != "mirrored" else median - reduced
        keras_update = None if update is None or reference is None else reference - reduced
        results.append(
            {
                "candidate": entry.candidate,
                "mode": entry.mode,
                "median_ms": 1e3 * median,
                "min_ms": 1e3 * min(entry.times_s),
                "max_ms": 1e3 * max(entry.times_s),
                "steps_per_sample": entry.repeats,
                "samples_ms": [1e3 * t for t in entry.times_s],
                "floor_ms": 1e3 * floor,
                "ratio_to_floor": median / floor,
                "ratio_to_keras": None if reference is None else median / reference,
                "update_ms": None if update is None else 1e3 * update,
                "update_ratio_to_keras": None if not keras_update or keras_update <= 0 else update / keras_update,
                "first_call_s": entry.first_call_s,
                "peak_step_bytes": entry.peak_bytes,
                "compiled_bytes_per_parameter": entry.compiled_bytes_per_parameter,
                "peak_step_in_largest_variables": None if entry.peak_bytes is None else entry.peak_bytes / largest,
            }
        )
    return {
        "set": set_name,
        "description": SET_NOTES[set_name],
        "variables": len(shapes),
        "parameters": parameters,
        "largest_variable_bytes": largest,
        "bandwidth": bandwidth,
        "peak_memory_method": memory_method,
        "results": results,
    }


def _cell(value, digits: int = 2, missing: str = "—") -> str:
    return missing if value is None else f"{value:.{digits}f}"


def format_table(result: dict) -> str:
    """The results of one set as a Markdown table (with the update beyond the all-reduce, under mirrored)."""
    bandwidth = result["bandwidth"]
    rows = [row for row in result["results"] if row["candidate"] != ALL_REDUCE]
    summed = [row for row in result["results"] if row["candidate"] == ALL_REDUCE]
    middle = ["update ms", "update × Keras"] if summed else []
    last = [] if summed else ["XLA B/param"]
    header = ["optimizer", "mode", "median ms", "min ms", "max ms", "× Keras", *middle, "× floor", "first call s"]
    header += ["step peak MB", *last]
    lines = [
        f"**{result['set']}**: {result['description']}. Memory bandwidth "
        f"{bandwidth['bytes_per_second'] / 1e9:.1f} GB/s ({bandwidth['method']}).",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|" + "---:|" * (len(header) - 2),
    ]
    for row in rows:
        peak = None if row["peak_step_bytes"] is None else row["peak_step_bytes"] / 2**20
        cells = [row["candidate"], row["mode"], *(_cell(row[key]) for key in ("median_ms", "min_ms", "max_ms"))]
        cells.append(_cell(row["ratio_to_keras"]))
        if summed:
            cells += [_cell(row.get("update_ms")), _cell(row.get("update_ratio_to_keras"))]
        cells += [_cell(row["ratio_to_floor"]), _cell(row["first_call_s"]), _cell(peak, 0, "n/a")]
        if not summed:
            cells.append(_cell(row.get("compiled_bytes_per_parameter"), 0))
        lines.append("| " + " | ".join(cells) + " |")
    for row in summed:
        lines += ["", f"The gradients' all-reduce alone: {row['median_ms']:.2f} ms (median; min {row['min_ms']:.2f} ms)."]
    return "\n".join(lines)


def machine() -> dict:
    import keras
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return {
        "device": gpus[0].name if gpus else "CPU",
        "gpu": [tf.config.experimental.get_device_details(d).get("device_name") for d in tf.config.list_physical_devices("GPU")],
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "platform": platform.platform(),
    }


def run(args: argparse.Namespace) -> int:
    import tf_bertopt

    if "mirrored" in args.modes:
        make_logical_cpus()
    sets = ["quick"] if args.quick else args.sets
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 7)
    min_seconds = 0.0 if args.quick else args.min_seconds
    report = {
        "command": command_line(args),
        "tf_bertopt": tf_bertopt.__version__,
        "machine": machine(),
        "candidates": list(args.candidates),
        "modes": list(args.modes),
        "rounds": rounds,
        "sets": [],
    }
    print(f"Device {report['machine']['device']}, load average {report['machine']['load_average']}")
    bandwidth = Bandwidth(2**20 if args.quick else 2**25)
    for set_name in sets:
        result = run_set(set_name, args.candidates, args.modes, rounds, min_seconds, bandwidth)
        report["sets"].append(result)
        print()
        print(format_table(result))
    report["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.json:
        with open(args.json, "w") as output:
            json.dump(report, output, indent=1)
        print(f"\nwrote {args.json}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command that repeats this run."""
    if args.quick:
        words = ["--quick"]
    else:
        words = ["--sets", ",".join(args.sets), "--min-seconds", f"{args.min_seconds:g}"]
    if args.rounds is not None:
        words += ["--rounds", str(args.rounds)]
    if list(args.candidates) != list(CANDIDATES):
        words += ["--candidates", ",".join(args.candidates)]
    if list(args.modes) != list(DEFAULT_MODES):
        words += ["--modes", ",".join(args.modes)]
    return " ".join(["tf-bertopt", "bench", *words])


def _choices(allowed: Sequence[str], what: str):
    def parse(text: str) -> list[str]:
        chosen = [item.strip() for item in text.split(",") if item.strip()]
        wrong = [item for item in chosen if item not in allowed]
        if not chosen or wrong:
            raise argparse.ArgumentTypeError(f"{what} must be a comma-separated subset of {', '.join(allowed)}; got {text!r}")
        return chosen

    return parse


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time optimizer steps against Keras's AdamW/Lamb and the memory-bandwidth floor",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument(
        "--sets",
        type=_choices(tuple(VARIABLE_SETS), "--sets"),
        default=["bert-base", "tiny-2000"],
        help="variable sets, comma-separated: bert-base, bert-large (needs ~19 GiB with every candidate), "
        "tiny-2000, tiny-bert (a keras-hub BertBackbone of 143k parameters), quick (default bert-base,tiny-2000)",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny set and 2 rounds: checks that it runs")
    parser.add_argument(
        "--candidates",
        type=_choices(CANDIDATES, "--candidates"),
        default=list(CANDIDATES),
        help=f"optimizers to time, comma-separated (default all: {','.join(CANDIDATES)})",
    )
    parser.add_argument(
        "--modes",
        type=_choices(MODES, "--modes"),
        default=list(DEFAULT_MODES),
        help="function (tf.function), jit (tf.function(jit_compile=True)), mirrored (tf.function under "
        f"MirroredStrategy over {MIRRORED_REPLICAS} logical CPUs, or the GPUs); default function,jit",
    )
    parser.add_argument("--rounds", type=_positive(int), default=None, help="interleaved rounds (default 7)")
    parser.add_argument(
        "--min-seconds",
        type=_positive(float),
        default=0.2,
        help="each sample repeats the step until it lasts about this long (default 0.2)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    parser.set_defaults(func=run)
