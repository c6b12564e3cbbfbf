"""A training job killed with SIGKILL and started again ends bit-identical to one never killed.

Real training of a tiny model runs in child processes (tests/resumable_training.py,
driven by tests/kill_and_resume.py). The same list of jobs runs once without
interruption and once killed at several points and restarted each time; every
model variable, every optimizer variable (``m``/``v`` slots, ``iterations``,
EMA averages, gradient accumulators) and the learning rate of the next update
must agree bit for bit. Optimizers are built with their default arguments, so
the tests follow the default update path.

The jobs cover ``model.fit`` with each flavour's ``BackupAndRestore`` and a
custom loop with ``tf.train.CheckpointManager``, both flavours and both
optimizers, Keras 3 gradient accumulation and EMA. The kills land in the middle
of an epoch, right after a checkpoint was written, between micro-batches of an
accumulated update, and inside a checkpoint write (which must leave the
previous checkpoint the one that is loaded).

``TF_BERTOPT_SOAK=1`` adds a longer run: every combination, killed at random
points chosen by several seeds.
"""

from __future__ import annotations

import os
import random

import pytest

import kill_and_resume

EPOCHS, PER_EPOCH = 3, 4
JOBS = [
    # model.fit, killed by the parent when it reports step 6 (in the second epoch; the job waits there).
    dict(
        name="fit_keras3_adamw_ema",
        flavour="keras3",
        optimizer="AdamWeightDecay",
        driver="fit",
        ema=True,
        hold_after="step 6",
    ),
    # model.fit, killing itself right after BackupAndRestore wrote the end of epoch 1.
    dict(name="fit_tf_keras_lamb", flavour="tf_keras", optimizer="LAMB", driver="fit", die_after="saved 4"),
    # Custom loop saving every micro-batch; dies after the save of micro-batch 4 (one into an update of 3).
    dict(
        name="loop_keras3_lamb_accumulation_ema",
        flavour="keras3",
        optimizer="LAMB",
        driver="loop",
        accumulation=3,
        ema=True,
        save_every=1,
        die_after="saved 4",
    ),
    # Custom loop saving every 2 steps; dies inside the write of checkpoint 6.
    dict(
        name="loop_tf_keras_adamw_ema",
        flavour="tf_keras",
        optimizer="AdamWeightDecay",
        driver="loop",
        ema=True,
        save_every=2,
        die_inside_save=6,
    ),
    # Custom loop saving every 3 steps, killed by the parent when it reports step 5 (the job waits there).
    dict(
        name="loop_tf_keras_lamb", flavour="tf_keras", optimizer="LAMB", driver="loop", save_every=3, hold_after="step 5"
    ),
]
KILL_POINTS = ["fit_keras3_adamw_ema step 6", None, None, None, "loop_tf_keras_lamb step 5"]
DEFAULTS = dict(epochs=EPOCHS, batches_per_epoch=PER_EPOCH, accumulation=0, ema=False)


def with_defaults(jobs):
    return [{**DEFAULTS, **job} for job in jobs]


