"""ExplainWorker: a plain class (no Ray) that turns one shard of manifest rows into a committed shard.

Ray actors wrap it in ``jobs/explain.py``; tests drive it directly.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from densecam_core.explain import Explainer
from densecam_core.loader import BatchLoader
from densecam_core.manifest import Shard
from densecam_core.model import load_densenet169, model_fingerprint
from densecam_core.store import format as fmt
from densecam_core.store.writer import write_shard


@dataclass(frozen=True)
class ExplainSettings:
    methods: tuple[str, ...]
    size: int = 320
    resize: str = "stretch"
    precision: str = "fp32"
    targets: str | tuple[int, ...] | None = None
    batch_size: int = 8
    decode_threads: int = 2

    def for_run_id(self) -> dict[str, Any]:
        targets = list(self.targets) if isinstance(self.targets, tuple) else self.targets
        return {"methods": list(self.methods), "size": self.size, "resize": self.resize,
                "precision": self.precision, "targets": targets}


@dataclass
class ShardResult:
    shard: int
    images: int
    ok: int
    errors: int
    seconds: dict[str, float] = field(default_factory=dict)


class ExplainWorker:
    """Owns one model replica and Explainer on one device and processes whole shards."""

    def __init__(self, weights: bytes | dict, settings: ExplainSettings, *, device: str = "cpu",
                 threads: int | None = None, expected_fingerprint: str | None = None, warm_up: bool = True) -> None:
        if threads:
            torch.set_num_threads(threads)
        source = io.BytesIO(weights) if isinstance(weights, (bytes, bytearray)) else weights
        model = load_densenet169(source, device=device)
        self.fingerprint = model_fingerprint(model)
        if expected_fingerprint and expected_fingerprint != self.fingerprint:
            raise RuntimeError("weights received by the worker differ from the driver's (fingerprint mismatch)")
        self.settings = settings
        self.explainer = Explainer(model, methods=settings.methods, targets=settings.targets, precision=settings.precision)
        if warm_up:
            self.warm_up()

    def warm_up(self) -> None:
        """One pass on a blank full batch, so kernel selection (oneDNN primitives, cuDNN plans) and
        allocator growth happen while the actor starts rather than inside the first shard.

        Compute stays on the thread that calls the worker: torch ops issued from a second thread ran
        about 13 % slower on CPU here (a second OpenMP team), so shards are not overlapped with threads.
        """
        self.explainer(torch.zeros(self.settings.batch_size, 3, self.settings.size, self.settings.size))

    def process_shard(self, run_url: str, run_id: str, shard: Shard, shard_size: int, rows: pd.DataFrame) -> ShardResult:
        """Decode (threads, overlapped), explain in batches, write the shard's chunks, commit its part."""
        started = time.perf_counter()
        rows = rows.sort_values("row").reset_index(drop=True)
        count = len(rows)
        expected_rows = list(range(shard.row_start, shard.row_stop))
        if rows["row"].tolist() != expected_rows:
            raise ValueError(f"shard {shard.index} must cover rows {shard.row_start}..{shard.row_stop - 1} contiguously")
        loader = BatchLoader(rows["path"].astype(str).tolist(), size=self.settings.size, mode=self.settings.resize,
                             batch_size=self.settings.batch_size, num_threads=self.settings.decode_threads)
        outputs: dict[str, np.ndarray] = {}
        heights = np.zeros(count, dtype=np.int64)
        widths = np.zeros(count, dtype=np.int64)
        errors: list[str | None] = [None] * count
        logit = np.full(count, np.nan, dtype=np.float32)
        prob = np.full(count, np.nan, dtype=np.float32)
        compute = 0.0
        for batch in loader:
            for record in batch.records:
                errors[record.position] = record.error
                if record.geometry is not None:
                    heights[record.position] = record.geometry.orig_height
                    widths[record.position] = record.geometry.orig_width
            ok = batch.ok_records
            if not ok:
                continue
            tick = time.perf_counter()
            try:
                result = self.explainer(batch.images).to("cpu")
            except Exception as exc:  # per-batch boundary: e.g. an image size the network cannot take
                for record in ok:
                    errors[record.position] = f"explanation failed: {type(exc).__name__}: {exc}"
                continue
            compute += time.perf_counter() - tick
            positions = np.array([r.position for r in ok])
            named = {"logits": result.logits, "cam": result.cam}
            for method, per_block in result.maps.items():
                for block, values in per_block.items():
                    named[fmt.array_name(method, block)] = values
            for name, tensor in named.items():
                if name not in outputs:
                    outputs[name] = np.full((count, *tensor.shape[1:]), np.nan, dtype=np.float32)
                outputs[name][positions] = tensor.numpy()
            target_logits = result.logits.gather(1, result.targets[:, :1]).squeeze(1)
            logit[positions] = target_logits.numpy()
            if result.logits.shape[1] == 1:
                prob[positions] = torch.sigmoid(target_logits).numpy()
            else:
                prob[positions] = torch.softmax(result.logits, 1).gather(1, result.targets[:, :1]).squeeze(1).numpy()
        if not outputs:  # every image failed: the arrays still get their (NaN) chunk for this shard
            outputs = {name: np.full((count, *shape), np.nan, dtype=np.float32) for name, shape in self._shapes(run_url).items()}
        index = rows.copy()
        index["orig_height"] = np.where(heights > 0, heights, None)
        index["orig_width"] = np.where(widths > 0, widths, None)
        index["resize_mode"] = self.settings.resize
        index["logit"], index["prob"] = logit, prob
        index["status"] = ["ok" if e is None else "error" for e in errors]
        index["error"] = errors
        index["shard"] = shard.index
        index["run_id"] = run_id
        for column in ("label", "view"):
            index[column] = index[column].astype(object).where(index[column].notna(), None)
        tick = time.perf_counter()
        write_shard(run_url, shard, shard_size, outputs, index)
        write = time.perf_counter() - tick
        total = time.perf_counter() - started
        ok_count = sum(e is None for e in errors)
        return ShardResult(shard.index, count, ok_count, count - ok_count,
                           {"total": total, "explain": compute, "write": write,
                            "decode_wait": max(0.0, total - compute - write)})

    def _shapes(self, run_url: str) -> dict[str, tuple[int, ...]]:
        fs, root = fmt.filesystem(run_url)
        meta = fmt.read_json(fs, fmt.join(root, fmt.RUN_JSON))
        return {name: tuple(shape) for name, shape in meta["arrays"].items()}
