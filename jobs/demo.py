"""The demo's steps on generated data: a synthetic tree, training, two explained runs, scores, figures,
what the update changed. ``densecam demo`` (``jobs/cli/demo.py``) runs them.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jobs.demo_config import DemoConfig


def _say(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo writes: the tree, the store, the figures, and the two checkpoints of the update."""

    work: Path
    data: Path
    store: Path
    figures: Path
    checkpoint_a: Path
    checkpoint_b: Path

    @classmethod
    def under(cls, workdir: str | os.PathLike, config: DemoConfig) -> DemoPaths:
        work = Path(workdir).resolve()
        return cls(
            work,
            work / "data",
            work / "store",
            work / "figures",
            work / f"model-epoch{config.epochs}.pt",
            work / f"model-epoch{config.epochs + 1}.pt",
        )


def _indented(text: Any) -> str:
    return "      " + str(text).replace("\n", "\n      ")


def run_demo(workdir: str | os.PathLike, config: DemoConfig | None = None) -> dict[str, Any]:
    """Run every step; returns (and writes to ``demo-summary.json``) the figures and file paths."""
    config = config or DemoConfig()
    config.validate()
    from densecam_core.store.reader import open_store

    started = time.perf_counter()
    paths = DemoPaths.under(workdir, config)
    paths.work.mkdir(parents=True, exist_ok=True)
    if paths.data.exists():  # the tree is cheap and deterministic: rebuild it rather than trust leftovers
        shutil.rmtree(paths.data)
    paths.figures.mkdir(exist_ok=True)
    steps = 7 if config.evaluate_images else 6
    synth, frame, train_rows, valid_rows = _generate(paths, config, steps)
    trained = _train(frame, paths, config, steps)
    run_ids, quality = _explain_twice(paths, config, valid_rows, steps)
    opened = open_store(str(paths.store))
    run_a, run_b = opened.run(run_ids[0]), opened.run(run_ids[1])
    scored = _score(run_a, paths, config, steps)
    audited = {"a": _audit(run_a, "A", paths, config), "b": _audit(run_b, "B", paths, config)}
    changes = _changes(run_a, run_b, paths, steps)
    report = _report(run_a, run_b, paths)
    metrics_b = _metrics(run_b)
    result = {
        "workdir": str(paths.work),
        "config": asdict(config),
        "seconds": time.perf_counter() - started,
        "images": synth.images,
        "train_images": len(train_rows),
        "valid_images": len(valid_rows),
        "checkpoints": [str(paths.checkpoint_a), str(paths.checkpoint_b)],
        "store": str(paths.store),
        "runs": [run_a.run_id, run_b.run_id],
        "study_auroc": scored["metrics"]["study"]["auroc"],
        "study_auroc_updated": metrics_b["study"]["auroc"],
        "training_history": trained.history,
        "pointing_game": scored["table"].to_dict(orient="records"),
        "random_baseline": float(scored["table"]["random_baseline"].iloc[0]),
        "target_met": scored["target_met"],
        "overlays": scored["panels"],
        "contact_sheet": scored["sheet"],
        "compare_plot": changes["plot"],
        "report": report,
        "changes": changes["summary"].to_dict(orient="records"),
        "quality": None if quality is None else _quality_grid(quality).to_dict(orient="records"),
        "audit": audited,
    }
    _write_summary(paths, result, scored["hit"])
    return result


def _generate(paths: DemoPaths, config: DemoConfig, steps: int) -> tuple[Any, Any, Any, Any]:
    """Step 1: the synthetic tree (lesion boxes known) and its train/valid split."""
    from densecam_core.data.manifest import read_manifest
    from densecam_core.data.shortcuts import Shortcut
    from densecam_core.data.synth import generate_mura
    from densecam_core.model.training_data import split_for_training

    _say(f"[1/{steps}] generating {config.images} synthetic radiographs (seed {config.seed}) in {paths.data}")
    synth = generate_mura(
        paths.data,
        images=config.images,
        seed=config.seed,
        min_side=config.min_side,
        max_side=config.max_side,
        valid_fraction=config.valid_fraction,
        lesion_scale=config.lesion_scale,
        shortcut=Shortcut.parse(config.shortcut) if config.shortcut else None,
    )
    frame = read_manifest(paths.data / "MURA-v1.1")
    train_rows, valid_rows = split_for_training(frame)
    _say(
        f"      {synth.images} images, {synth.studies} studies, {synth.lesions} lesion boxes; "
        f"{len(train_rows)} train / {len(valid_rows)} valid images"
    )
    return synth, frame, train_rows, valid_rows


def _train(frame: Any, paths: DemoPaths, config: DemoConfig, steps: int) -> Any:
    """Step 2: train for ``epochs`` (checkpoint A), then one more epoch (checkpoint B, the update)."""
    import torch

    from densecam_core.model.training import TrainConfig, save_checkpoint, train

    _say(
        f"[2/{steps}] training DenseNet169 at {config.size} px for {config.epochs} epochs, then one more for the update"
    )
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    train_config = TrainConfig(
        size=config.size,
        epochs=config.epochs + 1,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        device=device,
    )

    def keep(epoch: int, model: Any, entry: dict[str, Any]) -> None:
        if epoch == config.epochs:
            save_checkpoint(model, paths.checkpoint_a)

    return train(
        frame,
        paths.checkpoint_b,
        train_config,
        progress=config.progress,
        log=lambda m: _say("      " + m),
        after_epoch=keep,
    )


