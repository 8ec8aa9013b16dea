"""PasteWorker: a plain class (no Ray) that runs the paste test for one flagged cluster's pairs.

Each pair's recipient goes through the run's model as it is and with the source's region pasted in at the same
place (in model-input pixels, the run's size and resize); the change in the target's logit is the cluster's
evidence. A pair whose image cannot be read is an error row with its reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from densecam_core.analysis.paste import paste
from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW
from densecam_core.data.preprocess import load_or_reason
from densecam_core.model.conventions import imagenet_statistics, pixels_to_input
from densecam_core.store.analyses import write_confirmation_part
from densecam_core.store.layout import Shard
from jobs.runtime.contract import ShardResult
from jobs.runtime.replica import load_replica


@dataclass(frozen=True)
class PasteSettings:
    size: int
    resize: str
    input_norm: str = "imagenet"
    dicom_window: str = DEFAULT_DICOM_WINDOW
    batch_size: int = 16


class PasteWorker:
    """Owns a model replica on one device; measures logit changes for batches of pairs."""

    def __init__(
        self,
        weights: bytes | dict,
        settings: PasteSettings,
        *,
        device: str = "cpu",
        threads: int | None = None,
        expected_fingerprint: str | None = None,
    ) -> None:
        self.model = load_replica(weights, device=device, threads=threads, expected_fingerprint=expected_fingerprint)
        self.settings, self.device = settings, device
        self.statistics = imagenet_statistics(device)
        self.channels = int(cast(Any, self.model).features.conv0.in_channels)

    def logits(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Every output's logit (n, classes) for each uint8 (C, size, size) model input."""
        out = []
        for start in range(0, len(inputs), self.settings.batch_size):
            chunk = [
                np.broadcast_to(x, (3, *x.shape[1:])) if x.shape[0] == 1 else x
                for x in inputs[start : start + self.settings.batch_size]
            ]
            pixels = torch.from_numpy(np.stack(chunk).astype(np.float32) / 255.0).to(self.device)
            with torch.inference_mode():
                logits = self.model(pixels_to_input(pixels, self.channels, self.settings.input_norm, self.statistics))
            out.append(logits.float().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, 1), dtype=np.float32)

    def measure(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """Each pair's logit before and after the paste (NaN and a reason where an image cannot be read)."""
        s = self.settings
        load = {
            p: load_or_reason(p, s.size, s.resize, dicom_window=s.dicom_window)
            for p in {*pairs["source_path"], *pairs["recipient_path"]}
        }
        before, after, usable, errors = [], [], [], {}
        for i, pair in pairs.iterrows():
            source, recipient = load[pair["source_path"]], load[pair["recipient_path"]]
            reason = next((r for r in (source, recipient) if isinstance(r, str)), None)
            if reason is not None:
                errors[i] = reason
                continue
            assert not isinstance(source, str) and not isinstance(recipient, str)
            region = (pair["y0"], pair["y1"], pair["x0"], pair["x1"])
            before.append(recipient.pixels)
            after.append(paste(recipient.pixels, source.pixels, region))
            usable.append(i)
        out = pairs.copy()
        out["logit_before"], out["logit_after"], out["error"] = np.nan, np.nan, None
        if usable:
            classes = (
                out.loc[usable, "target_class"].to_numpy(dtype=np.int64)
                if "target_class" in out
                else np.zeros(len(usable), np.int64)
            )
            picked = np.arange(len(usable))
            out.loc[usable, "logit_before"] = self.logits(before)[picked, classes]
            out.loc[usable, "logit_after"] = self.logits(after)[picked, classes]
        for i, reason in errors.items():
            out.at[i, "error"] = reason
        out["logit_change"] = out["logit_after"] - out["logit_before"]
        return out

    def process_shard(self, audit_url: str, shard: Shard, pairs: pd.DataFrame) -> ShardResult:
        """Measure one flagged cluster's pairs (the shard: its ordinal among the flagged clusters) and commit
        them as its part of the audit's confirmations."""
        started = time.perf_counter()
        table = self.measure(pairs)
        write_confirmation_part(audit_url, shard.index, table)
        errors = int(table["error"].notna().sum())
        seconds = {"total": time.perf_counter() - started}
        return ShardResult(shard.index, len(table), len(table) - errors, errors, seconds, images_decoded=len(table))
