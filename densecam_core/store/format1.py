"""Format 1 runs as an xarray Dataset: their groups reuse dimension names across sizes, so they are read
into memory rather than opened lazily (format 2 runs open as views of their Zarr groups)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def format1_dataset(
    run: Any, xr: Any, index: pd.DataFrame, rows: np.ndarray, methods: Sequence[str] | None, blocks: Sequence[int]
) -> Any:
    coords: dict[str, Any] = {"image": index["image_id"].to_numpy()}
    for column in ("row", "split", "body_part", "patient_id", "study_id", "label", "prob"):
        coords[column] = ("image", index[column].to_numpy())
    variables = {
        "logits": (("image", "class"), run.maps("logits", rows=rows)),
        "cam": (("image", "target", "y_b4", "x_b4"), run.maps("cam", rows=rows)),
    }
    for method in methods or run.methods:
        for block in blocks:
            variables[f"{method}_block{block}"] = (
                ("image", "target", f"y_b{block}", f"x_b{block}"),
                run.maps(method, block, rows=rows),
            )
    return xr.Dataset(variables, coords=coords, attrs={"run_id": run.run_id, "model_fingerprint": run.fingerprint})
