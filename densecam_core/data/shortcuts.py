"""Shortcuts planted in synthetic radiographs: ground truth for the audit.

A text token (``PORTABLE``, as departments stamp portable films) in mid-grey, a given share of the image wide,
in a fixed corner give or take a few pixels, written into a share of the abnormal images of both splits. Mid
grey and letter-shaped on purpose: the generator's lesions are bright plates with dark screws, and an artefact
that looks like them (a bright box with a letter, a checkerboard) is "used" as strongly by a model that never
saw it, so it cannot tell a shortcut from a lesion-like feature (docs/PERFORMANCE.md has the measurements).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class Shortcut:
    """``text:FRACTION[:WIDTH[:CORNER]]``: the share of abnormal images that carry the token, its width as a
    share of the image's, the corner it sits in."""

    fraction: float
    width: float = 0.5
    corner: str = "top_left"
    text: str = "PORTABLE"
    grey: int = 128

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"the shortcut's share of abnormal images must be in (0, 1], got {self.fraction}")
        if not 0.1 <= self.width <= 0.9:
            raise ValueError(f"the shortcut's width must be 0.1 to 0.9 of the image's, got {self.width}")
        if self.corner not in CORNERS:
            raise ValueError(f"the shortcut's corner must be one of {', '.join(CORNERS)}, got {self.corner!r}")

    @classmethod
    def parse(cls, text: str) -> Shortcut:
        """``text:0.7`` (70 % of abnormal images), ``text:0.7:0.5`` (half the width), ``text:0.7:0.5:top_right``."""
        kind, _, rest = text.partition(":")
        if kind != "text" or not rest:
            raise ValueError(f"`shortcut` takes text:FRACTION[:WIDTH[:CORNER]], e.g. text:0.7:0.5; got {text!r}")
        parts = rest.split(":")
        if len(parts) > 3:
            raise ValueError(f"`shortcut` takes text:FRACTION[:WIDTH[:CORNER]]; got {text!r}")
        try:
            fraction = float(parts[0])
            width = float(parts[1]) if len(parts) > 1 else cls.width
        except ValueError:
            raise ValueError(f"`shortcut`'s FRACTION and WIDTH are numbers; got {text!r}") from None
        return cls(fraction, width, parts[2] if len(parts) > 2 else cls.corner)

    @property
    def name(self) -> str:
        return f"text:{self.text}"

    def chosen(self, seed: int, abnormal: bool) -> bool:
        """Whether an image of ``seed`` carries the token: its own random stream, so images without one are
        drawn exactly as without ``--shortcut``."""
        return abnormal and bool(np.random.default_rng([seed, 0x5C]).random() < self.fraction)

    def draw(self, canvas: Image.Image, seed: int) -> tuple[int, int, int, int]:
        """Write the token onto the grey ``canvas`` (before its blur and noise, like everything drawn there);
        returns its box (x0, y0, x1, y1)."""
        rng = np.random.default_rng([seed, 0x5D])
        mask = _glyphs(self.text)
        width = max(8, round(self.width * canvas.width))
        height = max(3, round(width * mask.height / mask.width))
        mask = mask.resize((width, height), Image.Resampling.BILINEAR)
        margin = max(2, round(0.03 * min(canvas.size)))
        jitter = rng.integers(-2, 3, size=2)
        left = margin if self.corner.endswith("left") else canvas.width - width - margin
        top = margin if self.corner.startswith("top") else canvas.height - height - margin
        x0 = int(np.clip(left + jitter[0], 0, canvas.width - width))
        y0 = int(np.clip(top + jitter[1], 0, canvas.height - height))
        canvas.paste(self.grey, (x0, y0, x0 + width, y0 + height), mask)
        return x0, y0, x0 + width, y0 + height


@functools.lru_cache(maxsize=4)
def _glyphs(text: str) -> Image.Image:
    """The text as a bold white-on-black mask, cropped to its ink (Pillow's own scalable font: nothing to
    install), drawn large once and scaled to each image."""
    font = ImageFont.load_default(size=40)
    canvas = Image.new("L", (40 * len(text), 64), 0)
    ImageDraw.Draw(canvas).text((4, 4), text, fill=255, font=font, stroke_width=2, stroke_fill=255)
    return canvas.crop(canvas.getbbox() or (0, 0, 1, 1))
