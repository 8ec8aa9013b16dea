"""EvaluateWorker: a plain class (no Ray) that scores one shard of a run and commits its metrics part.

The evaluation job's actors wrap it (``jobs/evaluate/job.py``) as the explanation job's wrap
``ExplainWorker``: same shards, same input path (the input cache, else decoding), a different step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW
from densecam_core.data.geometry import Geometry
from densecam_core.data.loader import BatchLoader
from densecam_core.evaluation.scorer import BatchScorer, MapKey, ScoreSettings
from densecam_core.store.inputs.cache import InputCache
from densecam_core.store.inputs.lookup import cached_model_inputs
from densecam_core.store.layout import Shard
from densecam_core.store.reader import open_store
from densecam_core.store.run import Run
from densecam_core.store.scores import family_parts, write_metrics_part
from densecam_core.vocabulary import map_keys
from jobs.runtime.contract import ShardResult
from jobs.runtime.replica import load_replica


@dataclass(frozen=True)
class EvaluateSettings:
    score: ScoreSettings
    methods: tuple[str, ...]
    size: int
    resize: str
    precision: str = "fp32"  # the run's; fp16 becomes fp32 on a CPU actor
    target: int = 0  # the class scored, at ``target_position`` of the run's target axis
    target_position: int = 0
    activation: str | None = None  # the run's (None: sigmoid for one output, else softmax)
    batch_size: int = 8  # images scored together
    decode_threads: int = 2
    input_cache: str = "read"  # read | off
    max_image_bytes: int | None = None
    dicom_window: str = DEFAULT_DICOM_WINDOW  # the run's: DICOM sources are windowed as when explained


def changed_since_run(geometry: Geometry, expected: tuple[int, int]) -> str | None:
    """The reason an image cannot be scored against its stored maps, if its size changed since the run."""
    if (geometry.orig_height, geometry.orig_width) != expected:
        return (
            f"the image is {geometry.orig_height}x{geometry.orig_width} now but was {expected[0]}x{expected[1]} "
            "when the run explained it: the file changed; explain it again before scoring"
        )
    return None


class EvaluateWorker:
    """Owns a model replica, its randomised cascade and its Explainer on one device; scores whole shards.

    Per-image input problems (unreadable, changed files) become error rows of the metrics part;
    anything else raises, so the driver retries the shard.
    """

    def __init__(
        self,
        weights: bytes | dict,
        settings: EvaluateSettings,
        *,
        store_url: str,
        run_id: str,
        device: str = "cpu",
        threads: int | None = None,
        expected_fingerprint: str | None = None,
    ) -> None:
        model = load_replica(weights, device=device, threads=threads, expected_fingerprint=expected_fingerprint)
        precision = "fp32" if settings.precision == "fp16" and device == "cpu" else settings.precision
        self.scorer = BatchScorer(
            model,
            settings.score,
            methods=settings.methods,
            precision=precision,
            target=settings.target,
            activation=settings.activation,
        )
        self.settings = settings
        self.run: Run = open_store(store_url).run(run_id)
        self.cache = (
            InputCache(store_url, settings.size, settings.resize, settings.dicom_window)
            if settings.input_cache != "off"
            else None
        )

    def map_keys(self) -> list[MapKey]:
        return map_keys(self.settings.methods)

    def process_shard(
        self, run_url: str, shard: Shard, rows: pd.DataFrame, boxes: dict[str, np.ndarray] | None = None
    ) -> ShardResult:
        """Score the shard's sampled ``rows`` (index rows: image_id, row, path, orig_height, orig_width)."""
        started = time.perf_counter()
        rows = rows.sort_values("row").reset_index(drop=True)
        paths = rows["path"].astype(str).tolist()
        _, cached, damaged = cached_model_inputs(self.cache, paths, threads=self.settings.decode_threads)
        stored = {key: self._stored(key, rows["row"].to_numpy()) for key in self.map_keys()}
        loader = BatchLoader(
            paths,
            size=self.settings.size,
            mode=self.settings.resize,
            batch_size=self.settings.batch_size,
            num_threads=self.settings.decode_threads,
            max_bytes=self.settings.max_image_bytes,
            cached=cached,
            dicom_window=self.settings.dicom_window,
        )
        families = self._unscored(run_url, shard)
        frames: dict[str, list[pd.DataFrame]] = {name: [] for name in families}
        errors: dict[int, str] = {}
        compute = 0.0
        for batch in loader if families else ():
            usable, pixels = [], []
            for record, one in zip(batch.ok_records, batch.images if batch.images is not None else []):
                expected = (int(rows.at[record.position, "orig_height"]), int(rows.at[record.position, "orig_width"]))
                reason = changed_since_run(record.geometry, expected)  # type: ignore[arg-type]
                if reason:
                    errors[record.position] = reason
                else:
                    usable.append(record)
                    pixels.append(one)
            errors.update({r.position: str(r.error) for r in batch.records if r.error is not None})
            if not usable:
                continue
            positions = [r.position for r in usable]
            tick = time.perf_counter()
            scored = self.scorer.score_families(
                torch.stack(pixels),
                {key: torch.from_numpy(values[positions]) for key, values in stored.items()},
                rows.loc[positions, "image_id"].tolist(),
                geometries=[r.geometry for r in usable],  # type: ignore[misc]
                boxes=boxes,
                families=families,
            )
            compute += time.perf_counter() - tick
            for name, frame in scored.items():
                frames[name].append(frame)
        tick = time.perf_counter()
        for name, parts in frames.items():  # each family's part whole, an image's error row in each
            self._commit(run_url, shard, name, [*parts, self._error_rows(rows, errors)], rows)
        write = time.perf_counter() - tick
        total = time.perf_counter() - started
        return ShardResult(
            shard.index,
            len(rows),
            len(rows) - len(errors),
            len(errors),
            {"total": total, "score": compute, "write": write, "read_wait": max(0.0, total - compute - write)},
            images_decoded=len(rows) - len(cached),
            images_from_cache=len(cached),
            cache_damaged=damaged,
        )

    def _unscored(self, run_url: str, shard: Shard) -> list[str]:
        """The asked families with no committed part for this shard (a retried shard scores only what it lacks)."""
        return [name for name in self.settings.score.metrics if shard.index not in family_parts(run_url, name)]

    @staticmethod
    def _commit(run_url: str, shard: Shard, family: str, frames: list[pd.DataFrame], rows: pd.DataFrame) -> None:
        scores = pd.concat([f for f in frames if not f.empty], ignore_index=True)
        scores["row"] = scores["image_id"].map(dict(zip(rows["image_id"], rows["row"]))).astype("int64")
        scores["shard"] = shard.index
        write_metrics_part(run_url, shard.index, scores, family=family)

    def _stored(self, key: MapKey, rows: np.ndarray) -> np.ndarray:
        """The run's map for ``rows`` of the scored target: (n, h, w) float32."""
        return self.run.read_maps(key.for_target(self.settings.target_position), rows=rows)

    @staticmethod
    def _error_rows(rows: pd.DataFrame, errors: dict[int, str]) -> pd.DataFrame:
        if not errors:
            return pd.DataFrame()
        positions = sorted(errors)
        return pd.DataFrame(
            {
                "image_id": rows.loc[positions, "image_id"].tolist(),
                "metric": "error",
                "value": np.nan,
                "error": [errors[p] for p in positions],
            }
        )
