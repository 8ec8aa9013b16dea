"""What a run's report page says, as plain tables: the run at a glance, error rows by reason, counts and
AUROC per body part and label, and which images each gallery shows. No HTML here (``report_page``
renders), no torch (a notebook can call these on a store).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from densecam_core.analysis.flagging import auroc
from densecam_core.store.record import RunRecord
from densecam_core.store.targets import class_names, fixed_classes, target_position

UNCERTAIN_AROUND = 0.5
"""A probability's distance to this threshold ranks the "most uncertain" gallery; it is also the
threshold the "misclassified" gallery applies."""


@dataclass(frozen=True)
class Gallery:
    """One gallery of cards: its title, a line that says how it was chosen, and the index rows it shows."""

    key: str
    title: str
    chosen_by: str
    rows: pd.DataFrame


def target_title(record: RunRecord, target: int | str) -> str:
    """How the page names the explained class: the run's class name, else "abnormal" for a one-output model."""
    names = class_names(record)
    position = target_position(record, target)
    classes = fixed_classes(record)
    if names is not None and classes is not None and 0 <= classes[position] < len(names):
        return str(names[classes[position]])
    return "abnormal" if record.num_classes == 1 else f"target {position}"


def label_names(labels: pd.Series) -> pd.Series:
    """normal / abnormal / unlabelled per row, as MURA's study labels read."""
    numeric = pd.to_numeric(labels, errors="coerce")
    return numeric.map(lambda v: "unlabelled" if pd.isna(v) else ("abnormal" if int(v) == 1 else "normal"))


def error_reasons(index: pd.DataFrame) -> pd.DataFrame:
    """Error rows grouped by reason: the message with its variable parts (numbers, quoted names, paths)
    folded, so a thousand "file not found" rows are one line; ``example`` is one message in full."""
    errors = index[index["status"] != "ok"]
    if errors.empty:
        return pd.DataFrame(columns=["status", "reason", "images", "example"])
    messages = errors["error"].fillna("").astype(str)
    reasons = messages.map(_fold)
    grouped = errors.assign(reason=reasons, message=messages).groupby(["status", "reason"], sort=False)
    table = grouped.agg(images=("image_id", "size"), example=("message", "first")).reset_index()
    return table.sort_values("images", ascending=False, kind="stable").reset_index(drop=True)


def _fold(message: str) -> str:
    folded = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message)
    folded = re.sub(r"(?:/|[A-Za-z]:\\)[^\s,;:]+", "…", folded)
    return re.sub(r"\d+(?:\.\d+)?", "N", folded)[:200]


def body_part_table(index: pd.DataFrame) -> pd.DataFrame:
    """Per body part, then all images: counts by status and label, mean probability by label, AUROC of
    the probability against the label (image level) where both labels occur."""
    frame = index.assign(
        body_part=index["body_part"].fillna("unknown").astype(str) if "body_part" in index else "unknown",
        label_name=label_names(index["label"]) if "label" in index else "unlabelled",
    )
    rows = [_part_row(str(part), group) for part, group in frame.groupby("body_part", sort=True)]
    rows.append(_part_row("all", frame))
    return pd.DataFrame(rows)


def _part_row(part: str, group: pd.DataFrame) -> dict:
    ok = group[group["status"] == "ok"]
    labelled = ok[ok["label_name"] != "unlabelled"]
    return {
        "body_part": part,
        "images": len(group),
        "ok": len(ok),
        "errors": len(group) - len(ok),
        "normal": int((ok["label_name"] == "normal").sum()),
        "abnormal": int((ok["label_name"] == "abnormal").sum()),
        "unlabelled": int((ok["label_name"] == "unlabelled").sum()),
        "mean_prob_normal": _mean(ok.loc[ok["label_name"] == "normal", "prob"]),
        "mean_prob_abnormal": _mean(ok.loc[ok["label_name"] == "abnormal", "prob"]),
        "mean_prob": _mean(ok["prob"]),
        "auroc": auroc((labelled["label_name"] == "abnormal").to_numpy(), labelled["prob"].to_numpy()),
    }


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def galleries(index: pd.DataFrame, per_gallery: int, changed: pd.DataFrame | None = None) -> list[Gallery]:
    """The galleries a reviewer scrolls: most confident, most uncertain, misclassified (labelled images
    only), error rows and, with a comparison, the images whose explanation changed most. Empty ones are
    left out; each holds at most ``per_gallery`` rows."""
    ok = index[index["status"] == "ok"]
    found = [
        Gallery(
            "confident",
            "Most confident",
            "highest probability first",
            ok.sort_values("prob", ascending=False, kind="stable"),
        ),
        Gallery(
            "uncertain",
            "Most uncertain",
            f"probability closest to {UNCERTAIN_AROUND} first",
            ok.iloc[np.argsort((ok["prob"] - UNCERTAIN_AROUND).abs().to_numpy(), kind="stable")],
        ),
    ]
    if "label" in ok:
        labels = pd.to_numeric(ok["label"], errors="coerce")
        wrong = ok[labels.notna() & ((ok["prob"] >= UNCERTAIN_AROUND) != (labels == 1))]
        distance = (wrong["prob"] - pd.to_numeric(wrong["label"])).abs().to_numpy()
        found.append(
            Gallery(
                "misclassified",
                "Misclassified",
                f"label differs from probability ≥ {UNCERTAIN_AROUND}; largest error first",
                wrong.iloc[np.argsort(-distance, kind="stable")],
            )
        )
    if changed is not None:
        found.append(
            Gallery(
                "changed", "Changed most", "lowest map correlation with the other run, then largest change", changed
            )
        )
    found.append(Gallery("errors", "Error rows", "images the run could not explain", index[index["status"] != "ok"]))
    return [Gallery(g.key, g.title, g.chosen_by, g.rows.head(per_gallery)) for g in found if len(g.rows)]
