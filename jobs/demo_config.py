"""``densecam demo``'s settings: one field per flag (the parser is generated from them). Torch- and Ray-free."""

from __future__ import annotations

from dataclasses import dataclass

from densecam_core.options import option


def parse_shortcut(text: str) -> str | None:
    """A shortcut token's description, or None for 'none'."""
    return None if text.strip().lower() == "none" else text


@dataclass(frozen=True)
class DemoConfig:
    """The demo's settings: one field per flag (``densecam demo``'s parser is generated from them)."""

    images: int = option(500, help="synthetic images to generate")
    size: int = option(128, help="model input size for training and explaining")
    epochs: int = option(2, help="epochs of the first model (the update adds one)")
    seed: int = option(0, help="the whole demo is the same for the same seed")
    batch_size: int = option(8, help="training batch size")
    lr: float = option(1e-4, help="Adam learning rate")
    lesion_scale: float = option(3.0, help="lesion size in the synthetic tree (0.25..4)")
    min_side: int = option(128, help="shortest long side of a synthetic image")
    max_side: int = option(256, help="longest side of a synthetic image")
    valid_fraction: float = option(0.3, help="share of patients in the valid split")
    overlays: int = option(4, help="overlay figures to draw")
    sheet_images: int = option(18, help="images on the contact sheet")
    evaluate_images: int = option(6, help="valid images whose maps the quality evaluation scores (0: skip it)")
    evaluate_steps: int = option(8, help="deletion and insertion steps of the evaluation")
    shortcut: str | None = option(
        "text:0.8:0.6",
        help="the token planted in abnormal images for the audit to find (text:FRACTION[:WIDTH]; 'none': no token)",
        parse=parse_shortcut,
    )
    workers: int | None = option(None, help="Ray actors for the explanation job")
    device: str | None = option(None, help="training device (default: cuda when available, else cpu)")
    progress: bool = option(True, help="progress bars")

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
