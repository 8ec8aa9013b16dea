"""Tables of images: a local CSV or Parquet file (MURA's own CSVs included), or one behind an fsspec URL."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import ClassVar

import pandas as pd

from densecam_core.data.errors import ManifestError
from densecam_core.data.mura import parse_mura_path
from densecam_core.data.rows import root_for, rows_from_table
from densecam_core.data.sources.locations import is_remote, is_url
from densecam_core.data.sources.mura_csv import mura_root_of_csv, read_labelled_studies, read_mura_paths
from densecam_core.data.sources.registry import SourceOptions

PARQUET = (".parquet", ".pq")
CSV = (".csv", ".txt")


class TableSource:
    described: ClassVar[str] = (
        "a .csv or .parquet file with a 'path' column, or MURA's train/valid image-path or labelled-studies CSVs"
    )

    @classmethod
    def accepts(cls, text: str) -> bool:
        return not is_url(text) and text.lower().endswith(PARQUET + CSV)

    def __init__(self, text: str, options: SourceOptions) -> None:
        self.path, self.image_root = text, options.image_root

    def recorded(self) -> str:
        return self.path

    def rows(self) -> pd.DataFrame:
        if not os.path.exists(self.path):
            raise ManifestError(f"manifest {self.path!r} does not exist")
        if self.path.lower().endswith(PARQUET):
            return rows_from_table(pd.read_parquet(self.path), root_for(self.path, self.image_root))
        return self._read_csv()

    def _read_csv(self) -> pd.DataFrame:
        path, image_root = self.path, self.image_root
        with open(path, newline="", encoding="utf-8") as handle:
            first = next(csv.reader(handle), None)
        if first is None:
            raise ManifestError(f"manifest {path!r} is empty")
        if "path" in [c.strip() for c in first]:
            return rows_from_table(pd.read_csv(path, keep_default_na=True), root_for(path, image_root))
        root = Path(image_root) if image_root is not None else mura_root_of_csv(Path(path))
        if len(first) == 2 and first[0].rstrip().endswith("/") and first[1].strip() in ("0", "1"):
            return read_labelled_studies(Path(path), root)
        if len(first) == 1 and parse_mura_path(first[0].strip()):
            return read_mura_paths(Path(path), root)
        raise ManifestError(
            f"manifest {path!r}: first row {first!r} is neither a header with a 'path' column, "
            "a MURA image path, nor a MURA labelled study ('…/study1_positive/,1')"
        )


class UrlTableSource:
    described: ClassVar[str] = (
        "an fsspec URL (s3://, gs://, https://, …) of a .csv or .parquet file with a 'path' column"
    )

    @classmethod
    def accepts(cls, text: str) -> bool:
        return is_remote(text)

    def __init__(self, text: str, options: SourceOptions) -> None:
        self.url, self.image_root = text, options.image_root

    def recorded(self) -> str:
        return self.url

    def rows(self) -> pd.DataFrame:
        import fsspec

        url = self.url
        try:
            fs, inner = fsspec.core.url_to_fs(url)
            exists = fs.exists(inner)
        except (ImportError, ValueError) as exc:
            raise ManifestError(f"manifest {url!r} cannot be reached: {exc}") from None
        if not exists:
            raise ManifestError(f"manifest {url!r} does not exist")
        with fs.open(inner, "rb") as handle:
            if url.lower().endswith(PARQUET):
                table = pd.read_parquet(handle)
            elif url.lower().endswith(CSV):
                table = pd.read_csv(handle, keep_default_na=True, encoding="utf-8")
            else:
                raise ManifestError(f"manifest {url!r}: expected a .csv or a .parquet file at a URL")
        if "path" not in table.columns:
            raise ManifestError(
                f"manifest {url!r}: a manifest at a URL needs a 'path' column; it has {list(table.columns)}"
            )
        return rows_from_table(table, root_for(url, self.image_root))
