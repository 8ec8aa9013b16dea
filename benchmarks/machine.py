"""Which kind of CPU a benchmark ran on, in words (figures are only comparable within one kind)."""

from __future__ import annotations

import os
import platform

_KERNEL_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe_cpu() -> str:
    """E.g. "2-core AMD EPYC with AVX2 only (no AVX-512)", "2-core Xeon with AVX512-BF16/AMX"."""
    flags = cpu_flags()
    model = cpu_model()
    vendor = (
        "AMD EPYC" if "EPYC" in model or "AMD" in model else "Xeon" if "Xeon" in model or "Intel" in model else model
    )
    if "amx_tile" in flags:
        kind = "with AVX512-BF16/AMX"
    elif "avx512_bf16" in flags:
        kind = "with AVX-512 and AVX512-BF16 (no AMX)"
    elif "avx512f" in flags:
        kind = "with AVX-512 (no BF16/AMX: bf16 emulated)"
    elif "avx2" in flags:
        kind = "with AVX2 only (no AVX-512)"
    else:
        kind = "without AVX2"
    return f"{os.cpu_count()}-core {vendor} {kind}{_kernel_limit()}"


def _kernel_limit() -> str:
    """Torch's, oneDNN's and MKL's kernels can be held to a smaller instruction set than the CPU has
    (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``): the numerics of an
    AVX2-only CPU, not its speed; a figure taken so must say it."""
    limits = [f"{name}={os.environ[name]}" for name in _KERNEL_LIMITS if os.environ.get(name)]
    return f", kernels held by {' '.join(limits)}" if limits else ""


if __name__ == "__main__":
    print(describe_cpu())
