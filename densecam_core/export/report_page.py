"""The report's HTML: one self-contained page, every string from the store escaped.

Image ids, paths, body parts, error messages and settings come from a store a user may not have written;
each goes through ``html.escape`` (text and attribute values alike) and none reaches the script, which
reads only the page's own ``data-`` attributes. The Content-Security-Policy allows the page's one inline
script by its digest and images beside the page, nothing else, so even a string that slipped through
could neither run nor send a request.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from densecam_core.evaluation.families import all_verdicts
from densecam_core.export.report_content import Gallery, label_names
from densecam_core.store.record import RunRecord
from densecam_core.vocabulary import BLOCKS

SCRIPT = """
(function () {
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  function apply() {
    var wanted = {};
    selects.forEach(function (s) { wanted[s.getAttribute("data-filter")] = s.value; });
    var total = 0;
    document.querySelectorAll("section.gallery").forEach(function (section) {
      var shown = 0;
      section.querySelectorAll(".card").forEach(function (card) {
        var keep = Object.keys(wanted).every(function (k) {
          return wanted[k] === "" || card.getAttribute("data-" + k) === wanted[k];
        });
        card.hidden = !keep;
        if (keep) { shown += 1; }
      });
      section.querySelector(".shown").textContent = String(shown);
      total += shown;
    });
    document.getElementById("shown-total").textContent = String(total);
  }
  selects.forEach(function (s) { s.addEventListener("change", apply); });
  apply();
})();
"""

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#1b1b1b;background:#fafafa}
h1{font-size:1.4em;margin:.8em 0 .2em}h2{font-size:1.15em;margin:1.4em 0 .4em}
.warning{color:#8a1c1c;font-weight:600}
table{border-collapse:collapse;margin:.3em 0;background:#fff}
th,td{border:1px solid #ddd;padding:.2em .55em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{display:inline-block;min-width:1.3em;text-align:center;margin:0 1px;border-radius:3px;cursor:help}
.yes{background:#c8ebc9}.no{background:#f5c2c2}.na{background:#eee;color:#888}
.filters{position:sticky;top:0;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ddd;z-index:1}
.filters label{margin-right:1em}
.cards{display:flex;flex-wrap:wrap;gap:.6em}
.card{background:#fff;border:1px solid #ddd;border-radius:4px;padding:.4em;max-width:100%}
.card[hidden]{display:none}
.card .meta{font-size:12px;word-break:break-all;max-width:48em}
.panels{display:flex;gap:.3em}
figure{margin:0}figcaption{font-size:11px;color:#555;text-align:center}
img{display:block;background:#000}
details{margin:.3em 0}
"""


@dataclass(frozen=True)
class Card:
    """One image of a gallery: its index row and its pictures, ``(caption, file)`` in panel order."""

    row: pd.Series
    pictures: list[tuple[str, str]]
    problem: str | None = None  # why the card has no pictures (its source could not be read now)


@dataclass(frozen=True)
class PageContent:
    record: RunRecord
    target_title: str
    index: pd.DataFrame
    errors: pd.DataFrame
    body_parts: pd.DataFrame
    quality: tuple[pd.DataFrame, pd.DataFrame] | None
    pointing: pd.DataFrame | None
    compare_id: str | None
    galleries: list[tuple[Gallery, list[Card]]]
    audit: str | None = None  # the audit section, rendered (its strings escaped) by ``report_audit``
    localisation: str | None = None  # the weak labels' section, rendered (escaped) by ``report_localise``