def _explain_twice(paths: DemoPaths, config: DemoConfig, valid_rows: Any, steps: int) -> tuple[tuple[str, str], Any]:
    """Steps 3-5: the Ray job explains the valid images with both models (one local Ray for all),
    and the evaluation job scores run A's map quality. Returns both run ids and the quality table."""
    import ray

    from jobs.explain.job import ExplainConfig, run_explain

    valid_manifest = paths.work / "valid.csv"
    valid_rows[["path", "label"]].assign(path=valid_rows["image_id"]).to_csv(valid_manifest, index=False)
    _say(
        f"[3/{steps}] explaining the {len(valid_rows)} valid images with the Ray job (model after epoch {config.epochs})"
    )
    job = dict(
        manifest=str(valid_manifest),
        store=str(paths.store),
        image_root=str(paths.data),
        size=config.size,
        batch_size=config.batch_size,
        shard_size=32,
        workers=config.workers,
        progress=config.progress,
    )
    started_ray = not ray.is_initialized()
    if started_ray:  # one local Ray for both jobs and the evaluation (a job shuts down only a Ray it started)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True)
    try:
        summary_a = run_explain(ExplainConfig(checkpoint=str(paths.checkpoint_a), **job))
        _say(_indented(summary_a.render()))
        _say(f"[4/{steps}] explaining them again with the updated model (epoch {config.epochs + 1})")
        summary_b = run_explain(ExplainConfig(checkpoint=str(paths.checkpoint_b), **job))
        _say(_indented(summary_b.render()))
        quality = _evaluate(paths, config, valid_rows, summary_a.run_id) if config.evaluate_images else None
    finally:
        if started_ray and ray.is_initialized():
            ray.shutdown()
    return (summary_a.run_id, summary_b.run_id), quality


def _evaluate(paths: DemoPaths, config: DemoConfig, valid_rows: Any, run_id: str) -> Any:
    """Step 5: map quality of run A on a stratified sample of the valid images, localisation included."""
    from densecam_core.analysis.pointing import read_boxes
    from densecam_core.evaluation.quality import format_grid
    from jobs.evaluate.job import EvaluateConfig, run_evaluation

    valid_boxes = paths.work / "valid_boxes.csv"
    all_boxes = read_boxes(paths.data / "lesion_boxes.csv")
    all_boxes[all_boxes["image_id"].isin(valid_rows["image_id"])].to_csv(valid_boxes, index=False)
    _say(
        f"[5/7] scoring map quality of run A: {config.evaluate_images} valid images (stratified sample), "
        f"deletion/insertion (K = {config.evaluate_steps}), randomisation, stability, localisation"
    )
    quality_summary, quality = run_evaluation(
        EvaluateConfig(
            store=str(paths.store),
            run=run_id,
            checkpoint=str(paths.checkpoint_a),
            metrics=("deletion", "insertion", "randomisation", "stability", "localisation"),
            boxes=str(valid_boxes),
            steps=config.evaluate_steps,
            sample=min(config.evaluate_images, len(valid_rows)),
            seed=config.seed,
            workers=config.workers,
            progress=config.progress,
            force=True,
        )
    )
    _say(_indented(quality_summary.render()))
    _say(_indented(format_grid(_quality_grid(quality))))
    return quality


def _quality_grid(quality: Any) -> Any:
    from densecam_core.evaluation.quality import summary_grid

    return summary_grid(quality)


def _metrics(run: Any) -> dict[str, Any]:
    from densecam_core.model.classification import image_and_study_metrics

    return image_and_study_metrics(run.index[run.index["status"] == "ok"])


def _score(run_a: Any, paths: DemoPaths, config: DemoConfig, steps: int) -> dict[str, Any]:
    """Step 6 (of 7): run A's study AUROC and pointing game against the known lesion boxes, and its figures."""
    from densecam_core.analysis.figures import contact_sheet, image_panel
    from densecam_core.analysis.pointing import boxes_by_image, format_pointing_game, pointing_game, read_boxes

    _say(f"[{steps - 1}/{steps}] scoring run A (study AUROC, pointing game, figures)")
    metrics_a = _metrics(run_a)
    boxes = read_boxes(paths.data / "lesion_boxes.csv")
    table = pointing_game(run_a, boxes)
    _say(
        f"      study-level AUROC {metrics_a['study']['auroc']:.3f} (image level {metrics_a['image']['auroc']:.3f}) "
        f"over {int(metrics_a['study']['count'])} valid studies"
    )
    _say(_indented(format_pointing_game(table)))
    hit = {f"{r.method}/{r.block}": float(r.hit_rate) for r in table.itertuples()}
    target_met = hit["cam/4"] >= 0.8 and hit["gradcam/4"] >= 0.8
    _say(f"      target (CAM and Grad-CAM block 4 >= 0.8): {'met' if target_met else 'NOT met'}")
    index = run_a.index
    lesion_ids = sorted(set(boxes["image_id"]) & set(index.loc[index["status"] == "ok", "image_id"]))
    grouped = boxes_by_image(boxes)
    panels = [
        image_panel(run_a, image_id, paths.figures / f"overlay-{n + 1:02d}.png", boxes=grouped[image_id])
        for n, image_id in enumerate(lesion_ids[: config.overlays])
    ]
    sheet_path = paths.figures / "contact-sheet-cam.png"
    sheet = contact_sheet(run_a, lesion_ids[: config.sheet_images], sheet_path, boxes=grouped) if lesion_ids else None
    _say("      overlays: " + ", ".join(panels))
    _say(f"      contact sheet: {sheet}")
    return {
        "metrics": metrics_a,
        "table": table,
        "hit": hit,
        "target_met": bool(target_met),
        "panels": panels,
        "sheet": sheet,
    }


