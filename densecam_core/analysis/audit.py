"""``audit_run``: is the model right for the right reasons? Where every stored map of a run points, per
target and map, within each label group (and body part): per-image spatial scores, SpRAy-style clusters,
clusters flagged by a stated rule, atlases per group. Reads the maps chunk by chunk; torch-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from densecam_core.analysis.atlas import AtlasAccumulator
from densecam_core.analysis.body import body_masks, body_on_grid, outside_body_mass
from densecam_core.analysis.clustering import MIN_IMAGES, spectral_clusters
from densecam_core.analysis.flagging import (
    FlagRule,
    auroc,
    finite_mean,
    finite_median,
    flag_cluster,
    flag_within_group,
)
from densecam_core.analysis.spatial import (
    MIN_FLAG_SIDE,
    SCORE_COLUMNS,
    VECTOR_SIDE,
    distributions,
    frame_vectors,
    map_vectors,
    spatial_scores,
)
from densecam_core.store.layout import StoreError, map_label
from densecam_core.store.run import Run
from densecam_core.store.targets import target_labels, with_target_probability
from densecam_core.vocabulary import BLOCKS, MapKey, chosen_keys

CHUNK_IMAGES = 2048
MIN_PART_GROUP = 200
"""Clusters are formed within label x body part groups when each holds at least this many images, else within
label groups: a few dozen images per group cluster poorly (the audit says which it chose)."""
CLUSTER_COLUMNS = [
    "method", "block", "target", "group", "cluster", "size", "flagged", "threshold", "rule", "clusters_in_group",
    "mean_prob", "label_mix", "body_part_mix", "auroc_inside", "auroc_outside", "median_corner_excess", "mean_outside_body_mass",
    *(f"mean_{n}" for n in SCORE_COLUMNS),
]  # fmt: skip


@dataclass(frozen=True)
class AuditRequest:
    """What to audit and how; every field is recorded with the audit and names its folder."""

    methods: tuple[str, ...] | None = None  # default: cam and every method of the run
    blocks: tuple[int, ...] = BLOCKS
    targets: tuple[int, ...] | None = None  # target positions; default: all
    by_body_part: bool | None = None  # None: by body part where every label x body part group is large enough
    control: str | None = None  # a run id of the same store, a model the user trusts
    body: bool = True  # each map's mass outside the body, from a body mask of each image (read or decoded once)
    rule: FlagRule = field(default_factory=FlagRule)
    seed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "rule": asdict(self.rule), "version": 1}


@dataclass
class AuditResult:
    """An audit's tables and arrays, as ``store.analyses`` writes and reads them."""

    images: pd.DataFrame
    clusters: pd.DataFrame
    atlases: pd.DataFrame
    arrays: dict[str, np.ndarray]
    messages: list[str]
    settings: dict[str, Any]


def audit_run(run: Run, request: AuditRequest = AuditRequest(), *, control: Run | None = None) -> AuditResult:
    """Audit every map the request names; ``control`` (the run ``request.control`` names) supplies the null
    distribution of the flag rule instead of the run's own groups."""
    index = run.index[run.index["status"] == "ok"].sort_values("row").reset_index(drop=True)
    if index.empty:
        raise StoreError(f"run {run.run_id} has no ok images (error rows only): there are no maps to audit")
    control_index = _control_rows(run, control, index) if control is not None else None
    masks = body_masks(run, index["path"].astype(str).tolist()) if request.body else None
    by_part, why = choose_grouping(index, request.by_body_part)
    request = dataclasses.replace(request, by_body_part=by_part)
    images: list[pd.DataFrame] = []
    clusters: list[pd.DataFrame] = []
    atlases: list[pd.DataFrame] = []
    arrays: dict[str, list[np.ndarray]] = {}
    messages: list[str] = [why] if why else []
    for map_key in _maps(run, request):
        label = map_label(map_key)
        for target in request.targets or tuple(range(run.record.num_targets)):
            rows = with_target_probability(index, run.record, target)
            part = _audit_map(run, rows, map_key.for_target(target), request, control, control_index, masks)
            # each table row's slice of its map's arrays: clusters of every target, one after the other
            done = {kind: sum(len(a) for a in arrays.get(f"{kind}/{label}", [])) for kind in part.arrays}
            images.append(part.images)
            clusters.append(part.clusters.assign(array_index=done["cluster_mean"] + np.arange(len(part.clusters))))
            atlases.append(part.atlases.assign(array_index=done["atlas_mean"] + np.arange(len(part.atlases))))
            for kind, values in part.arrays.items():
                arrays.setdefault(f"{kind}/{label}", []).append(values)
            messages += part.messages
    if not any(len(c) and c["flagged"].any() for c in clusters):
        messages.append("no cluster's maps point outside the body more than the class's own spread")
    return AuditResult(
        images=pd.concat(images, ignore_index=True),
        clusters=pd.concat(clusters, ignore_index=True),
        atlases=pd.concat(atlases, ignore_index=True),
        arrays={name: np.concatenate(parts) for name, parts in arrays.items()},
        messages=messages,
        settings={**request.as_json(), "target_labels": target_labels(run.record)},
    )


