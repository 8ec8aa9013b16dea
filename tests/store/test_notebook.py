"""The analysis notebook runs top to bottom against a small store (the tiny demo's)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # Ray, the demo or a notebook kernel: see `pytest -m "not slow"`

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "query_heatmaps.ipynb"


def test_notebook_executes(demo_result, tmp_path, monkeypatch):
    work = Path(demo_result["workdir"])
    monkeypatch.setenv("DENSECAM_STORE", str(work / "store"))
    monkeypatch.setenv("DENSECAM_BOXES", str(work / "data" / "lesion_boxes.csv"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "images explained" in text and "random baseline" in text
    assert "quality of run" in text and "images scored" in text, "the tiny demo scores map quality"
    assert "only one run" not in text, "the tiny demo store has two runs to compare"
    assert any("image/png" in o.get("data", {}) for o in outputs), "overlays shown inline"
