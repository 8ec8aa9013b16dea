"""Reading stores from notebooks: ``open_store(url).run("latest").index / maps / heatmap / overlay``.

Only committed shards (those with an ``index/part-*.parquet``) are visible. No torch import.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from densecam_core import fileio
from densecam_core.store import layout
from densecam_core.store.record import RunRecord, RunSettings
from densecam_core.store.run import Run


class Store:
    """A heatmap store: several runs (one per model fingerprint and settings)."""

    def __init__(self, url: str) -> None:
        self.url = str(url)
        self._fs, self._root = fileio.filesystem(self.url)
        self._problems: dict[str, str] | None = None
        marker = fileio.join(self._root, layout.MARKER)
        self._local_root = self._root if isinstance(self._fs, LocalFileSystem) else None
        for name in (layout.MARKER, layout.RUNS_DIR):
            outside = fileio.link_outside(fileio.join(self._root, name), self._root) if self._local_root else None
            if outside:
                raise layout.StoreError(
                    f"{name} in store {self.url!r} is a symbolic link to {outside}, outside the store: not "
                    "followed; remove the link"
                )
        if not self._fs.exists(marker):
            here = (
                self._fs.ls(self._root, detail=False)[:10] if self._fs.exists(self._root) else "nothing (no such path)"
            )
            raise layout.StoreError(f"{self.url!r} is not a densecam store (no {layout.MARKER}); it holds {here}")
        layout.check_version(fileio.read_json(self._fs, marker).get("format_version", 0), f"store {self.url!r}")

    def __repr__(self) -> str:
        return f"Store({self.url!r}, runs={list(self.run_metadata())})"

    @property
    def problems(self) -> dict[str, str]:
        """Folder name -> why it is not a readable run, as the last listing of the runs found (listed now if
        none was yet)."""
        if self._problems is None:
            self.run_metadata()
        assert self._problems is not None
        return self._problems

    def run_metadata(self) -> dict[str, dict[str, Any]]:
        """run_id -> the run's run.json, for every readable run in the store.

        Only folders named like the writer's run ids (``run-`` + 16 hex digits) whose ``run.json``
        names that same id are runs: a crafted ``run.json`` cannot point the reader outside its own
        folder. Other and unreadable folders are skipped and listed in ``problems``, so one broken run
        never makes the store unreadable.
        """
        runs_dir = fileio.join(self._root, layout.RUNS_DIR)
        metas: dict[str, dict[str, Any]] = {}
        problems: dict[str, str] = {}
        self._problems = problems
        if not self._fs.exists(runs_dir):
            return metas
        for path in sorted(self._fs.ls(runs_dir, detail=False)):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            run_json = fileio.join(path, layout.RUN_JSON)
            if not layout.RUN_ID.match(name):
                problems[name] = "not a run folder (run ids are 'run-' and 16 hex digits)"
                continue
            outside = fileio.link_outside(path, self._root) if isinstance(self._fs, LocalFileSystem) else None
            if outside:
                problems[name] = f"a symbolic link to {outside}, outside the store: not followed"
                continue
            try:
                meta = fileio.read_json(self._fs, run_json, within=self._local_root)
            except FileNotFoundError:
                continue  # a run being created: run.json is written last
            except fileio.LinkOutsideError as exc:
                problems[name] = f"run.json is not followed: {exc}"
                continue
            except (OSError, ValueError) as exc:
                problems[name] = f"unreadable run.json: {exc}"
                continue
            layout.check_version(meta.get("format_version", 0), f"run {name}")
            if meta.get("run_id") != name:
                problems[name] = f"run.json names run {meta.get('run_id')!r}, not its folder {name!r}"
                continue
            problem = layout.run_meta_problem(meta)
            if problem:
                problems[name] = problem
                continue
            metas[name] = meta
        return metas

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run, from the runs' ``run.json`` alone (no index is read): counts are those the
        last job or compaction recorded (``counted_at``); a run no job has finished since the counts were
        introduced shows none until its next job or ``densecam compact``."""
        columns = [
            "run_id",
            "model_fingerprint",
            "checkpoint",
            *RunSettings.listed(),
            "created",
            "images_committed",
            "ok",
            "errors",
            "counted_at",
        ]
        records = []
        for run_id, meta in self.run_metadata().items():
            record = RunRecord.parse(meta)
            counts, settings = record.counts, record.settings.recorded()
            records.append(
                {
                    "run_id": run_id,
                    "model_fingerprint": record.model_fingerprint,
                    "checkpoint": record.checkpoint,
                    **{k: settings[k] for k in RunSettings.listed()},
                    "created": record.created,
                    "images_committed": counts.get("images"),
                    "ok": counts.get("ok"),
                    "errors": counts.get("errors"),
                    "counted_at": counts.get("updated"),
                }
            )
        frame = pd.DataFrame.from_records(records, columns=columns)
        return frame.sort_values("created").reset_index(drop=True)

    def run(self, key: str = "latest") -> Run:
        """A run by id, by model fingerprint (or a unique prefix of either), or ``"latest"``."""
        metas = self.run_metadata()
        damaged = [name for name in self.problems if name.startswith(str(key)) and layout.RUN_ID.match(name)]
        if key != "latest" and damaged and not any(r.startswith(str(key)) for r in metas):
            raise layout.StoreError(
                f"run {damaged[0]}: {self.problems[damaged[0]]}; restore the file from a backup, or delete "
                "the run's folder and explain it again"
            )
        if not metas:
            raise layout.StoreError(f"store {self.url!r} has no runs yet")
        if key == "latest":
            run_id = max(metas, key=lambda r: metas[r]["created"])
            return Run(self.url, run_id, metas[run_id])
        matches = [r for r, m in metas.items() if r.startswith(key) or m["model_fingerprint"].startswith(key)]
        if len(matches) == 1:
            return Run(self.url, matches[0], metas[matches[0]])
        what = "is ambiguous between" if matches else "matches none of the runs"
        listing = ", ".join(f"{r} (model {m['model_fingerprint'][:12]})" for r, m in metas.items())
        raise layout.StoreError(f"run {key!r} {what}: {listing}")


def open_store(url: str) -> Store:
    """Open a heatmap store at a local path or fsspec URL (``s3://``, ``gs://``, ``memory://``)."""
    return Store(url)
