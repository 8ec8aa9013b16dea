"""Classification metrics the MURA paper reports, at image and study level.

A study's probability is the mean of its views' probabilities (the paper's rule); its label is the
study label every view shares. Numbers come from scikit-learn so they match what reviewers compute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, roc_auc_score

METRIC_NAMES = ("auroc", "sensitivity", "specificity", "kappa", "count")


def binary_metrics(
    labels: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """AUROC, sensitivity, specificity and Cohen's kappa of ``probabilities >= threshold``.

    A metric that is undefined for the data (AUROC or sensitivity with no positive) is NaN, not 0,
    so a tiny validation split cannot pass for a perfect or a useless model.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels and probabilities must be equal-length vectors, got {y.shape} and {p.shape}")
    predicted = (p >= threshold).astype(np.int64)
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    both = positives > 0 and negatives > 0
    with np.errstate(invalid="ignore"):
        kappa = float(cohen_kappa_score(y, predicted)) if both or len(set(predicted)) > 1 else math.nan
    return {
        "auroc": float(roc_auc_score(y, p)) if both else math.nan,
        "sensitivity": float((predicted[y == 1] == 1).mean()) if positives else math.nan,
        "specificity": float((predicted[y == 0] == 0).mean()) if negatives else math.nan,
        "kappa": kappa,
        "count": float(len(y)),
    }


def study_table(frame: pd.DataFrame, probability_column: str = "prob") -> pd.DataFrame:
    """One row per study: mean view probability, the study label, body part and number of views."""
    missing = {"label", probability_column} - set(frame.columns)
    if missing:
        raise ValueError(f"study_table needs columns {sorted(missing)}")
    # an image without a study (a generic manifest) is a study of its own
    own = frame["image_id"] if "image_id" in frame.columns else pd.Series(frame.index.astype(str), index=frame.index)
    studies = (
        frame["study_id"].astype(object).where(frame["study_id"].notna(), own) if "study_id" in frame.columns else own
    )
    frame = frame.assign(study_id=studies.astype(str))
    grouped = frame.groupby("study_id", sort=True)
    table = grouped.agg(prob=(probability_column, "mean"), label=("label", "first"), views=("label", "size"))
    if "body_part" in frame.columns:
        table["body_part"] = grouped["body_part"].first()
    return table.reset_index()


def image_and_study_metrics(
    frame: pd.DataFrame, probability_column: str = "prob", threshold: float = 0.5
) -> dict[str, dict[str, float]]:
    """``{"image": {...}, "study": {...}}`` metrics for rows with a label and a probability."""
    rows = frame.dropna(subset=["label", probability_column])
    studies = study_table(rows, probability_column)
    return {
        "image": binary_metrics(rows["label"].astype(int), rows[probability_column], threshold),
        "study": binary_metrics(studies["label"].astype(int), studies["prob"], threshold),
    }
