"""The report page's localisation section: which block and method localise best, as weak labels cut at thresholds
chosen on a calibration split: MaxBoxAccV2, box accuracy at IoU 0.5, PxAP, mIoU and hit rate with their
intervals over studies, the threshold's cost against the best one (oracle gap), the centred-box baseline, and
the scores per lesion size. Every string from the store is escaped."""

from __future__ import annotations

import math

import pandas as pd

from densecam_core.export.report_page import escape
from densecam_core.store.localisations import list_localisations
from densecam_core.store.run import Run

BASELINE = "centre_baseline"


def localise_section(run: Run) -> str:
    """The section's HTML; a pointer to ``densecam localise`` without a stored localisation."""
    found = list_localisations(run.store_url, run.url)
    if not found:
        return (
            "<p>No weak labels of this run yet: <code>densecam localise STORE --run "
            f"{escape(run.run_id)} --boxes BOXES --out DIR</code> scores them.</p>"
        )
    latest = found[-1]
    metrics = latest.metrics
    maps = metrics[metrics["method"] != BASELINE].sort_values("maxboxacc_v2", ascending=False)
    baseline = metrics[metrics["method"] == BASELINE]
    parts = [
        f"<p>Localisation {escape(latest.folder)}: thresholds chosen on {escape(latest.settings.get('calibration'))}"
        f", scores on the other {int(maps['n_images'].iloc[0]) if len(maps) else 0} images with a box (95% intervals "
        "over studies).</p>"
    ]
    if len(maps):
        best = maps.iloc[0]
        parts.append(
            f"<p>Best: <b>{escape(_name(best))}</b>, MaxBoxAccV2 {_with_interval(best, 'maxboxacc_v2')} against "
            f"{_number(best.get('baseline_maxboxacc_v2'))} for a centred box.</p>"
        )
    parts.append(_table(pd.concat([maps, baseline])))
    parts.append(_by_size(latest.by_size))
    return "\n".join(parts)


def _name(row: pd.Series) -> str:
    if row["method"] == BASELINE:
        return f"centred box ({row['target']})"
    return f"{row['method']} block {int(row['block'])} ({row['target']})"


def _number(value: object) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(number) else f"{number:.3f}"


def _with_interval(row: pd.Series, column: str) -> str:
    low, high = _number(row.get(f"{column}_low")), _number(row.get(f"{column}_high"))
    return _number(row[column]) + (f" <small>[{low}, {high}]</small>" if low and high else "")


def _table(rows: pd.DataFrame) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("map", "tau", "BoxAcc@0.5", "MaxBoxAccV2", "PxAP", "mIoU", "hit rate", "oracle gap", "images")
    )
    body = []
    for _, row in rows.iterrows():
        cells = [
            escape(_name(row)),
            _number(row["tau"]),
            _with_interval(row, "box_acc_50"),
            _with_interval(row, "maxboxacc_v2"),
            _with_interval(row, "pxap"),
            _with_interval(row, "miou"),
            _with_interval(row, "hit_rate"),
            _number(row["oracle_gap"]),
            str(int(row["n_images"])),
        ]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _by_size(table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    rows = []
    for _, row in table.iterrows():
        cells = [escape(_name(row)), escape(row["size_band"]), str(int(row["n_images"])), _number(row["box_acc_50"]),
                 _number(row["miou"]), _number(row["hit_rate"])]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("map", "lesion size", "images", "BoxAcc@0.5", "mIoU", "hit rate"))
    return f"<details><summary>per lesion size</summary><table><tr>{head}</tr>{''.join(rows)}</table></details>"
