"""``densecam localise``'s settings: one field per flag (the parser is generated from them). Torch- and Ray-free."""

from __future__ import annotations

from dataclasses import dataclass

from densecam_core.options import option
from jobs.audit.config import parse_blocks, parse_words


def parse_calibration(text: str) -> float | str:
    """A fraction in (0, 1), else the path of a file of image ids."""
    try:
        value = float(text)
    except ValueError:
        return text
    if not 0.0 < value < 1.0:
        raise ValueError(f"--calibrate takes a fraction between 0 and 1 or a file of image ids, got {text!r}")
    return value


@dataclass(kw_only=True)
class LocaliseConfig:
    """What to cut, how, and where the weak labels and their scores go."""

    store: str = option(help="heatmap store path or URL", positional=True)
    run: str = option("latest", help="the run: id, fingerprint prefix or 'latest'")
    boxes: str = option(help="true boxes, image_id,x0,y0,x1,y1[,target] in each image's pixels (as synth writes)")
    out: str = option(help="folder for metrics.csv, metrics_by_size.csv, coco.json, chexlocalize/ and seg/")
    masks: str | None = option(
        None, help="folder of true masks, <image id>.png (non-zero = lesion); images without one use their boxes"
    )
    calibrate: float | str = option(
        0.2,
        help="thresholds are chosen on this fraction of the studies with a box (seeded), or on the image ids of "
        "this file; the other images are reported",
        parse=parse_calibration,
    )
    min_split_images: int = option(10, help="fewest images either side of the calibration split may hold")
    methods: tuple[str, ...] | None = option(
        None,
        help="maps, comma-separated (cam, gradcam, ...); default: cam and every method of the run",
        parse=parse_words,
    )
    blocks: tuple[int, ...] = option((1, 2, 3, 4), help="dense blocks", parse=parse_blocks)
    target: tuple[str, ...] | None = option(
        None, help="target classes (names or positions), comma-separated; default: every target", parse=parse_words
    )
    box_rule: str = option(
        "all", help="boxes of every component above the threshold (MaxBoxAccV2), or of the largest (CAM)",
        choices=("all", "largest"),
    )  # fmt: skip
    mask_rule: str = option(
        "tau", help="masks at a calibrated threshold, or Otsu's split per image", choices=("tau", "otsu")
    )
    min_probability: float | None = option(
        None, help="no box or mask where the model's probability for the target is below this (CheXlocalize)"
    )
    steps: int = option(100, help="thresholds k/steps of the map's maximum")
    grid_side: int = option(256, help="scores are computed on each image's grid scaled to at most this long side")
    bootstrap: int = option(1000, help="bootstrap replicates over studies for the intervals (0: none)")
    seed: int = option(0, help="seeds the calibration draw and the bootstrap")
    workers: int = option(1, help="processes that score images")
    overwrite: bool = option(False, help="write into an output folder that already holds files")
    pseudonym_key: str | None = option(
        None, help="the key the run's DICOM identifiers were pseudonymised with, for the Segmentations"
    )

    def validate(self) -> None:
        if self.min_split_images < 1 or self.workers < 1:
            raise ValueError("--min-split-images and --workers must be >= 1")
