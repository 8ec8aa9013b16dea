"""The paste test's plan and its statistics (torch-free): for a flagged cluster, the region its maps point at,
the (source, recipient) pairs it is pasted between, and the mean logit change with a bootstrap interval.

The region is where the cluster's mean normalised map holds at least half its peak (the largest connected
part), as fractions of the model input; sources are the cluster's images, recipients images of the other
label (of the same body part where the group has one), both drawn with the audit's seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGION_LEVEL = 0.5
BOOTSTRAP = 1000
PAIR_COLUMNS = ["pair", "source_id", "source_path", "recipient_id", "recipient_path", "y0", "y1", "x0", "x1"]


def region_of(mean_map: np.ndarray, level: float = REGION_LEVEL) -> tuple[float, float, float, float]:
    """(y0, y1, x0, x1) as fractions of the grid: the bounding box of the largest connected set of cells where
    ``mean_map`` is at least ``level`` times its maximum."""
    from scipy import ndimage

    values = np.nan_to_num(mean_map, nan=0.0)
    if values.max() <= 0:
        raise ValueError("the cluster's mean map has no positive mass: there is no region to paste")
    components, count = ndimage.label(values >= level * values.max())
    sizes = ndimage.sum_labels(values, components, index=np.arange(1, count + 1))
    rows, cols = np.nonzero(components == int(np.argmax(sizes)) + 1)
    h, w = values.shape
    return rows.min() / h, (rows.max() + 1) / h, cols.min() / w, (cols.max() + 1) / w


def paste_pairs(
    sources: pd.DataFrame, recipients: pd.DataFrame, region: tuple[float, float, float, float], count: int, seed: int
) -> pd.DataFrame:
    """``count`` pairs: recipients drawn without replacement (all of them when fewer), each given a source in
    turn from a seeded shuffle of ``sources`` (index rows: image_id, path)."""
    if sources.empty or recipients.empty:
        raise ValueError(
            f"the paste test needs images of the cluster and of the other label; got {len(sources)} and {len(recipients)}"
        )
    rng = np.random.default_rng(seed)
    chosen = recipients.iloc[rng.permutation(len(recipients))[:count]].reset_index(drop=True)
    order = sources.iloc[rng.permutation(len(sources))].reset_index(drop=True)
    picked = order.iloc[np.arange(len(chosen)) % len(order)].reset_index(drop=True)
    y0, y1, x0, x1 = region
    return pd.DataFrame(
        {
            "pair": np.arange(len(chosen)),
            "source_id": picked["image_id"].astype(str),
            "source_path": picked["path"].astype(str),
            "recipient_id": chosen["image_id"].astype(str),
            "recipient_path": chosen["path"].astype(str),
            "y0": y0,
            "y1": y1,
            "x0": x0,
            "x1": x1,
        }
    )


def bootstrap_mean(values: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) of the finite ``values``: the percentile bootstrap over them."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = finite[rng.integers(0, finite.size, size=(resamples, finite.size))].mean(axis=1)
    return float(finite.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paste(recipient: np.ndarray, source: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    """``recipient`` (C, H, W) with ``source``'s pixels inside ``region`` (fractions), same position."""
    _, h, w = recipient.shape
    y0, y1 = int(np.floor(region[0] * h)), int(np.ceil(region[1] * h))
    x0, x1 = int(np.floor(region[2] * w)), int(np.ceil(region[3] * w))
    out = recipient.copy()
    channels = min(out.shape[0], source.shape[0])
    out[:channels, y0:y1, x0:x1] = source[:channels, y0:y1, x0:x1]
    if out.shape[0] > source.shape[0]:  # a grey source into a colour recipient: its grey in every channel
        out[channels:, y0:y1, x0:x1] = source[:1, y0:y1, x0:x1]
    return out
