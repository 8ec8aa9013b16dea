"""ExplainWorker: a plain class (no Ray) that turns one shard of manifest rows into a committed shard.

Ray actors wrap it in ``jobs/explain/job.py``; tests drive it directly.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch

from densecam_core import fileio
from densecam_core.cam.explainer import Explainer, Explanation
from densecam_core.data.loader import PROCESS_TASK_IMAGES, BatchLoader, LoadedBatch
from densecam_core.data.preprocess import ModelInput
from densecam_core.data.rows import SOURCE_ERROR
from densecam_core.model.checkpoint import model_fingerprint
from densecam_core.model.conventions import target_probabilities
from densecam_core.parallel.shared_block import SharedBlock, shared_or_none
from densecam_core.store import layout
from densecam_core.store.index import recorded_extra_types
from densecam_core.store.inputs.cache import InputCache
from densecam_core.store.inputs.identity import SourceIdentity
from densecam_core.store.inputs.lookup import cached_model_inputs
from densecam_core.store.layout import Shard
from densecam_core.store.record import RunRecord
from densecam_core.store.shard import CacheTarget, ShardCommit
from densecam_core.vocabulary import CPU_BATCH, GPU_BATCHES
from jobs.explain.host import HostProcesses
from jobs.explain.outputs import Filled, array_dtype, missing_value, store_arrays
from jobs.explain.settings import NON_FINITE, ExplainSettings
from jobs.runtime.contract import ShardResult
from jobs.runtime.replica import load_replica


class ExplainWorker:
    """Owns one model replica and Explainer on one device and processes whole shards.

    Only per-image input problems (unreadable, empty, too large, undecodable files; non-finite
    outputs for one image) become error rows. Anything else (out of memory, a driver fault, a store
    that cannot be written) raises, so the driver retries the shard instead of committing errors.
    """

    def __init__(
        self,
        weights: bytes | dict,
        settings: ExplainSettings,
        *,
        device: str = "cpu",
        threads: int | None = None,
        expected_fingerprint: str | None = None,
        warm_up: bool = True,
        store_url: str | None = None,
    ) -> None:
        model = load_replica(weights, device=device, threads=threads, expected_fingerprint=expected_fingerprint)
        self.fingerprint = model_fingerprint(model)
        self.explainer = Explainer(
            model,
            methods=settings.methods,
            targets=settings.targets,
            precision=settings.precision,
            input_norm=settings.input_norm,
            cuda_graphs=settings.cuda_graphs and next(model.parameters()).device.type == "cuda",
        )
        self.settings = settings
        self.num_targets = self.explainer.num_targets
        if settings.batch_size is None:
            self.settings = dataclasses.replace(settings, batch_size=self.auto_batch_size())
        self.batch_size: int = int(self.settings.batch_size)  # type: ignore[arg-type]
        self._cache_lock = threading.Lock()
        # file identities for the input cache (a stat or a HEAD each), on threads kept from shard to shard
        self._files = ThreadPoolExecutor(max(1, settings.decode_threads), thread_name_prefix="densecam-stat")
        # shards that run at once (GPU actors) take turns on the device: one thread issues kernels while
        # the others decode and write, instead of three threads contending for the GIL to launch kernels
        self._compute_lock = threading.Lock()
        self.host = HostProcesses(settings.decode_processes)
        self.store_url = store_url
        # a GPU reuses its cuDNN plans only for shapes it has seen: every batch is padded to the full size
        self.fixed_batch = self.explainer.device.type == "cuda"
        self.cache = (
            InputCache(
                store_url, settings.size, settings.resize, settings.dicom_window, identity=settings.cache_identity
            )
            if store_url is not None and settings.input_cache != "off"
            else None
        )
        if warm_up:
            self.warm_up()

    def warm_up(self) -> None:
        """One pass on a blank full batch, so kernel selection (oneDNN primitives, cuDNN plans),
        allocator growth and a CUDA graph's recording happen while the actor starts rather than inside
        the first shard.

        Compute stays on the thread that calls the worker: torch ops issued from a second thread ran
        slower on CPU (a second OpenMP team; docs/PERFORMANCE.md), so shards are not overlapped with threads.
        """
        self.explainer(torch.zeros(self.batch_size, 3, self.settings.size, self.settings.size, dtype=torch.uint8))
        self.host.start()

    def auto_batch_size(self, probe: int = 8) -> int:
        """CPU: ``CPU_BATCH``. CUDA: the largest of ``GPU_BATCHES`` (at most ``max_batch``) whose memory,
        extrapolated from a probe batch's peak, keeps ``concurrency`` batches under 40 % of the device's
        memory (room for fragmentation and neighbours)."""
        device = self.explainer.device
        if device.type != "cuda":
            return min(CPU_BATCH, self.settings.max_batch or CPU_BATCH)
        size = self.settings.size
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        self.explainer.eager(torch.zeros(probe, 3, size, size, dtype=torch.uint8))  # no graph for the probe's shape
        per_image = (
            max(1, torch.cuda.max_memory_allocated(device) - base) / probe
        )  # weights' share included: an overestimate
        budget = 0.4 * torch.cuda.get_device_properties(device).total_memory / max(1, self.settings.concurrency)
        fits = next((b for b in GPU_BATCHES if b * per_image <= budget), probe)
        return min(fits, self.settings.max_batch or fits)

    def process_shard(
        self, run_url: str, run_id: str, shard: Shard, shard_size: int, rows: pd.DataFrame
    ) -> ShardResult:
        """Read inputs (cache or decode, overlapped), explain in batches, write the shard, commit its part."""
        started = time.perf_counter()
        rows = rows.sort_values("row").reset_index(drop=True)
        count = len(rows)
        # rows of images that left the manifest stay NaN with no index row, like a shard's tail
        slots = rows["row"].to_numpy(dtype=np.int64) - shard.row_start
        span = shard.row_stop - shard.row_start
        if count == 0 or not rows["row"].is_unique or slots.min() < 0 or slots.max() >= span:
            raise ValueError(
                f"shard {shard.index} holds rows {shard.row_start}..{shard.row_stop - 1}; got rows "
                f"{rows['row'].tolist()[:8]} (must be unique and inside it)"
            )
        record = self._run_record(run_url)  # read once per shard: the run's arrays and index schema
        recorded = {name: (span, *shape) for name, shape in record.arrays.items()}  # format 1: no targets
        # a writer process reads the maps from shared memory: they are written once and never pickled
        specs = {name: (shape, array_dtype(name)) for name, shape in recorded.items()}
        block = self.host.shared(specs)
        pixels: list[SharedBlock] = []  # the decode processes' block, made once the cache's hits are known
        try:
            outputs = (
                block.arrays if block is not None else {n: np.empty(s, array_dtype(n)) for n, s in recorded.items()}
            )
            for name, values in outputs.items():
                values[...] = missing_value(name)
            filled = self._fill(rows, slots, outputs, pixels)
            tick = time.perf_counter()
            caching = self.cache is not None and self.settings.input_cache == "readwrite"
            s = self.settings
            cache = (
                CacheTarget(self.store_url, s.size, s.resize, s.dicom_window) if caching and self.store_url else None
            )
            commit = ShardCommit(
                run_url,
                shard,
                shard_size,
                self._index(rows, run_id, shard, filled),
                recorded_extra_types(record.index_extra_types),
                cache,
                record.created,
            )
            shared = pixels[0] if pixels else None
            self.host.commit(commit, outputs if block is None else block, filled.decoded, filled.decoded_at, shared)
            write = time.perf_counter() - tick
        finally:
            for shared in ([block] if block is not None else []) + pixels:
                shared.close()
        total = time.perf_counter() - started
        ok_count = sum(e is None for e in filled.errors)
        return ShardResult(
            shard.index,
            count,
            ok_count,
            count - ok_count,
            {
                "total": total,
                "explain": filled.compute,
                "write": write,
                "device_wait": filled.device_wait,  # another shard of this actor held the device
                "decode_wait": max(0.0, total - filled.compute - write - filled.device_wait),
            },
            images_decoded=count - filled.from_cache,
            images_from_cache=filled.from_cache,
            cache_damaged=filled.cache_damaged,
        )

    def _fill(
        self, rows: pd.DataFrame, slots: np.ndarray, outputs: dict[str, np.ndarray], pixels: list[SharedBlock]
    ) -> Filled:
        """Read or decode the shard's images and explain them in batches into ``outputs`` (rows at ``slots``).

        Decode processes write what they decode into a shared block appended to ``pixels`` (the caller
        closes it), which the writer process then reads for the input cache; without room for it in
        shared memory, decoded pixels come back pickled."""
        count = len(rows)
        paths = rows["path"].astype(str).tolist()
        identities, cached, damaged = cached_model_inputs(
            self.cache, paths, threads=self.settings.decode_threads, lock=self._cache_lock, executor=self._files
        )
        size = self.settings.size
        into = (
            shared_or_none({"pixels": ((count, 3, size, size), np.uint8)})
            if self.host.decode is not None and len(cached) < count
            else None
        )
        pixels.extend([into] if into is not None else [])
        filled = Filled(count, targets=self.num_targets, cache_damaged=damaged, identities=identities)
        with self.host.decoders() as decoders:
            loader = BatchLoader(
                paths,
                size=self.settings.size,
                mode=self.settings.resize,
                batch_size=self.batch_size,
                num_threads=self.settings.decode_threads,
                max_bytes=self.settings.max_image_bytes,
                max_pixels=self.settings.max_image_pixels,
                cached=cached,
                executor=decoders,
                into=pixels[0] if pixels else None,
                grey_batches=True,
                chunk=PROCESS_TASK_IMAGES,
                dicom_window=self.settings.dicom_window,
                within=self.settings.source_root,
            )
            for batch in self.host.batches(loader):
                self._take(batch, identities, slots, outputs, filled)
        if SOURCE_ERROR in rows.columns:  # the source could not provide these files: its reason, not "missing"
            for position, reason in enumerate(rows[SOURCE_ERROR].tolist()):
                if isinstance(reason, str) and reason:
                    filled.errors[position] = reason
        return filled

    def _take(
        self,
        batch: LoadedBatch,
        identities: list[SourceIdentity | None],
        slots: np.ndarray,
        outputs: dict[str, np.ndarray],
        filled: Filled,
    ) -> None:
        """One batch: its records' geometry and errors, then its explanation into ``outputs``."""
        for record in batch.records:
            filled.errors[record.position] = record.error
            filled.from_cache += record.from_cache
            if record.geometry is not None:
                filled.heights[record.position] = record.geometry.orig_height
                filled.widths[record.position] = record.geometry.orig_width
            identity = identities[record.position]
            if record.pixels is not None and not record.from_cache and identity is not None:
                filled.decoded.append((identity, ModelInput(record.pixels, record.geometry)))
                filled.decoded_at.append(record.position)
        ok = batch.ok_records
        if not ok or batch.images is None:
            return
        queued = time.perf_counter()
        with self._compute_lock:
            tick = time.perf_counter()
            filled.device_wait += tick - queued
            result = self._explain(batch.images)
            filled.compute += time.perf_counter() - tick
        positions = np.array([r.position for r in ok])
        at = slots[positions]
        named = store_arrays(result)
        finite = np.ones(len(ok), dtype=bool)
        for name, tensor in named.items():
            values = tensor.numpy()
            finite &= np.isfinite(values.reshape(len(ok), -1)).all(axis=1)
            if name in outputs:
                outputs[name][at] = values
        filled.logit[positions] = result.logits.gather(1, result.targets[:, :1]).squeeze(1).numpy()
        filled.probs[positions] = target_probabilities(result.logits, result.targets, self.settings.activation).numpy()
        filled.prob[positions] = filled.probs[positions, 0]
        for position in positions[~finite]:
            filled.errors[position] = NON_FINITE
            filled.logit[position] = filled.prob[position] = np.nan
            filled.probs[position] = np.nan
            for name, values in outputs.items():
                values[slots[position]] = missing_value(name)

    def close(self) -> None:
        """Stop the decode and writer processes (before the actor is killed: no orphans or leaked semaphores)."""
        self.host.close()
        self._files.shutdown(wait=False, cancel_futures=True)

    def _explain(self, images: torch.Tensor) -> Explanation:
        """One Explainer pass, the batch padded to full size on a GPU (cuDNN plans are per shape) and cropped back."""
        count = images.shape[0]
        if self.fixed_batch and count < self.batch_size:
            padding = images.new_zeros((self.batch_size - count, *images.shape[1:]))
            return self.explainer(torch.cat([images, padding])).to("cpu").take(count)
        return self.explainer(images).to("cpu")

    def _index(self, rows: pd.DataFrame, run_id: str, shard: Shard, filled: Filled) -> pd.DataFrame:
        """The shard's index rows; missing values stay NaN or None (the part's writer makes them nulls)."""
        index = rows.drop(columns=[SOURCE_ERROR], errors="ignore")
        index["orig_height"] = np.where(filled.heights > 0, filled.heights, None)
        index["orig_width"] = np.where(filled.widths > 0, filled.widths, None)
        index["resize_mode"] = self.settings.resize
        index["logit"], index["prob"] = filled.logit, filled.prob
        if filled.targets > 1:
            index["probs"] = [None if e is not None else p for e, p in zip(filled.errors, filled.probs.tolist())]
        index["status"] = ["ok" if e is None else "error" for e in filled.errors]
        index["error"] = filled.errors
        if any(identity is not None for identity in filled.identities):  # the input cache took them
            index["source_size"] = [i.size if i is not None else None for i in filled.identities]
            index["source_stamp"] = [i.stamp if i is not None else None for i in filled.identities]
        index["shard"] = shard.index
        index["run_id"] = run_id
        return index

    def _run_record(self, run_url: str) -> RunRecord:
        fs, root = fileio.filesystem(run_url)
        return RunRecord.parse(fileio.read_json(fs, fileio.join(root, layout.RUN_JSON)))
