"""The report page's audit section: is the model right for the right reasons? Flagged clusters first, each
with a contact sheet of its images' maps, its mean map, its scores, the paste test's interval where one ran,
and the rule that flagged it; then the atlases (mean map and peak locations per group); a plain sentence
when nothing is flagged. Every string from the store is escaped; pictures are small JPEGs beside the page.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from densecam_core.data.errors import ImageError
from densecam_core.data.geometry import Geometry
from densecam_core.export.report_page import escape
from densecam_core.export.report_thumbnails import blend_map, image_digest, shrink, thumbnail_shape, write_jpeg
from densecam_core.store.analyses import Audit, list_audits
from densecam_core.store.run import Run

CONTACT_IMAGES = 6
MAX_CLUSTERS = 12
HEAT_SIDE = 96


def audit_section(run: Run, folder: Path, thumb_size: int) -> str:
    """The section's HTML (pictures written under ``folder``); a pointer to ``densecam audit`` without one."""
    audits = list_audits(run.store_url, run.url)
    if not audits:
        return (
            f"<p>No audit of this run yet: <code>densecam audit STORE --run {escape(run.run_id)}</code> makes one.</p>"
        )
    audit = audits[-1]
    clusters = audit.clusters
    flagged = clusters[clusters["flagged"]].head(MAX_CLUSTERS) if len(clusters) else clusters
    parts = [f"<p>Audit {escape(audit.folder)} of {escape(audit.meta.get('created'))}.</p>"]
    if flagged.empty:
        parts.append("<p>No cluster's maps point outside the body more than the class's own spread.</p>")
    else:
        parts.append(f"<p>{len(flagged)} flagged clusters (a shortcut the model may have learned):</p>")
        parts += [_flagged(run, audit, row, folder, thumb_size) for _, row in flagged.iterrows()]
    parts.append(_atlases(audit, flagged, folder))
    notes = "".join(f"<li>{escape(m)}</li>" for m in audit.messages)
    if notes:
        parts.append(f"<details><summary>notes</summary><ul>{notes}</ul></details>")
    return "\n".join(parts)


