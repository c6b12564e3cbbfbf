"""Running ``tf-bertopt`` as a subprocess, and checking the PNGs it writes."""

from __future__ import annotations

import os
import pathlib
import struct
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def environment() -> dict[str, str]:
    """This checkout first on the path, TensorFlow quiet, no GPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_cli(*arguments: str, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m tf_bertopt ARGUMENTS``; text output captured."""
    return run_python("-m", "tf_bertopt", *arguments, cwd=cwd, timeout=timeout)


def run_python(*arguments: str, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=cwd or REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails if the file is not a PNG."""
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG (starts with {data[:8]!r})"
    assert data[12:16] == b"IHDR", f"{path} has no IHDR chunk first"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND", f"{path} is truncated (no IEND chunk)"
    return width, height


def error_lines(stderr: str) -> list[str]:
    """The lines of our own error messages (not TensorFlow's start-up log)."""
    return [line for line in stderr.splitlines() if line.startswith("tf-bertopt") and ": error: " in line]
