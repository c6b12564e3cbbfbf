"""Every notebook in notebooks/ runs top to bottom without an error.

The same check as ``pytest --nbmake notebooks/``, inside the normal test run:
each notebook is executed in a fresh kernel (this Python, this checkout first
on the path) from the notebooks folder; its outputs are not written back.
"""

from __future__ import annotations

import os

import nbclient
import nbformat
import pytest

from cli_helpers import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_the_three_user_notebooks_are_there():
    names = {path.name for path in NOTEBOOKS}
    assert {"01_quick_start.ipynb", "02_schedules.ipynb", "03_lamb_vs_adamw_batch_sizes.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