def _heat_picture(folder: Path, name: str, values: np.ndarray) -> str:
    """A normalised map as a small heat picture (nearest-neighbour cells, the jet colours of the overlays)."""
    from matplotlib import colormaps

    top = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
    unit = np.nan_to_num(values / top if top > 0 else values, nan=0.0)
    rgb = (colormaps["jet"](unit)[..., :3] * 255).astype(np.uint8)
    scale = max(1, HEAT_SIDE // max(values.shape))
    picture = np.asarray(
        Image.fromarray(rgb).resize((values.shape[1] * scale, values.shape[0] * scale), Image.Resampling.NEAREST)
    )
    write_jpeg(folder, name, picture)
    return name


def _flagged(run: Run, audit: Audit, cluster: pd.Series, folder: Path, size: int) -> str:
    method, block = str(cluster["method"]), int(cluster["block"])
    key = f"audit-{audit.folder}-{method}-{block}-{int(cluster['target'])}-{image_digest(str(cluster['group']))}-{int(cluster['cluster'])}"
    mean = _heat_picture(folder, f"thumbs/{key}-mean.jpg", audit.mean_map(cluster))
    images = audit.images
    members = images[
        (
            images[["method", "block", "target", "group", "cluster"]]
            == cluster[["method", "block", "target", "group", "cluster"]]
        ).all(axis=1)
    ]
    sheet = []
    maps = run.maps(
        method,
        block,
        image_ids=members["image_id"].head(CONTACT_IMAGES).tolist(),
        target=int(cluster["target"]),
    )
    for image_id, raw in zip(members["image_id"].head(CONTACT_IMAGES), maps):
        try:
            geometry = run.geometry(image_id)
            shape = thumbnail_shape(geometry.orig_height, geometry.orig_width, size)
            picture = blend_map(
                shrink(run.image(image_id), shape), raw, Geometry(shape[0], shape[1], geometry.size, geometry.mode)
            )
        except (ImageError, OSError, ValueError) as exc:  # a source unreadable now: named, the rest shown
            sheet.append(f"<figure><figcaption>{escape(image_id)}: {escape(exc)}</figcaption></figure>")
            continue
        name = f"thumbs/{key}-{image_digest(str(image_id))}.jpg"
        write_jpeg(folder, name, picture)
        sheet.append(
            f'<figure><img src="{escape(name)}" alt="{escape(image_id)}" loading="lazy"><figcaption>{escape(image_id)}</figcaption></figure>'
        )
    confirmation = _confirmation(audit, cluster)
    facts = [
        f"{escape(method)} block {block}, target {escape(cluster['target'])}, {escape(cluster['group'])}: "
        f"{int(cluster['size'])} images",
        f"median corner excess {cluster['median_corner_excess']:.2f} (threshold {cluster['threshold']:.2f}), "
        f"corner mass {cluster['mean_corner_mass']:.2f}, "
        f"border mass {cluster['mean_border_mass']:.2f}, outside the body {cluster['mean_outside_body_mass']:.2f}, "
        f"mean P {cluster['mean_prob']:.2f}",
        f"model AUROC with these images {cluster['auroc_inside']:.3f}, with the rest of the group {cluster['auroc_outside']:.3f}",
        confirmation,
        f"flagged because: {escape(cluster['rule'])}",
    ]
    return (
        f'<div class="card flagged"><div class="meta">{"<br>".join(facts)}</div><div class="panels">'
        f'<figure><img src="{escape(mean)}" alt="mean map"><figcaption>mean map</figcaption></figure>{"".join(sheet)}</div></div>'
    )


def _confirmation(audit: Audit, cluster: pd.Series) -> str:
    confirmations = audit.confirmations
    keys = ["method", "block", "target", "group", "cluster"]
    if confirmations.empty:
        return "paste test: not run (<code>densecam audit … --confirm --checkpoint CKPT</code>)"
    match = confirmations[(confirmations[keys] == cluster[keys]).all(axis=1)]
    if match.empty:
        return "paste test: not run for this cluster"
    row = match.iloc[0]
    verdict = "confirmed: the model uses this region" if row["low"] > 0 else "not confirmed"
    return (
        f"paste test: logit {row['logit_change']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}] over "
        f"{int(row['pairs'])} images of the other label ({escape(verdict)})"
    )


def _atlases(audit: Audit, flagged: pd.DataFrame, folder: Path) -> str:
    """Per group, the mean map and where the peaks fall, for the flagged maps (else the first audited one)."""
    atlases = audit.atlases
    if atlases.empty:
        return ""
    shown = (
        flagged[["method", "block", "target"]].drop_duplicates()
        if len(flagged)
        else atlases[["method", "block", "target"]].head(1)
    )
    rows = []
    for _, key in shown.iterrows():
        mine = atlases[(atlases[["method", "block", "target"]] == key).all(axis=1)]
        for _, row in mine.iterrows():
            base = f"thumbs/atlas-{audit.folder}-{row['method']}-{row['block']}-{row['target']}-{image_digest(str(row['group']))}"
            mean = _heat_picture(folder, f"{base}-mean.jpg", audit.atlas(row))
            peaks = _heat_picture(folder, f"{base}-peaks.jpg", audit.atlas(row, peaks=True))
            rows.append(
                f'<div class="card"><div class="meta">{escape(row["method"])} block {row["block"]}, '
                f'{escape(row["group"])}: {int(row["images"])} images</div><div class="panels">'
                f'<figure><img src="{escape(mean)}" alt="mean map"><figcaption>mean map</figcaption></figure>'
                f'<figure><img src="{escape(peaks)}" alt="peaks"><figcaption>peak locations</figcaption></figure></div></div>'
            )
    return "<h3>Atlases: what the model looks at, per group</h3>" + "".join(rows)