def _maps(run: Run, request: AuditRequest) -> list[MapKey]:
    methods = request.methods or ("cam", *run.methods)
    unknown = [m for m in methods if m != "cam" and m not in run.methods]
    if unknown:
        raise StoreError(f"run {run.run_id} has no {unknown} maps; it has cam, {', '.join(run.methods)}")
    bad = [b for b in request.blocks if b not in BLOCKS]
    if bad:
        raise ValueError(f"blocks must be among {BLOCKS}; got {bad}")
    return chosen_keys(methods, request.blocks)


def _control_rows(run: Run, control: Run, index: pd.DataFrame) -> pd.DataFrame:
    theirs = control.index[control.index["status"] == "ok"]
    common = theirs[theirs["image_id"].isin(set(index["image_id"]))]
    if common.empty:
        raise StoreError(
            f"control run {control.run_id} shares no image with run {run.run_id}: a control is the same images "
            f"explained by a model you trust (expected image ids like {index['image_id'].iloc[0]!r})"
        )
    return common.sort_values("row").reset_index(drop=True)


@dataclass
class _MapPart:
    images: pd.DataFrame
    clusters: pd.DataFrame
    atlases: pd.DataFrame
    arrays: dict[str, np.ndarray]
    messages: list[str]


def _groups(rows: pd.DataFrame, by_body_part: bool) -> pd.Series:
    """Each image's group: its label (abnormal / normal / unlabelled), and its body part where known."""
    label = rows["label"].map(lambda v: "unlabelled" if pd.isna(v) else ("abnormal" if int(v) == 1 else "normal"))
    if by_body_part and _has_body_parts(rows):
        return label + "/" + rows["body_part"].fillna("unknown").astype(str)
    return label.astype(str)


def _has_body_parts(rows: pd.DataFrame) -> bool:
    return "body_part" in rows.columns and bool(rows["body_part"].notna().any())


def _strata(rows: pd.DataFrame, by_body_part: bool) -> pd.Series:
    """What a group's clusters are judged against: every image of its body part (any label), or of the run."""
    if by_body_part and _has_body_parts(rows):
        return rows["body_part"].fillna("unknown").astype(str)
    return pd.Series("all", index=rows.index)


def choose_grouping(rows: pd.DataFrame, asked: bool | None) -> tuple[bool, str | None]:
    """Whether to group by body part (``asked``, else where every label x body part group holds at least
    ``MIN_PART_GROUP`` images), and the sentence saying why when the audit chose."""
    if asked is not None or not _has_body_parts(rows):
        return bool(asked) and _has_body_parts(rows), None
    smallest = int(_groups(rows, True).value_counts().min())
    if smallest >= MIN_PART_GROUP:
        return True, None
    return False, (
        f"clustered within label groups, not label x body part: the smallest of those holds {smallest} images "
        f"(fewer than {MIN_PART_GROUP}); `by_body_part` forces it"
    )


