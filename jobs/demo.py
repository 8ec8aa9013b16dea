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


@dataclass(frozen=True)
class DemoConfig:
    images: int = 500
    size: int = 128
    epochs: int = 3
    seed: int = 0
    batch_size: int = 8
    lr: float = 1e-4
    lesion_scale: float = 3.0
    min_side: int = 128
    max_side: int = 256
    valid_fraction: float = 0.3
    overlays: int = 4
    sheet_images: int = 18
    evaluate_images: int = 8  # valid images the map-quality evaluation scores (stratified sample); 0: none
    evaluate_steps: int = 8
    workers: int | None = None
    device: str | None = None  # training device; None: cuda when available
    progress: bool = True

    def validate(self) -> None:
        """Settings that cannot work, refused before anything is written."""
        if self.evaluate_images < 0 or self.evaluate_steps < 1:
            raise ValueError(
                f"--evaluate-images must be >= 0 and --evaluate-steps >= 1, got {self.evaluate_images}, {self.evaluate_steps}"
            )
        if self.images < 20 or self.size < 32 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"the demo needs --images >= 20, --size >= 32 and --epochs >= 1; got {self.images}, {self.size}, "
                f"{self.epochs}"
            )


def _say(message: str) -> None:
    print(message, flush=True)


def run_demo(workdir: str | os.PathLike, config: DemoConfig = DemoConfig()) -> dict[str, Any]:
    """Run every step; returns (and writes to ``demo-summary.json``) the figures and file paths."""
    config.validate()
    from densecam_core import fileio
    from densecam_core.data.manifest import read_manifest
    from densecam_core.data.synth import generate_mura
    from densecam_core.evaluation.localisation import boxes_by_image, format_pointing_game, pointing_game, read_boxes
    from densecam_core.evaluation.report import format_grid, summary_grid
    from densecam_core.figures import contact_sheet, image_panel
    from densecam_core.model.classification import image_and_study_metrics
    from densecam_core.model.training import TrainConfig, save_checkpoint, split_for_training, train
    from densecam_core.store.reader import open_store
    from jobs.cli.compare import compare
    from jobs.evaluate.job import EvaluateConfig, run_evaluation
    from jobs.explain.job import JobConfig, run_job

    started = time.perf_counter()
    work = Path(workdir).resolve()
    data, store, figures = work / "data", work / "store", work / "figures"
    work.mkdir(parents=True, exist_ok=True)
    if data.exists():  # the tree is cheap and deterministic: rebuild it rather than trust leftovers
        shutil.rmtree(data)
    figures.mkdir(exist_ok=True)

    steps = 7 if config.evaluate_images else 6
    _say(f"[1/{steps}] generating {config.images} synthetic radiographs (seed {config.seed}) in {data}")
    synth = generate_mura(
        data,
        images=config.images,
        seed=config.seed,
        min_side=config.min_side,
        max_side=config.max_side,
        valid_fraction=config.valid_fraction,
        lesion_scale=config.lesion_scale,
    )
    frame = read_manifest(data / "MURA-v1.1")
    train_rows, valid_rows = split_for_training(frame)
    _say(
        f"      {synth.images} images, {synth.studies} studies, {synth.lesions} lesion boxes; "
        f"{len(train_rows)} train / {len(valid_rows)} valid images"
    )

    checkpoint_a = work / f"model-epoch{config.epochs}.pt"
    checkpoint_b = work / f"model-epoch{config.epochs + 1}.pt"
    _say(
        f"[2/{steps}] training DenseNet169 at {config.size} px for {config.epochs} epochs, then one more for the update"
    )
    import torch

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
            save_checkpoint(model, checkpoint_a)

    trained = train(
        frame, checkpoint_b, train_config, progress=config.progress, log=lambda m: _say("      " + m), after_epoch=keep
    )

    valid_manifest = work / "valid.csv"
    valid_rows[["path", "label"]].assign(path=valid_rows["image_id"]).to_csv(valid_manifest, index=False)
    _say(
        f"[3/{steps}] explaining the {len(valid_rows)} valid images with the Ray job (model after epoch {config.epochs})"
    )
    job = dict(
        manifest=str(valid_manifest),
        store=str(store),
        image_root=str(data),
        size=config.size,
        batch_size=config.batch_size,
        shard_size=32,
        workers=config.workers,
        progress=config.progress,
    )
    import ray

    started_ray = not ray.is_initialized()
    if started_ray:  # one local Ray for both jobs and the evaluation (a job shuts down only a Ray it started)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True)
    try:
        summary_a = run_job(JobConfig(checkpoint=str(checkpoint_a), **job))
        _say("      " + summary_a.render().replace("\n", "\n      "))
        _say(f"[4/{steps}] explaining them again with the updated model (epoch {config.epochs + 1})")
        summary_b = run_job(JobConfig(checkpoint=str(checkpoint_b), **job))
        _say("      " + summary_b.render().replace("\n", "\n      "))
        quality = None
        if config.evaluate_images:
            valid_boxes = work / "valid_boxes.csv"
            all_boxes = read_boxes(data / "lesion_boxes.csv")
            all_boxes[all_boxes["image_id"].isin(valid_rows["image_id"])].to_csv(valid_boxes, index=False)
            _say(
                f"[5/7] scoring map quality of run A: {config.evaluate_images} valid images (stratified sample), "
                f"deletion/insertion (K = {config.evaluate_steps}), randomisation, stability, localisation"
            )
            quality_summary, quality = run_evaluation(
                EvaluateConfig(
                    store=str(store),
                    run=summary_a.run_id,
                    checkpoint=str(checkpoint_a),
                    metrics=("deletion", "insertion", "randomization", "stability", "localization"),
                    boxes=str(valid_boxes),
                    steps=config.evaluate_steps,
                    sample=min(config.evaluate_images, len(valid_rows)),
                    seed=config.seed,
                    workers=config.workers,
                    progress=config.progress,
                    force=True,
                )
            )
            _say("      " + quality_summary.render().replace("\n", "\n      "))
            _say("      " + format_grid(summary_grid(quality)).replace("\n", "\n      "))
    finally:
        if started_ray and ray.is_initialized():
            ray.shutdown()
    opened = open_store(str(store))
    run_a, run_b = opened.run(summary_a.run_id), opened.run(summary_b.run_id)

    _say(f"[{steps - 1}/{steps}] scoring run A (study AUROC, pointing game, figures)")
    metrics_a = image_and_study_metrics(run_a.index[run_a.index["status"] == "ok"])
    boxes = read_boxes(data / "lesion_boxes.csv")
    table = pointing_game(run_a, boxes)
    _say(
        f"      study-level AUROC {metrics_a['study']['auroc']:.3f} (image level {metrics_a['image']['auroc']:.3f}) "
        f"over {int(metrics_a['study']['count'])} valid studies"
    )
    _say("      " + format_pointing_game(table).replace("\n", "\n      "))
    hit = {f"{r.method}/{r.block}": float(r.hit_rate) for r in table.itertuples()}
    target_met = hit["cam/4"] >= 0.8 and hit["gradcam/4"] >= 0.8
    _say(f"      target (CAM and Grad-CAM block 4 >= 0.8): {'met' if target_met else 'NOT met'}")

    index = run_a.index
    lesion_ids = sorted(set(boxes["image_id"]) & set(index.loc[index["status"] == "ok", "image_id"]))
    grouped = boxes_by_image(boxes)
    panels = [
        image_panel(run_a, image_id, figures / f"overlay-{n + 1:02d}.png", boxes=grouped[image_id])
        for n, image_id in enumerate(lesion_ids[: config.overlays])
    ]
    sheet = (
        contact_sheet(run_a, lesion_ids[: config.sheet_images], figures / "contact-sheet-cam.png", boxes=grouped)
        if lesion_ids
        else None
    )
    _say("      overlays: " + ", ".join(panels))
    _say(f"      contact sheet: {sheet}")

    _say(f"[{steps}/{steps}] what the extra epoch changed (Grad-CAM block 4)")
    changes = compare(
        str(store),
        run_a.run_id,
        run_b.run_id,
        plot=str(figures / "compare.png"),
        out=lambda m: _say("      " + str(m).replace("\n", "\n      ")),
    )
    metrics_b = image_and_study_metrics(run_b.index[run_b.index["status"] == "ok"])
    result = {
        "workdir": str(work),
        "config": asdict(config),
        "seconds": time.perf_counter() - started,
        "images": synth.images,
        "train_images": len(train_rows),
        "valid_images": len(valid_rows),
        "checkpoints": [str(checkpoint_a), str(checkpoint_b)],
        "store": str(store),
        "runs": [run_a.run_id, run_b.run_id],
        "study_auroc": metrics_a["study"]["auroc"],
        "study_auroc_updated": metrics_b["study"]["auroc"],
        "training_history": trained.history,
        "pointing_game": table.to_dict(orient="records"),
        "random_baseline": float(table["random_baseline"].iloc[0]),
        "target_met": bool(target_met),
        "overlays": panels,
        "contact_sheet": sheet,
        "compare_plot": changes["plot"],
        "changes": changes["summary"].to_dict(orient="records"),
        "quality": None if quality is None else summary_grid(quality).to_dict(orient="records"),
    }
    fs, summary_path = fileio.filesystem(str(work / "demo-summary.json"))
    fileio.write_json_atomic(fs, summary_path, fileio.strict_json(result))
    _say(
        f"\ndone in {result['seconds']:.0f} s: study AUROC {result['study_auroc']:.3f}; pointing game CAM "
        f"{hit['cam/4']:.2f}, Grad-CAM block 4 {hit['gradcam/4']:.2f} (random {result['random_baseline']:.2f}); "
        f"summary in {work / 'demo-summary.json'}"
    )
    return result
