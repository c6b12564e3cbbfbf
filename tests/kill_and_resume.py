"""Runs tests/resumable_training.py in child processes, killing them with SIGKILL.

``run_uninterrupted`` runs a list of jobs in one process; ``run_with_kills``
runs the same list, killing the process at each of the given progress lines
(or letting it die where a job is set to kill itself) and starting it again
until every job is done. ``final_state`` reads what a job left; the two runs'
final states are compared bit for bit by the tests.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resumable_training.py")
ROOT = os.path.dirname(os.path.dirname(SCRIPT))
LAUNCH_TIMEOUT_S = 300


class Launch:
    """One start of the script: the lines it printed and how it ended."""

    def __init__(self, lines: list[str], returncode: int, killed_at: str | None, files: dict[str, bytes]):
        self.lines, self.returncode, self.killed_at = lines, returncode, killed_at
        self.files = files  # what the folder held once the process was gone: path -> bytes (small files)

    def restored(self, job: str) -> int | None:
        """The step ``job`` resumed from in this start, if it ran."""
        for line in self.lines:
            if line.startswith(f"{job} restored "):
                return int(line.split()[-1])
        return None


def start(jobs: list[dict], workdir: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.makedirs(workdir, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, SCRIPT, json.dumps(jobs), workdir],
        stdout=subprocess.PIPE,
        stderr=open(os.path.join(workdir, "stderr.txt"), "ab"),
        text=True,
        env=env,
    )


def _lines(process: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def finish(
    process: subprocess.Popen, workdir: str, kill_at: str | None = None, timeout_s: float = LAUNCH_TIMEOUT_S
) -> Launch:
    """Reads ``process``'s lines until it ends, killing it when it prints ``kill_at``.

    The process is always gone when this returns.
    """
    deadline = time.monotonic() + timeout_s
    seen, killed_at = [], None
    try:
        lines = _lines(process)
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                break
            seen.append(line)
            if line == kill_at:
                process.send_signal(signal.SIGKILL)
                killed_at = line
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    except (queue.Empty, subprocess.TimeoutExpired):
        raise AssertionError(f"the training script ran past {timeout_s} s; its last lines: {seen[-5:]}") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"the training script failed ({process.returncode}):\n{_stderr_tail(workdir)}")
    return Launch(seen, process.returncode, killed_at, _snapshot(workdir))


def _snapshot(workdir: str) -> dict[str, bytes]:
    """Every file under ``workdir``, relative path -> contents (``b""`` for files over 4 KiB)."""
    files = {}
    for folder, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(folder, name)
            small = os.path.getsize(path) <= 4096
            with open(path, "rb") as f:
                files[os.path.relpath(path, workdir)] = f.read() if small else b""
    return files


def _stderr_tail(workdir: str) -> str:
    with open(os.path.join(workdir, "stderr.txt"), errors="replace") as f:
        return f.read()[-3000:]


def run_uninterrupted(jobs: list[dict], workdir: str) -> Launch:
    launch = finish(start(jobs, workdir), workdir)
    assert launch.returncode == 0, launch.lines[-5:]
    return launch


def run_with_kills(
    jobs: list[dict], workdir: str, kill_points: list[str | None], timeout_s: float = LAUNCH_TIMEOUT_S
) -> list[Launch]:
    """One start per kill point (``None``: a job kills itself), then one to finish.

    Every start but the last must end by SIGKILL.
    """
    launches = []
    for kill_at in kill_points:
        launch = finish(start(jobs, workdir), workdir, kill_at, timeout_s)
        assert launch.returncode == -signal.SIGKILL, (
            f"expected the start killed at {kill_at!r} to die by SIGKILL; it ended with "
            f"{launch.returncode}, last lines {launch.lines[-3:]}"
        )
        launches.append(launch)
    last = finish(start(jobs, workdir), workdir, timeout_s=timeout_s)
    assert last.returncode == 0, last.lines[-5:]
    launches.append(last)
    return launches


def final_state(workdir: str, job: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(workdir, job, "final.npz")) as saved:
        return {key: saved[key] for key in saved.files}


def bitwise_differences(resumed: dict, uninterrupted: dict) -> list[str]:
    """What differs, bit for bit, between two final states (empty if nothing)."""
    if sorted(resumed) != sorted(uninterrupted):
        return [f"variables differ: {sorted(set(resumed) ^ set(uninterrupted))}"]
    differences = []
    for key in sorted(uninterrupted):
        a, b = resumed[key], uninterrupted[key]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            gap = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.shape == b.shape else "shape"
            differences.append(f"{key}: max |resumed - uninterrupted| = {gap}")
    return differences
