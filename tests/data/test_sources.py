"""The source door: a new kind of input is one class registered with ``register_source``; nothing else
changes. And the one place that tells a URL from a path is the sources room."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from densecam_core import read_manifest
from densecam_core.data.errors import ManifestError
from densecam_core.data.rows import rows_from_relative_paths
from densecam_core.data.sources import SOURCES, SourceOptions, register_source

REPO = Path(__file__).resolve().parents[2]


class ListFileSource:
    """A toy source: ``list:FILE``, a text file naming one image per line relative to the file's folder."""

    described: ClassVar[str] = "list:FILE, a text file of image paths"

    @classmethod
    def accepts(cls, text: str) -> bool:
        return text.startswith("list:")

    def __init__(self, text: str, options: SourceOptions) -> None:
        self.path = Path(text.removeprefix("list:"))

    def rows(self) -> pd.DataFrame:
        names = [line.strip() for line in self.path.read_text().splitlines() if line.strip()]
        return rows_from_relative_paths(names, self.path.parent)

    def recorded(self) -> str:
        return f"list:{self.path.name}"


def test_a_toy_source_is_one_class_and_reads_end_to_end(tmp_path: Path):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / name)
    (tmp_path / "images.lst").write_text("b.png\na.png\n")
    with pytest.raises(ManifestError, match=r"no source reads it.*Accepted: .*DICOMweb"):
        read_manifest(f"list:{tmp_path / 'images.lst'}")
    register_source(ListFileSource, first=True)
    try:
        frame = read_manifest(f"list:{tmp_path / 'images.lst'}")
    finally:
        SOURCES.remove(ListFileSource)
    assert list(frame["image_id"]) == ["b.png", "a.png"]
    assert frame.attrs["source"] == "list:images.lst"
    from densecam_core.data.decode import read_image

    assert read_image(frame["path"][0]).shape == (8, 8)


def test_only_the_sources_room_tells_a_url_from_a_path():
    pattern = re.compile(r"""["']://["']""")
    offenders = [
        str(path.relative_to(REPO))
        for package in ("densecam_core", "jobs")
        for path in (REPO / package).rglob("*.py")
        if pattern.search(path.read_text()) and "data/sources" not in path.as_posix()
    ]
    assert offenders == []
