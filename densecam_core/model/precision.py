"""Which reduced precisions a device runs natively, so a slow choice is flagged instead of silently costing.

bf16 on a CPU without AVX512-BF16 or AMX is emulated by oneDNN and runs several times slower than fp32
(figures per CPU kind in docs/PERFORMANCE.md); on CUDA, bf16 needs compute capability 8.0 (Ampere) or newer.
"""

from __future__ import annotations

import warnings

import torch


def reduced_dtype(precision: str) -> torch.dtype | None:
    """The torch dtype of a reduced precision ('bf16', 'fp16'); None for 'fp32'."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


class SlowPrecisionWarning(UserWarning):
    """The requested precision is emulated on this device and will be slower than fp32."""


def native_bf16(device: torch.device | str) -> bool:
    """True when ``device`` computes bf16 in hardware (CPU: AVX512-BF16 or AMX; CUDA: sm80+)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    return True  # other backends: no reliable probe, assume the user knows


def warn_if_emulated(precision: str, device: torch.device | str) -> None:
    """Warn once per call site when ``precision`` is bf16 on a device that only emulates it."""
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(
            f"bf16 on {torch.device(device)} is emulated (no AVX512-BF16/AMX on this CPU, or a CUDA GPU "
            "older than Ampere): expect it to run several times slower than fp32; use precision='fp32' here",
            SlowPrecisionWarning,
            stacklevel=3,
        )