def escape(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def script_policy() -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return f"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"


def render_page(page: PageContent) -> str:
    run_id = escape(page.record.run_id)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{script_policy()}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>densecam report: {run_id}</title><style>{STYLE}</style></head><body>",
        f"<h1>Explanations of run {run_id}</h1>",
        '<p class="warning">Research output, not for diagnosis.</p>',
        _overview(page),
        _section("Error rows by reason", _errors(page.errors)),
        _section("Map quality", _quality(page.quality)),
        _section("Pointing game", _pointing(page.pointing)),
        _section("Audit: right for the right reasons?", page.audit),
        _section("Localisation: where the maps point, as weak labels", page.localisation),
        _section(f"Per body part: P({escape(page.target_title)})", _body_parts(page.body_parts)),
        _filters(page.index),
        *(_gallery(gallery, cards, page) for gallery, cards in page.galleries),
        f"<script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(part for part in parts if part)


def _section(title: str, body: str | None) -> str:
    return f"<h2>{title}</h2>\n{body}" if body else ""


def _overview(page: PageContent) -> str:
    record, index = page.record, page.index
    ok = int((index["status"] == "ok").sum())
    facts = [
        ("model fingerprint", record.model_fingerprint),
        ("architecture", record.architecture),
        ("checkpoint", record.checkpoint or None),
        ("created", record.created),
        ("images", f"{len(index)} ({ok} ok, {len(index) - ok} error rows)"),
        ("explained class", page.target_title),
    ]
    if page.compare_id:
        facts.append(("compared with", page.compare_id))
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts if v is not None)
    settings = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(json.dumps(v, default=str))}</td></tr>"
        for k, v in sorted(record.settings.recorded().items())
    )
    return (
        f'<h2>The run</h2>\n<table id="overview">{rows}</table>'
        f"<details><summary>settings</summary><table>{settings}</table></details>"
    )


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(frame: pd.DataFrame, columns: list[tuple[str, str]], table_id: str) -> str:
    head = "".join(f"<th>{escape(title)}</th>" for _, title in columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for column, _ in columns:
            value = row[column]
            numeric = isinstance(value, (int, float, np.integer)) and not isinstance(value, (bool, np.bool_))
            cells.append(f'<td class="num">{escape(_number(value))}</td>' if numeric else f"<td>{escape(value)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table id="{table_id}"><tr>{head}</tr>{"".join(body)}</table>'


def _errors(errors: pd.DataFrame) -> str:
    if errors.empty:
        return "<p>None: every image was explained.</p>"
    columns = [("status", "status"), ("images", "images"), ("reason", "reason"), ("example", "one message")]
    return _table(errors, columns, "errors")


def _body_parts(table: pd.DataFrame) -> str:
    columns = [
        ("body_part", "body part"),
        ("images", "images"),
        ("errors", "error rows"),
        ("normal", "normal"),
        ("abnormal", "abnormal"),
        ("unlabelled", "unlabelled"),
        ("mean_prob_normal", "mean P, normal"),
        ("mean_prob_abnormal", "mean P, abnormal"),
        ("mean_prob", "mean P"),
        ("auroc", "AUROC"),
    ]
    return _table(table, columns, "body-parts")


def _quality(quality: tuple[pd.DataFrame, pd.DataFrame] | None) -> str | None:
    if quality is None:
        return "<p>No map-quality scores: <code>densecam evaluate</code> scores the maps.</p>"
    grid, table = quality
    methods = list(dict.fromkeys(grid["method"]))
    head = "".join(f"<th>block {b}</th>" for b in BLOCKS)
    rows = []
    for method in methods:
        cells = []
        for block in BLOCKS:
            match = grid[(grid["method"] == method) & (grid["block"] == block)]
            cells.append(f"<td>{_verdicts(match.iloc[0], table) if len(match) else ''}</td>")
        rows.append(f"<tr><th>{escape(method)}</th>{''.join(cells)}</tr>")
    legend = "D deletion, I insertion (beats the random map), R passes randomisation, S stable; hover for intervals."
    return f'<table id="quality"><tr><th>map</th>{head}</tr>{"".join(rows)}</table><p>{legend}</p>'


def _verdicts(row: pd.Series, table: pd.DataFrame) -> str:
    badges = []
    for verdict in all_verdicts():
        column, letter, yes, no, metric = verdict.column, verdict.letter, verdict.yes, verdict.no, verdict.metric
        value = row.get(column)
        state = "na" if value is None or pd.isna(value) else ("yes" if value else "no")
        said = {"yes": yes, "no": no, "na": "not scored"}[state]
        hover = "; ".join([said, *_intervals(table, row["method"], int(row["block"]), metric)])
        badges.append(f'<span class="verdict {state}" title="{escape(hover)}">{letter}</span>')
    return "".join(badges)


def _intervals(table: pd.DataFrame, method: str, block: int, metric: str) -> list[str]:
    """The metric's mean and interval (randomisation at its last stage), and the paired difference to the
    random map where there is one."""
    rows = table[(table["method"] == method) & (table["block"] == block) & (table["metric"] == metric)]
    if rows.empty:
        return []
    last = rows.sort_values("stage", na_position="first").iloc[-1]
    text = f"{metric} {last['mean']:.3f} [{last['ci_low']:.3f}, {last['ci_high']:.3f}], {int(last['images'])} images"
    if "vs_random" in last and not pd.isna(last["vs_random"]):
        text += f"; map - random {last['vs_random']:+.3f} [{last['vs_random_low']:+.3f}, {last['vs_random_high']:+.3f}]"
    return [text]


def _pointing(pointing: pd.DataFrame | None) -> str | None:
    """Hit rate per map as a grid (a row per method, a column per block), hits of images on hover."""
    if pointing is None:
        return None
    head = "".join(f"<th>block {b}</th>" for b in BLOCKS)
    rows = []
    for method in dict.fromkeys(pointing["method"]):
        cells = []
        for block in BLOCKS:
            match = pointing[(pointing["method"] == method) & (pointing["block"] == block)]
            if match.empty:
                cells.append("<td></td>")
                continue
            hit = match.iloc[0]
            hover = f"{int(hit['hits'])} of {int(hit['images'])} images with a box"
            cells.append(f'<td class="num" title="{escape(hover)}">{escape(_number(float(hit["hit_rate"])))}</td>')
        rows.append(f"<tr><th>{escape(method)}</th>{''.join(cells)}</tr>")
    baseline = float(pointing["random_baseline"].iloc[0])
    return (
        f'<table id="pointing"><tr><th>map</th>{head}</tr>{"".join(rows)}</table>'
        f"<p>Hit rate: the map's maximum inside a lesion box; a random point hits {baseline:.3f} of the time.</p>"
    )


def _filters(index: pd.DataFrame) -> str:
    choices = {
        "part": (
            "body part",
            sorted(index["body_part"].fillna("unknown").astype(str).unique()) if "body_part" in index else [],
        ),
        "label": ("label", sorted(label_names(index["label"]).unique()) if "label" in index else []),
        "status": ("status", sorted(index["status"].astype(str).unique())),
    }
    selects = []
    for key, (title, values) in choices.items():
        options = '<option value="">all</option>' + "".join(
            f'<option value="{escape(v)}">{escape(v)}</option>' for v in values
        )
        selects.append(
            f'<label>{escape(title)} <select id="filter-{key}" data-filter="{key}">{options}</select></label>'
        )
    return f'<div class="filters">{"".join(selects)} <span id="shown-total"></span> cards shown</div>'


def _gallery(gallery: Gallery, cards: list[Card], page: PageContent) -> str:
    body = "".join(_card(card, page) for card in cards)
    return (
        f'<section class="gallery" id="gallery-{escape(gallery.key)}"><h2>{escape(gallery.title)} '
        f'(<span class="shown"></span> of {len(cards)})</h2><p>{escape(gallery.chosen_by)}</p>'
        f'<div class="cards">{body}</div></section>'
    )


def _card(card: Card, page: PageContent) -> str:
    row = card.row
    part = "unknown" if pd.isna(row.get("body_part")) else str(row.get("body_part"))
    label = label_names(pd.Series([row.get("label")])).iloc[0]
    facts = [escape(row["image_id"]), f"{escape(part)}, {escape(label)}"]
    if row["status"] == "ok":
        facts.append(f"P({escape(page.target_title)}) = {float(row['prob']):.3f}")
        if "prob_b" in row and not pd.isna(row.get("prob_b")):
            facts.append(
                f"other run P = {float(row['prob_b']):.3f}, map correlation {_number(row.get('map_correlation'))}"
            )
    else:
        facts.append(f"{escape(row['status'])}: {escape(row.get('error'))}")
    if card.problem:
        facts.append(f'<span class="warning">{escape(card.problem)}</span>')
    figures = "".join(
        f'<figure><img src="{escape(name)}" alt="{escape(caption)}" loading="lazy"><figcaption>{escape(caption)}</figcaption></figure>'
        for caption, name in card.pictures
    )
    attributes = f'data-part="{escape(part)}" data-label="{escape(label)}" data-status="{escape(row["status"])}"'
    return (
        f'<div class="card" {attributes}><div class="meta">{"<br>".join(facts)}</div>'
        f'<div class="panels">{figures}</div></div>'
    )