def _read_scores(
    run: Run,
    rows: pd.DataFrame,
    key: MapKey,
    groups: pd.Series,
    masks: np.ndarray | None = None,
):
    """Scores, map vectors and frame vectors of every image of ``rows`` (and atlas sums per ``groups``), a chunk
    of maps at a time."""
    scores: dict[str, list[np.ndarray]] = {name: [] for name in (*SCORE_COLUMNS, "outside_body_mass")}
    vectors, frames = [], []
    atlas: AtlasAccumulator | None = None
    codes, names = pd.factorize(groups, sort=True)
    positions = rows["row"].to_numpy()
    for start in range(0, len(rows), CHUNK_IMAGES):
        maps = run.read_maps(key, rows=positions[start : start + CHUNK_IMAGES])
        atlas = atlas or AtlasAccumulator(len(names), maps.shape[1:])
        atlas.add(maps, codes[start : start + CHUNK_IMAGES])
        for name, values in spatial_scores(maps).items():
            scores[name].append(values)
        if masks is None:
            scores["outside_body_mass"].append(np.full(len(maps), np.nan))
        else:
            body = body_on_grid(masks[start : start + CHUNK_IMAGES], *maps.shape[1:])
            scores["outside_body_mass"].append(outside_body_mass(distributions(maps), body))
        vectors.append(map_vectors(maps))
        frames.append(frame_vectors(maps))
    assert atlas is not None
    read = {k: np.concatenate(v) for k, v in scores.items()}
    return read, np.concatenate(vectors), np.concatenate(frames), atlas, list(names)


@dataclass(frozen=True)
class _MapData:
    """One map and target's per-image data, as the groups are clustered."""

    key: MapKey
    rows: pd.DataFrame
    groups: np.ndarray  # what each image is clustered within
    strata: np.ndarray  # what its group's clusters are judged against
    scores: dict[str, np.ndarray]
    vectors: np.ndarray  # the whole map, pooled: cluster means and ``similar``
    frames: np.ndarray  # the frame's cells: what is clustered
    flaggable: bool


def _audit_map(
    run: Run,
    rows: pd.DataFrame,
    key: MapKey,
    request: AuditRequest,
    control: Run | None,
    control_rows: pd.DataFrame | None,
    masks: np.ndarray | None = None,
) -> _MapPart:
    label = map_label(key)
    by_part = bool(request.by_body_part)
    atlas_groups = _groups(rows, True)
    scores, vectors, frames, atlas, atlas_names = _read_scores(run, rows, key, atlas_groups, masks)
    h, w = atlas.shape
    flaggable = min(h, w) >= MIN_FLAG_SIDE
    messages = (
        []
        if flaggable
        else [
            f"{label}: its {h}x{w} grid is too coarse to tell a corner from the body; scores are reported, nothing is flagged"
        ]
    )
    reference = None
    if control is not None and control_rows is not None:
        control_scores = _read_scores(control, control_rows, key, _groups(control_rows, True))[0]
        reference = (control.run_id, _strata(control_rows, by_part).to_numpy(), control_scores[request.rule.score])
    columns = asdict(key)  # method, block (4 for CAM), target: the key columns of the audit's tables
    groups = _groups(rows, by_part)
    strata = _strata(rows, by_part).to_numpy()
    data = _MapData(key, rows, groups.to_numpy(), strata, scores, vectors, frames, flaggable)
    assigned = _cluster_groups(data, sorted(set(groups)), request, reference)
    images = pd.DataFrame(
        {
            "image_id": rows["image_id"].astype(str).to_numpy(),
            "row": rows["row"].to_numpy(),
            **columns,
            "label": rows["label"].to_numpy(),
            "body_part": rows["body_part"].to_numpy() if "body_part" in rows.columns else None,
            "prob": rows["prob"].astype(float).to_numpy(),
            "group": data.groups,
            "cluster": assigned.clusters,
            "flagged": assigned.flagged,
            **{name: scores[name] for name in SCORE_COLUMNS},
            "outside_body_mass": scores["outside_body_mass"],
            "embedding_x": assigned.embedding[:, 0],
            "embedding_y": assigned.embedding[:, 1],
        }
    )
    pooled_shape = (min(h, VECTOR_SIDE), min(w, VECTOR_SIDE))
    arrays = {
        "cluster_mean": np.asarray(assigned.means, dtype=np.float32).reshape(-1, *pooled_shape),
        "atlas_mean": atlas.means().astype(np.float32),
        "atlas_peaks": atlas.peaks.astype(np.float32),
        "vectors": vectors[None],  # (target, image, d): targets one after the other
    }
    clusters = pd.DataFrame.from_records(assigned.records, columns=CLUSTER_COLUMNS)
    atlases = atlas.table(atlas_names).assign(**columns)
    return _MapPart(images, clusters, atlases, arrays, messages + assigned.messages)


