"""Prints the table of docs/distributed.md: how far N-replica training is
from one-device training, in float32 ulps of each variable's largest magnitude.

    python tests/distributed_report.py

Runs the same child processes as tests/test_distributed.py and
tests/test_sharded_lamb.py (about a minute on two cores).
"""

from __future__ import annotations

import json
import pickle
import sys
import tempfile
from pathlib import Path

import distributed_cases as cases


def run_all(folder: Path) -> tuple[dict, list[dict], dict]:
    workers = [f"127.0.0.1:{port}" for port in cases.free_ports(2)]
    worker_outputs = [folder / f"worker_{i}.pkl" for i in range(2)]
    processes = [cases.start_child(case, folder / f"{case}.pkl") for case in ("mirrored", "sharded")]
    processes += [
        cases.start_child(
            "multi_worker",
            output,
            TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}),
        )
        for i, output in enumerate(worker_outputs)
    ]
    errors = cases.finish_children(processes, timeout=600)
    if errors:
        sys.exit("\n----\n".join(errors))
    load = lambda path: pickle.load(open(path, "rb"))  # noqa: E731
    return load(folder / "mirrored.pkl"), [load(p) for p in worker_outputs], load(folder / "sharded.pkl")


def distances(ours, reference):
    """(weights, slots, EMA) maxima over the variables of two runs."""
    weights = max(cases.ulps(a[0], b[0]) for a, b in zip(ours, reference))
    slots = max(cases.ulps(x, y) for a, b in zip(ours, reference) for x, y in zip(a[1:3], b[1:3]))
    ema = [cases.ulps(a[3], b[3]) for a, b in zip(ours, reference) if len(a) > 3 and len(b) > 3]
    return weights, slots, max(ema) if ema else None


def rows(mirrored, workers, sharded):
    single = lambda name: mirrored[name.replace("fit/", "loop/") + "/single"]  # noqa: E731
    for prefix, flavour in (("", "Keras 3"), ("tf_keras/", "tf-keras")):
        for kind in ("adamw", "lamb"):
            name = f"{prefix}loop/{kind}"
            yield f"{flavour}, {kind}: MirroredStrategy, 2 replicas, custom loop", distances(
                mirrored[f"{name}/mirrored"], single(name)
            )
            for i, worker in enumerate(workers):
                yield f"{flavour}, {kind}: MultiWorkerMirroredStrategy, worker {i} of 2", distances(
                    worker[f"{name}/multi_worker"], single(name)
                )
    fits = (("fit/adamw", "Keras 3, adamw"), ("fit/lamb", "Keras 3, lamb"), ("tf_keras/fit/lamb", "tf-keras, lamb"))
    for name, label in fits:
        yield f"{label}: MirroredStrategy, 2 replicas, model.fit", distances(mirrored[f"{name}/mirrored"], single(name))
    for name, label in (("fit/adamw", "Keras 3, adamw, model.fit"), ("loop/lamb", "Keras 3, lamb, custom loop"),
                        ("tf_keras/fit/adamw", "tf-keras, adamw, model.fit")):
        yield f"{label}: jit_compile=True, MirroredStrategy, 1 replica", distances(
            mirrored[f"{name}/xla_mirrored"], single(name)
        )
    yield "Keras 3, adamw, clipnorm=0.5: MirroredStrategy", distances(
        mirrored["loop/adamw/clipnorm/mirrored"], mirrored["loop/adamw/clipnorm/single"]
    )
    yield "Keras 3, lamb, clipvalue=0.05: MirroredStrategy", distances(
        mirrored["loop/lamb/clipvalue/mirrored"], mirrored["loop/lamb/clipvalue/single"]
    )
    yield "(for scale) clipping each replica's gradient, then summing", distances(
        mirrored["replica_clip/adamw/mirrored"], mirrored["loop/adamw/single"]
    )
    for name in ("sharded", "sharded/bias_correction"):
        ours, whole = sharded[name], sharded[name.replace("sharded", "whole")]
        yield f"tf-keras, lamb{name[7:].replace('/', ', ')}: ParameterServerStrategy, 2 shards", distances(
            [ours[n] for n in ours], [whole[n] for n in ours]
        )
    split, whole = sharded["split"], sharded["whole"]
    yield "(for scale) a trust ratio per shard", distances([split[n] for n in split], [whole[n] for n in split])


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        results = run_all(Path(folder))
    number = lambda x: "–" if x is None else (f"{x:.3g}" if x < 1000 else f"{x:.1e}")  # noqa: E731
    print("| run (4 updates) | weights | slots m, v | EMA |\n|---|---:|---:|---:|")
    for label, values in rows(*results):
        print(f"| {label} | " + " | ".join(number(v) for v in values) + " |")


if __name__ == "__main__":
    main()
