"""Reading a run's committed index: compacted files for the shards they cover, per-shard parts for the rest, retried
while a compaction replaces them; damaged, linked-out and non-regular files named, never read. No torch import."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from densecam_core import fileio
from densecam_core.store import layout
from densecam_core.store.index import IndexFiles, list_index


class IndexReader:
    """One read of one run's index."""

    def __init__(self, run_id: str, fs: Any, root: str, store_url: str) -> None:
        self.run_id, self.fs, self.root, self.store_url = run_id, fs, root, store_url

    def read(self, filters: Any = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Committed index rows (``Run.read_index``)."""
        expression = pq.filters_to_expression(filters) if isinstance(filters, list) else filters
        for _ in range(3):
            files = list_index(self.fs, self.root)
            try:
                table = self.tables(files, expression, list(columns) if columns else None)
            except FileNotFoundError:
                missing = [p for p in files.compacted if not self.fs.exists(p)]
                if missing and list_index(self.fs, self.root).compacted == files.compacted:  # listed, and still gone
                    raise layout.StoreError(
                        f"run {self.run_id}: the compacted index file {missing[0].rsplit('/', 1)[-1]} that "
                        f"{layout.INDEX_DIR}/_compacted.json lists is missing: run `densecam verify STORE --repair` "
                        "(the shards it held are then recomputed by the next job)"
                    ) from None
                continue  # a compaction replaced the files while we read them: read the new ones
            if table is None:
                return pd.DataFrame(columns=list(columns or layout.CORE_INDEX_COLUMNS))
            frame = table.to_pandas()
            if "row" in frame and not frame["row"].is_monotonic_increasing:  # compacted files are sorted already
                frame = frame.sort_values("row").reset_index(drop=True)
            return frame
        raise layout.StoreError(
            f"run {self.run_id}: the index kept changing while it was read (compactions); try again"
        )

    def tables(self, files: IndexFiles, expression: Any, columns: list[str] | None) -> pa.Table | None:
        """The rows of ``files`` as Arrow wrote them (None: no file)."""
        self._refuse_links_out([*files.compacted, *files.parts.values()])
        tables = []
        if files.compacted:
            where = expression
            if not files.complete:  # some compacted rows belong to shards recomputed since: leave them out
                covered = ds.field("shard").isin(sorted(files.covered))
                where = covered if expression is None else covered & expression
            tables.append(self._scan(files.compacted, where, columns))
        if files.parts:
            tables.append(self._scan(list(files.parts.values()), expression, columns))
        if not tables:
            return None
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")

    def _scan(self, paths: list[str], where: Any, columns: list[str] | None) -> pa.Table:
        try:  # one open per file: the schema comes from the first (one schema per run since format 2)
            return ds.dataset(paths, filesystem=self.fs, format="parquet").to_table(filter=where, columns=columns)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            # parts written before runs recorded their schema may disagree (int64 then double): unify them
            schemas = [self._schema(p) for p in paths]
            schema = pa.unify_schemas(schemas, promote_options="permissive")
            dataset = ds.dataset(paths, filesystem=self.fs, format="parquet", schema=schema)
            try:
                return dataset.to_table(filter=where, columns=columns)
            except (pa.ArrowInvalid, OSError) as exc:
                raise self._damaged("an index file", exc) from None

    def _refuse_links_out(self, paths: list[str]) -> None:
        """A local index file linked outside the store, or that is no regular file (a FIFO would block the
        read forever), is refused, never read (one stat per file)."""
        if not isinstance(self.fs, LocalFileSystem):
            return
        store = fileio.filesystem(self.store_url)[1]
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISREG(os.stat(path).st_mode):
                    raise layout.StoreError(
                        f"run {self.run_id}: the index file {path.rsplit('/', 1)[-1]} is not a regular file (a FIFO, "
                        "socket or device): remove it, then run `densecam verify STORE --repair`"
                    )
            outside = fileio.link_outside(path, store)
            if outside:
                raise layout.StoreError(
                    f"run {self.run_id}: the index file {path.rsplit('/', 1)[-1]} is a symbolic link to "
                    f"{outside}, outside the store: not followed; remove the link"
                )

    def _schema(self, path: str) -> pa.Schema:
        try:
            return pq.read_schema(path, filesystem=self.fs)
        except FileNotFoundError:
            raise
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._damaged(f"the index file {path.rsplit('/', 1)[-1]}", exc) from None

    def _damaged(self, what: str, exc: Exception) -> layout.StoreError:
        return layout.StoreError(
            f"run {self.run_id}: {what} is damaged ({exc}): run `densecam verify STORE --repair`, then the "
            "job again (it recomputes what the damaged file held)"
        )
