"""Keeping TensorFlow's C++ start-up log out of the commands' output.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` when it is imported, which is why
the commands import it only when they run. Some lines (oneDNN, CUDA driver
probing) are written while its libraries load, before its logging is set up,
and ignore that variable; ``import_tensorflow_quietly`` drops those of them
below the level asked for from standard error and passes everything else
through.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "3"  # fatal errors only

# "I0000 00:00:1796327642.834171   12776 port.cc:153] ..." and the banner absl writes before them.
_LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\] ")
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def quiet_tensorflow_log(verbose: bool) -> bool:
    """Sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless ``verbose`` or the user set it; True if it did."""
    if verbose or LEVEL_VARIABLE in os.environ:
        return False
    os.environ[LEVEL_VARIABLE] = QUIET_LEVEL
    return True


def is_hidden_log_line(line: str, level: int) -> bool:
    """Whether ``line`` is a TensorFlow C++ log line that ``TF_CPP_MIN_LOG_LEVEL=level`` hides.

    Levels as TensorFlow's: 1 hides info (I), 2 also warnings (W), 3 also
    errors (E). absl's banner before the first such line goes with info.
    """
    if line.rstrip("\n") == _BANNER:
        return level >= 1
    return bool(_LOG_LINE.match(line)) and "IWE".index(line[0]) < level


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow, removing from standard error the C++ log lines ``TF_CPP_MIN_LOG_LEVEL`` hides."""
    try:
        level = int(os.environ.get(LEVEL_VARIABLE, "0"))
    except ValueError:
        level = 0
    if "tensorflow" in sys.modules or level <= 0:
        return
    with _stderr_without_log_lines(level):
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def _stderr_without_log_lines(level: int):
    # The C++ code writes to file descriptor 2 directly, so sys.stderr cannot
    # be swapped: the descriptor is pointed at a file, then the file replayed.
    try:
        descriptor = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real descriptor (e.g. a notebook)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(descriptor)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), descriptor)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, descriptor)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            sys.stderr.write("".join(line for line in text.splitlines(True) if not is_hidden_log_line(line, level)))
            sys.stderr.flush()
