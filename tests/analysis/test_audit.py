"""The audit over a constructed run (maps written to a real store, no model): a planted corner cluster is
found and flagged, nothing is flagged without one, coarse grids say so, and the results round-trip through
the store for pandas, DuckDB and xarray; ``run.similar`` equals a plain cosine ranking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.audit_maps import blob, run_with_maps

from densecam_core import open_store
from densecam_core.analysis.audit import AuditRequest, audit_run
from densecam_core.store import layout
from densecam_core.store.analyses import write_audit
from jobs.cli.main import main as cli

N, TOKENS = 120, range(0, 24)  # images 0-23: abnormal, maps on the top-left corner


def _labels() -> list[int]:
    return [1] * 80 + [0] * 40


def token_map(i: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    if i in TOKENS:  # jittered a little: no two maps tie
        return blob(h, w, 0.1 + 0.01 * rng.standard_normal(), 0.1 + 0.01 * rng.standard_normal(), 0.08) + 0.2 * blob(
            h, w, 0.5, 0.5
        )
    return blob(h, w, 0.5 + 0.1 * rng.standard_normal(), 0.5 + 0.1 * rng.standard_normal())


def clean_map(i: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(10_000 + i)
    return blob(h, w, 0.5 + 0.15 * rng.standard_normal(), 0.5 + 0.15 * rng.standard_normal())


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("audit") / "store")
    return run_with_maps(store, _labels(), token_map, probs=[0.9 if i in TOKENS else 0.6 for i in range(N)])


def _store(result, run):
    return write_audit(
        run.url,
        settings=result.settings,
        tables={"images": result.images, "clusters": result.clusters, "atlases": result.atlases},
        arrays=result.arrays,
        messages=result.messages,
    )


def test_the_planted_corner_cluster_is_flagged_at_every_fine_enough_block(token_run):
    result = audit_run(token_run, AuditRequest(methods=("gradcam",), by_body_part=False))
    truth = {f"img{i:05d}.png" for i in TOKENS}
    for block in (1, 2, 3, 4):  # 192 px: 24, 12, 6, 6 cells a side
        images = result.images[result.images["block"] == block]
        assert set(images.loc[images["flagged"], "image_id"]) == truth, block
    flagged = result.clusters[result.clusters["flagged"]]
    assert set(flagged["group"]) == {"abnormal"} and (flagged["size"] == len(TOKENS)).all()
    assert (flagged["median_corner_excess"] > flagged["threshold"]).all()
    assert flagged["rule"].str.contains("above the median \\+ 3·MAD of the rest of the abnormal images'").all()
    # the model is surer inside the cluster: its AUROC with the cluster's images beats the rest's
    assert (flagged["auroc_inside"] > flagged["auroc_outside"]).all()


def test_a_token_most_of_a_class_carries_is_still_flagged(tmp_path):
    """70 % of the abnormal images carry it: against the class's own spread it would be the norm; against every
    other image of the stratum (any label) it stands out; the body part grouping is declined for small groups."""
    majority = set(range(0, 56))

    def mostly_token(i: int, h: int, w: int) -> np.ndarray:
        rng = np.random.default_rng(i)
        centre = blob(h, w, 0.5 + 0.1 * rng.standard_normal(), 0.5 + 0.1 * rng.standard_normal())
        return blob(h, w, 0.1, 0.12, 0.06) + centre if i in majority else centre  # a fifth of the mass, as measured

    run = run_with_maps(str(tmp_path / "store"), _labels(), mostly_token)
    result = audit_run(run, AuditRequest(methods=("gradcam",), blocks=(2,)))
    flagged = set(result.images.loc[result.images["flagged"], "image_id"])
    assert flagged == {f"img{i:05d}.png" for i in majority}
    assert any("clustered within label groups, not label x body part" in m for m in result.messages)


def test_no_token_flags_no_cluster_and_says_so(tmp_path):
    run = run_with_maps(str(tmp_path / "store"), _labels(), clean_map)
    result = audit_run(run, AuditRequest(methods=("gradcam",), by_body_part=False))
    assert not result.clusters["flagged"].any() and not result.images["flagged"].any()
    assert "no cluster's maps point outside the body more than the class's own spread" in result.messages


def test_a_grid_too_coarse_is_reported_and_never_flagged(tmp_path):
    run = run_with_maps(str(tmp_path / "store"), _labels(), token_map, size=128)  # blocks 3 and 4: 4x4
    result = audit_run(run, AuditRequest(methods=("gradcam",), blocks=(3, 4), by_body_part=False))
    assert not result.images["flagged"].any()
    assert any("gradcam_block3: its 4x4 grid is too coarse" in m for m in result.messages)


def test_small_groups_get_a_message_not_a_crash(tmp_path):
    labels = [1] * 40 + [0] * 5
    run = run_with_maps(str(tmp_path / "store"), labels, clean_map)
    result = audit_run(run, AuditRequest(methods=("cam",), by_body_part=False))
    assert any("normal: 5 images, too few to cluster" in m for m in result.messages)
    assert (result.images.loc[result.images["group"] == "normal", "cluster"] == -1).all()


def test_a_control_of_other_images_is_refused(token_run, tmp_path):
    other = run_with_maps(str(tmp_path / "other"), [1] * 20, clean_map, fingerprint="b" * 64)
    renamed = other.index.assign(image_id=lambda f: "x" + f["image_id"])
    other.__dict__["index"] = renamed  # the same store layout, other images
    with pytest.raises(layout.StoreError, match="shares no image with run"):
        audit_run(token_run, AuditRequest(methods=("cam",)), control=other)


def test_a_control_run_is_the_reference_of_the_rule(token_run, tmp_path):
    """Judged against a model that never saw the token (its maps stay central), the token cluster stands out
    further; the rule names the control."""
    control = run_with_maps(str(Path(token_run.store_url)), _labels(), clean_map, fingerprint="c" * 64)
    result = audit_run(token_run, AuditRequest(methods=("gradcam",), blocks=(2,), by_body_part=False), control=control)
    flagged = result.clusters[result.clusters["flagged"]]
    assert len(flagged) == 1 and "control run" in flagged["rule"].iloc[0]


def test_the_audit_round_trips_through_the_store(token_run):
    result = audit_run(token_run, AuditRequest(methods=("gradcam",), blocks=(3,), by_body_part=False))
    folder = _store(result, token_run)
    audit = open_store(token_run.store_url).run(token_run.run_id).audit()
    assert audit.folder == folder
    pd.testing.assert_frame_equal(audit.images, result.images, check_dtype=False)
    assert audit.clusters["flagged"].sum() == 1
    flagged = audit.clusters[audit.clusters["flagged"]].iloc[0]
    mean = audit.mean_map(flagged)
    assert mean.shape == (6, 6) and np.unravel_index(mean.argmax(), mean.shape) == (0, 0)
    assert audit.atlas(0).shape == (6, 6) and audit.atlas(0, peaks=True).sum() == audit.atlases["images"].iloc[0]
    # without densecam: pandas and DuckDB read the tables, xarray the arrays
    root = Path(token_run.url) / layout.ANALYSIS_DIR / folder
    assert len(pd.read_parquet(root / layout.AUDIT_IMAGES)) == N
    import duckdb

    flagged_count = duckdb.sql(f"SELECT count(*) FROM '{root / layout.AUDIT_IMAGES}' WHERE flagged").fetchall()
    assert flagged_count == [(len(TOKENS),)]
    import xarray as xr

    means = xr.open_zarr(root / layout.AUDIT_ARRAYS, group="cluster_mean", zarr_format=3, consolidated=False)
    assert means["gradcam_block3"].shape[1:] == (6, 6)
    assert json.loads((root / layout.AUDIT_JSON).read_text())["settings"]["blocks"] == [3]


def test_another_setting_is_another_audit_and_the_latest_is_read(token_run):
    first = _store(audit_run(token_run, AuditRequest(methods=("cam",), by_body_part=False)), token_run)
    second = _store(audit_run(token_run, AuditRequest(methods=("cam",), by_body_part=False, seed=1)), token_run)
    assert first != second
    folders = {p.name for p in (Path(token_run.url) / layout.ANALYSIS_DIR).iterdir()}
    assert {first, second} <= folders
    assert token_run.audit().folder == second


def test_similar_equals_a_plain_cosine_ranking(token_run):
    result = audit_run(token_run, AuditRequest(methods=("gradcam",), blocks=(2,), by_body_part=False))
    _store(result, token_run)
    found = token_run.similar("img00003.png", "gradcam", 2, k=5)
    maps = token_run.maps("gradcam", 2, rows=np.arange(N), target=0)  # 12x12: the vectors are the whole maps
    p = np.clip(maps, 0, None).reshape(len(maps), -1)
    p = p / p.sum(axis=1, keepdims=True)
    cosine = p @ p[3] / (np.linalg.norm(p, axis=1) * np.linalg.norm(p[3]))
    cosine[3] = -np.inf
    expected = [f"img{i:05d}.png" for i in np.argsort(-cosine, kind="stable")[:5]]
    assert found["image_id"].tolist() == expected
    np.testing.assert_allclose(found["similarity"], np.sort(cosine)[::-1][:5], rtol=1e-5)
    assert set(found["image_id"]) <= {f"img{i:05d}.png" for i in TOKENS}
    with pytest.raises(layout.StoreError, match="no audit of gradcam block 1"):
        token_run.similar("img00003.png", "gradcam", 1)


def test_a_killed_audit_leaves_nothing_that_reads_as_one_and_a_rerun_finishes(tmp_path, monkeypatch):
    run = run_with_maps(str(tmp_path / "store"), _labels(), clean_map)
    result = audit_run(run, AuditRequest(methods=("cam",), by_body_part=False))
    from densecam_core.store import analyses

    def killed(url, arrays):
        raise KeyboardInterrupt

    monkeypatch.setattr(analyses, "_write_arrays", killed)
    with pytest.raises(KeyboardInterrupt):
        _store(result, run)
    monkeypatch.undo()
    assert not (Path(run.url) / layout.ANALYSIS_DIR).exists() or not any(
        (Path(run.url) / layout.ANALYSIS_DIR).iterdir()
    )
    with pytest.raises(layout.StoreError, match="has no audit yet"):
        run.audit()
    _store(result, run)
    assert run.audit().clusters is not None


def test_the_command_audits_and_refuses_bad_input(token_run, tmp_path, capsys):
    store = token_run.store_url
    assert (
        cli(["audit", store, "--run", token_run.run_id, "--methods", "gradcam", "--blocks", "3", "--no-by-body-part"])
        == 0
    )
    out = capsys.readouterr().out
    assert "flagged: 1 clusters, 24 image maps" in out and "gradcam block 3, target 0, abnormal, cluster" in out
    assert cli(["audit", store, "--run", token_run.run_id, "--methods", "layercam"]) == 2
    assert "has no ['layercam'] maps" in capsys.readouterr().err
    assert cli(["audit", store, "--run", token_run.run_id, "--confirm"]) == 2
    assert "--confirm runs the run's model: pass its --checkpoint" in capsys.readouterr().err


def test_error_rows_only_are_a_clear_message(tmp_path, capsys):
    run = run_with_maps(str(tmp_path / "store"), [1] * 4, clean_map)
    index_dir = Path(run.url) / layout.INDEX_DIR
    for part in index_dir.glob("part-*.parquet"):
        frame = pd.read_parquet(part).assign(status="error", error="unreadable")
        frame.to_parquet(part)
    assert cli(["audit", run.store_url, "--run", run.run_id]) == 2
    assert "has no ok images (error rows only)" in capsys.readouterr().err


def test_a_store_that_cannot_be_written_is_named_and_holds_no_audit(tmp_path, capsys):
    run = run_with_maps(str(tmp_path / "store"), _labels(), clean_map)
    (Path(run.url) / layout.ANALYSIS_DIR).write_text("in the way")  # root writes anywhere: block the folder instead
    assert cli(["audit", run.store_url, "--run", run.run_id, "--methods", "cam"]) == 2
    assert f"cannot write the audit into the store {run.store_url}" in capsys.readouterr().err
    with pytest.raises(layout.StoreError):
        run.audit()


def test_compare_says_which_flagged_clusters_are_new_or_gone(token_run, tmp_path):
    from densecam_core.analysis.audit_changes import flagged_changes
    from densecam_core.analysis.comparison_summary import flagged_cluster_changes

    clean = run_with_maps(token_run.store_url, _labels(), clean_map, fingerprint="d" * 64)
    request = AuditRequest(methods=("gradcam",), blocks=(3,), by_body_part=False)
    assert flagged_cluster_changes(token_run, clean) is None, "the new run has no audit yet"
    _store(audit_run(token_run, request), token_run)
    _store(audit_run(clean, request), clean)
    gone = flagged_cluster_changes(token_run, clean)
    assert gone is not None and gone["status"].tolist() == ["gone"] and gone["images_before"].iloc[0] == len(TOKENS)
    new = flagged_changes(clean.audit().images, token_run.audit().images)
    assert new["status"].tolist() == ["new"]
    kept = flagged_changes(token_run.audit().images, token_run.audit().images)
    assert kept["status"].tolist() == ["kept"] and kept["overlap"].iloc[0] == 1.0