@dataclass
class _Assigned:
    clusters: np.ndarray
    flagged: np.ndarray
    embedding: np.ndarray
    records: list[dict[str, Any]] = field(default_factory=list)
    means: list[np.ndarray] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def _cluster_groups(
    data: _MapData, group_names: list[str], request: AuditRequest, reference: tuple[str, np.ndarray, np.ndarray] | None
) -> _Assigned:
    """Cluster each group's frame vectors and flag its clusters by the rule: against the rest of the group
    (``flag_within_group``), or the control run's images of the group's stratum."""
    n = len(data.rows)
    out = _Assigned(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool), np.full((n, 2), np.nan))
    labels = data.rows["label"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    probs = data.rows["prob"].astype(float).to_numpy()
    score = data.scores[request.rule.score]
    name = map_label(data.key)
    for group in group_names:
        members = np.flatnonzero(data.groups == group)
        if members.size < MIN_IMAGES:
            out.messages.append(
                f"{name}, target {data.key.target}, {group}: {members.size} images, too few to cluster (at least {MIN_IMAGES})"
            )
            continue
        clustering = spectral_clusters(data.frames[members], seed=request.seed)
        stratum = data.strata[members[0]]
        where = "the run's" if stratum == "all" else f"the {stratum}"
        out.clusters[members] = clustering.labels
        out.embedding[members] = clustering.embedding
        if reference is None:
            verdicts = flag_within_group(clustering.labels, score[members], request.rule, flaggable=data.flaggable)
            described = f"the rest of the {group} images' (less any cluster flagged before it)"
        else:
            null = reference[2][reference[1] == stratum]
            verdicts = [
                flag_cluster(
                    score[members][clustering.labels == c], null, members.size, request.rule, flaggable=data.flaggable
                )
                for c in range(clustering.count)
            ]
            described = f"control run {reference[0]}'s {where} images'"
        for cluster in range(clustering.count):
            inside = members[clustering.labels == cluster]
            flagged, threshold = verdicts[cluster]
            out.flagged[inside] = flagged
            out.records.append(
                _cluster_record(data.rows, data.scores, inside, members, labels, probs)
                | asdict(data.key)
                | {
                    "group": group,
                    "cluster": cluster,
                    "flagged": flagged,
                    "threshold": threshold,
                    "rule": request.rule.describe(f"{described} per-image {request.rule.score}"),
                    "clusters_in_group": clustering.count,
                }
            )
            out.means.append(data.vectors[inside].mean(axis=0))
    return out


def _cluster_record(
    rows: pd.DataFrame,
    scores: dict[str, np.ndarray],
    inside: np.ndarray,
    group: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
) -> dict[str, Any]:
    """A cluster's size, mixes, mean probability and scores, and the model's AUROC with the cluster's images
    (or the rest of its group) against every image of the other labels."""
    others = np.setdiff1d(np.flatnonzero(np.isfinite(labels)), group)
    rest = np.setdiff1d(group, inside)
    record: dict[str, Any] = {
        "size": int(inside.size),
        "mean_prob": finite_mean(probs[inside]),
        "label_mix": _mix(rows["label"].iloc[inside]),
        "body_part_mix": _mix(rows["body_part"].iloc[inside]) if "body_part" in rows.columns else "",
        "auroc_inside": auroc(labels[np.concatenate([inside, others])], probs[np.concatenate([inside, others])]),
        "auroc_outside": auroc(labels[np.concatenate([rest, others])], probs[np.concatenate([rest, others])]),
    }
    for name in SCORE_COLUMNS:
        record[f"mean_{name}"] = finite_mean(scores[name][inside])
    record["median_corner_excess"] = finite_median(scores["corner_excess"][inside])
    record["mean_outside_body_mass"] = finite_mean(scores["outside_body_mass"][inside])
    return record


def _mix(values: pd.Series) -> str:
    counts = values.astype("string").fillna("none").value_counts()
    return ", ".join(f"{name}: {count}" for name, count in counts.items())


def audit_targets(run: Run, names: Sequence[str | int] | None) -> tuple[int, ...] | None:
    """Target positions from class names or positions (``--target``); None for all."""
    from densecam_core.store.targets import target_position

    return (
        None if not names else tuple(target_position(run.record, n if not str(n).isdigit() else int(n)) for n in names)
    )
