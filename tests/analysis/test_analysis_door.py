"""The analysis door: a new analysis of stored maps is one module (here, one function in the test) that reads a
run and writes its results with ``write_analysis`` under a kind registered with ``register_analysis_kind``;
listing, reading back and versioning by settings come with the door."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from densecam_core.store import layout
from densecam_core.store.analyses import StoredAnalysis, list_analyses, write_analysis
from tests.support.store import committed_run

KIND = "peakatlas"


def peak_atlas(run, *, block: int) -> str:
    """A toy analysis: where each image's Grad-CAM map of ``block`` peaks, as a fraction of its grid."""
    rows = []
    for image_id in run.index.loc[run.index["status"] == "ok", "image_id"]:
        grid = np.asarray(run.maps("gradcam", block, image_ids=[image_id]))[0]
        grid = grid.reshape(grid.shape[-2:])  # the run's one target
        y, x = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
        rows.append({"image_id": image_id, "peak_y": y / grid.shape[0], "peak_x": x / grid.shape[1]})
    return write_analysis(run.url, KIND, settings={"block": block}, tables={"peaks.parquet": pd.DataFrame(rows)})


def test_a_toy_analysis_is_one_function_behind_the_door(tmp_path):
    _, run = committed_run(tmp_path)
    with pytest.raises(ValueError, match="unknown analysis 'peakatlas'"):
        write_analysis(run.url, KIND, settings={}, tables={})
    layout.register_analysis_kind(KIND)
    try:
        first, second = peak_atlas(run, block=3), peak_atlas(run, block=4)
        assert first != second  # another setting, another folder: never an overwrite
        assert peak_atlas(run, block=3) == first  # the same settings, the same folder
        found = dict(list_analyses(run.store_url, run.url, KIND))
        assert set(found) == {first, second}
        stored = StoredAnalysis(run.store_url, run.url, first, found[first])
        peaks = stored.table("peaks.parquet")
        assert stored.settings == {"block": 3} and len(peaks) == int((run.index["status"] == "ok").sum())
        assert peaks[["peak_y", "peak_x"]].stack().between(0, 1).all()
    finally:
        layout.ANALYSIS_KINDS.remove(KIND)
    with pytest.raises(ValueError, match="lower-case word"):
        layout.register_analysis_kind("../escape")