def never_killed(jobs):
    killing = ("die_after", "die_inside_save", "hold_after", "pace_s")
    return [{k: v for k, v in job.items() if k not in killing} for job in jobs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Starts the uninterrupted run beside the killed one; returns both folders and the killed run's starts."""
    jobs = with_defaults(JOBS)
    uninterrupted_dir = str(tmp_path_factory.mktemp("uninterrupted"))
    killed_dir = str(tmp_path_factory.mktemp("killed"))
    uninterrupted = kill_and_resume.start(never_killed(jobs), uninterrupted_dir)
    try:
        launches = kill_and_resume.run_with_kills(jobs, killed_dir, KILL_POINTS)
    finally:
        reference = kill_and_resume.finish(uninterrupted, uninterrupted_dir)
    assert reference.returncode == 0
    return uninterrupted_dir, killed_dir, launches


def assert_bit_identical(runs, job):
    uninterrupted_dir, killed_dir, _ = runs
    resumed = kill_and_resume.final_state(killed_dir, job)
    expected = kill_and_resume.final_state(uninterrupted_dir, job)
    assert kill_and_resume.bitwise_differences(resumed, expected) == []
    return resumed


def resumed_from(runs, job) -> list[int]:
    """The steps ``job`` was resumed from, one per start after its first."""
    _, _, launches = runs
    starts = [launch.restored(job) for launch in launches]
    return [step for step in starts if step is not None][1:]


def test_fit_keras3_killed_mid_epoch_ends_bit_identical(runs):
    job = "fit_keras3_adamw_ema"
    assert resumed_from(runs, job) == [PER_EPOCH]  # the start of the second epoch
    state = assert_bit_identical(runs, job)
    assert int(state["optimizer/0/iteration"]) == EPOCHS * PER_EPOCH


def test_fit_tf_keras_killed_right_after_checkpoint_ends_bit_identical(runs):
    assert resumed_from(runs, "fit_tf_keras_lamb") == [PER_EPOCH]
    assert_bit_identical(runs, "fit_tf_keras_lamb")


def test_loop_killed_between_micro_batches_ends_bit_identical(runs):
    job = "loop_keras3_lamb_accumulation_ema"
    assert resumed_from(runs, job) == [4]  # one micro-batch into the second update of 3
    state = assert_bit_identical(runs, job)
    accumulators = [k for k in state if k.endswith("gradient_accumulator")]
    assert accumulators  # they are part of the state compared


def test_kill_inside_checkpoint_write_resumes_from_previous_complete_checkpoint(runs):
    _, _, launches = runs
    job = "loop_tf_keras_adamw_ema"
    marker = os.path.join(job, "died_inside_save")
    died = next(launch for launch in launches if marker in launch.files)
    # The dying write had put checkpoint 6's files in place but never named it the latest.
    assert os.path.join(job, "checkpoints", "ckpt-6.index") in died.files
    state = died.files[os.path.join(job, "checkpoints", "checkpoint")].decode()
    assert 'model_checkpoint_path: "ckpt-4"' in state
    assert resumed_from(runs, job) == [4]
    assert_bit_identical(runs, job)


def test_loop_killed_between_checkpoints_ends_bit_identical(runs):
    job = "loop_tf_keras_lamb"
    assert resumed_from(runs, job) == [3]
    assert_bit_identical(runs, job)


if os.environ.get("TF_BERTOPT_SOAK") == "1":
    SOAK_SEEDS = range(int(os.environ.get("TF_BERTOPT_SOAK_SEEDS", "4")))
    SOAK_LAUNCH_TIMEOUT_S = 3600  # one start may run many of the 20 jobs

    def soak_jobs(seed: int):
        """Every combination, with random kill points: parent kills at random steps and
        during random checkpoint writes, and self-kills inside random checkpoint writes."""
        rng = random.Random(seed)
        jobs, kill_points = [], []
        order = {"step": 0, "saving": 1, "inside": 2, "saved": 3}
        for flavour in ("keras3", "tf_keras"):
            for optimizer in ("AdamWeightDecay", "LAMB"):
                for driver in ("fit", "loop"):
                    for variant in ("plain", "ema", "accumulation") if flavour == "keras3" else ("plain", "ema"):
                        name = f"{driver}_{flavour}_{optimizer}_{variant}"
                        job = dict(DEFAULTS, name=name, flavour=flavour, optimizer=optimizer, driver=driver,
                                   epochs=4, ema=variant == "ema", accumulation=2 if variant == "accumulation" else 0,
                                   pace_s=rng.choice([0.02, 0.05, 0.1]))
                        steps = job["epochs"] * job["batches_per_epoch"]
                        every = job["batches_per_epoch"]
                        events = []  # (step, order, kill point)
                        if driver == "loop":
                            every = job["save_every"] = rng.choice([1, 2, 3])
                            if rng.random() < 0.3:
                                job["die_inside_save"] = every * rng.randint(1, (steps - 1) // every)
                                events.append((job["die_inside_save"], order["inside"], None))
                        event = rng.choice(["step", "saving", "saved"] if driver == "loop" else ["step", "saved"])
                        if event == "step":
                            step = rng.randint(1, steps - 1)
                        else:
                            step = every * rng.randint(1, (steps - 1) // every)
                        events.append((step, order[event], f"{name} {event} {step}"))
                        kill_points.extend(point for _, _, point in sorted(events, key=lambda e: e[:2]))
                        jobs.append(job)
        return jobs, kill_points

    @pytest.mark.parametrize("seed", SOAK_SEEDS)
    def test_soak_random_kills_end_bit_identical(tmp_path, seed):
        jobs, kill_points = soak_jobs(seed)
        uninterrupted_dir, killed_dir = str(tmp_path / "uninterrupted"), str(tmp_path / "killed")
        uninterrupted = kill_and_resume.start(never_killed(jobs), uninterrupted_dir)
        try:
            kill_and_resume.run_with_kills(jobs, killed_dir, kill_points, timeout_s=SOAK_LAUNCH_TIMEOUT_S)
        finally:
            kill_and_resume.finish(uninterrupted, uninterrupted_dir, timeout_s=SOAK_LAUNCH_TIMEOUT_S)
        for job in jobs:
            resumed = kill_and_resume.final_state(killed_dir, job["name"])
            expected = kill_and_resume.final_state(uninterrupted_dir, job["name"])
            assert kill_and_resume.bitwise_differences(resumed, expected) == [], job["name"]

    def test_soak_mid_epoch_backups_of_fit_do_not_resume_bit_identical(tmp_path):
        # What fault-tolerance.md warns of, and a check that the comparison sees a wrong resume:
        # BackupAndRestore(save_freq=2) resumed mid-epoch replays the epoch's batches from its start.
        jobs = with_defaults(
            [dict(name=f"fit_{f}_every_2", flavour=f, optimizer="LAMB", driver="fit", save_freq=2, die_after="saved 6")
             for f in ("keras3", "tf_keras")]
        )
        uninterrupted_dir, killed_dir = str(tmp_path / "uninterrupted"), str(tmp_path / "killed")
        uninterrupted = kill_and_resume.start(never_killed(jobs), uninterrupted_dir)
        try:
            kill_and_resume.run_with_kills(jobs, killed_dir, [None, None], timeout_s=SOAK_LAUNCH_TIMEOUT_S)
        finally:
            kill_and_resume.finish(uninterrupted, uninterrupted_dir, timeout_s=SOAK_LAUNCH_TIMEOUT_S)
        for job in jobs:
            resumed = kill_and_resume.final_state(killed_dir, job["name"])
            expected = kill_and_resume.final_state(uninterrupted_dir, job["name"])
            assert kill_and_resume.bitwise_differences(resumed, expected) != [], job["name"]