def _audit(run: Any, name: str, paths: DemoPaths, config: DemoConfig) -> dict[str, Any]:
    """A run's audit (every map, within each label: the valid split is too small to split by body part too),
    stored beside the run; with a planted token, how well the flagged images match the ones that carry it.
    Both runs are audited, so the comparison says which flagged clusters the update made new."""
    import pandas as pd

    from densecam_core.analysis.audit import AuditRequest, audit_run
    from densecam_core.store.analyses import write_audit
    from jobs.audit.job import render_audit

    _say(f"      audit: where run {name}'s maps point across the valid images")
    result = audit_run(run, AuditRequest(by_body_part=False, seed=config.seed))
    tables = {"images": result.images, "clusters": result.clusters, "atlases": result.atlases}
    folder = write_audit(
        run.url, settings=result.settings, tables=tables, arrays=result.arrays, messages=result.messages
    )
    flagged = result.clusters[result.clusters["flagged"]] if len(result.clusters) else result.clusters
    lines = render_audit(run, result, folder).splitlines()
    _say(_indented("\n".join(line for line in lines if "too coarse" not in line)))  # those notes stay in the audit
    found: dict[str, Any] = {"folder": folder, "flagged_clusters": len(flagged)}
    planted_file = paths.data / "shortcuts.csv"
    if config.shortcut and planted_file.exists():
        planted = set(pd.read_csv(planted_file)["image_id"])
        images = result.images[result.images["label"] == 1]
        per_map = []
        for (method, block), rows in images.groupby(["method", "block"]):
            truth, flagged = rows["image_id"].isin(planted), rows["flagged"]
            hits = int((truth & flagged).sum())
            per_map.append(
                {
                    "map": f"{method}/{block}",
                    "flagged": int(flagged.sum()),
                    "precision": hits / max(1, int(flagged.sum())),
                    "recall": hits / max(1, int(truth.sum())),
                }
            )
        found["token"] = per_map
        carriers = len(planted & set(images["image_id"]))
        found_maps = [r for r in per_map if r["flagged"]]
        said = ", ".join(f"{r['map']} (precision {r['precision']:.2f}, recall {r['recall']:.2f})" for r in found_maps)
        _say(f"      the planted token ({carriers} valid abnormal images carry it): {said or 'not flagged at any map'}")
    return found


def _changes(run_a: Any, run_b: Any, paths: DemoPaths, steps: int) -> dict[str, Any]:
    """The last step: what the extra epoch changed, per body part and per image."""
    from densecam_core.analysis.comparison_summary import report_changes

    _say(f"[{steps}/{steps}] what the extra epoch changed (Grad-CAM block 4)")
    return report_changes(
        str(paths.store),
        run_a.run_id,
        run_b.run_id,
        plot=str(paths.figures / "compare.png"),
        out=lambda m: _say(_indented(m)),
    )


def _report(run_a: Any, run_b: Any, paths: DemoPaths) -> str:
    """Run A's report page, its galleries beside run B's maps and the lesion boxes' pointing game."""
    from densecam_core.export.report import ReportRequest, write_report

    folder = paths.work / "report"
    if folder.exists():  # the demo's own folder: a page of an earlier demo would leave stale pictures
        shutil.rmtree(folder)
    started = time.perf_counter()
    request = ReportRequest(boxes=paths.data / "lesion_boxes.csv")
    result = write_report(run_a, folder, request, compare=run_b)
    _say(f"      report page ({result.cards} cards, {time.perf_counter() - started:.1f} s): {result.page}")
    return result.page


def _write_summary(paths: DemoPaths, result: dict[str, Any], hit: dict[str, float]) -> None:
    from densecam_core import fileio

    fs, summary_path = fileio.filesystem(str(paths.work / "demo-summary.json"))
    fileio.write_json_atomic(fs, summary_path, fileio.strict_json(result))
    _say(
        f"\ndone in {result['seconds']:.0f} s: study AUROC {result['study_auroc']:.3f}; pointing game CAM "
        f"{hit['cam/4']:.2f}, Grad-CAM block 4 {hit['gradcam/4']:.2f} (random {result['random_baseline']:.2f}); "
        f"summary in {paths.work / 'demo-summary.json'}"
    )
