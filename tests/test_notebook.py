"""notebooks/results.ipynb executes headless on the committed results."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT


def test_results_notebook_executes(tmp_path):
    if not list((ROOT / "results" / "runs").glob("*.json")):
        pytest.skip("no committed results yet")
    notebook = nbformat.read(ROOT / "notebooks" / "results.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert " runs from " in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
