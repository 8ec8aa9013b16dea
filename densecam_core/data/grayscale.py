"""The DICOM grayscale pipeline over stored values (PS3.3 C.11), as lookup tables.

The modality LUT (rescale slope and intercept, or a Modality LUT Sequence), then the VOI transform (a
window, or a VOI LUT Sequence), then MONOCHROME1 inversion *after* the VOI transform, then the VOI
output range mapped linearly to 0-255. Stored pixels are integers of at most 16 bits, so the whole
pipeline is evaluated once per possible stored value (at most 65,536 of them) and applied as one table
lookup per pixel (docs/PERFORMANCE.md). Torch-free.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from densecam_core.data.errors import ImageError
from densecam_core.vocabulary import DEFAULT_DICOM_WINDOW, DICOM_WINDOWS

PERCENTILES = (0.5, 99.5)
_LUT_BITS = 16


def validate_dicom_window(name: str) -> str:
    if name not in DICOM_WINDOWS:
        raise ValueError(f"`dicom_window` must be one of {', '.join(DICOM_WINDOWS)}; got {name!r}")
    return name


@dataclass(frozen=True)
class Voi:
    """The VOI transform an image was shown with: ``kind`` window, lut, minmax or percentile."""

    kind: str
    center: float | None = None
    width: float | None = None
    function: str = "LINEAR"
    lut_name: str | None = None


def grey_to_uint8(arr: np.ndarray, ds: Any, *, window: str = DEFAULT_DICOM_WINDOW) -> tuple[np.ndarray, Voi]:
    """Stored grey values -> modality LUT -> VOI -> MONOCHROME1 inversion -> uint8, and the VOI used.

    Integer pixels of at most 16 bits: the pipeline is evaluated over every possible stored value and
    applied as a lookup table. Other pixels (32-bit, float) are transformed directly."""
    bits = int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    invert = str(ds.PhotometricInterpretation).strip().upper() == "MONOCHROME1"
    if arr.dtype.kind in "iu" and bits <= 16:
        low = -(1 << (bits - 1)) if signed else 0
        domain = np.arange(low, low + (1 << bits), dtype=np.float64)
        index = arr.astype(np.int32) - low if low else arr
        counts = None
        if _needs_histogram(ds, window):
            counts = np.bincount(np.clip(index, 0, domain.size - 1).ravel(), minlength=domain.size)
        unit, voi = voi_unit(modality(domain, ds), ds, window, counts)
        lut = _to_uint8(1.0 - unit if invert else unit)
        return np.take(lut, index, mode="clip"), voi
    values = modality(arr.astype(np.float64), ds)
    unit, voi = voi_unit(values, ds, window, None)
    return _to_uint8(1.0 - unit if invert else unit), voi


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def _needs_histogram(ds: Any, window: str) -> bool:
    """The image's own statistics are needed: asked for, or the file has no VOI of its own."""
    return window in ("minmax", "percentile") or not (has_window(ds) or has_voi_lut(ds))


def modality(values: np.ndarray, ds: Any) -> np.ndarray:
    """PS3.3 C.11.1: the Modality LUT Sequence if present, else rescale slope and intercept (1 and 0)."""
    if ds.get("ModalityLUTSequence"):
        table, first, _ = lut_table(ds.ModalityLUTSequence[0], ds, "Modality LUT")
        return table[np.clip(np.rint(values - first), 0, table.size - 1).astype(np.int64)]
    slope = _float(ds, "RescaleSlope", 1.0)
    intercept = _float(ds, "RescaleIntercept", 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        rescaled = values * slope + intercept
    if not np.isfinite(rescaled).all():
        raise ImageError(
            f"DICOM RescaleSlope {slope:g} and RescaleIntercept {intercept:g} overflow to non-finite values: corrupt header"
        )
    return rescaled


def voi_unit(values: np.ndarray, ds: Any, window: str, counts: np.ndarray | None) -> tuple[np.ndarray, Voi]:
    """PS3.3 C.11.2: the chosen VOI transform of modality values, as fractions of its output range.

    ``counts``: how many pixels hold each of ``values`` (the lookup-table path); None when ``values``
    are the image's own pixels."""
    order = {"first": ("window", "lut"), "lut": ("lut", "window")}.get(window, ())
    for kind in order:
        if kind == "window" and has_window(ds):
            return apply_window(values, ds)
        if kind == "lut" and has_voi_lut(ds):
            return apply_voi_lut(values, ds)
    kind = "percentile" if window == "percentile" else "minmax"
    low, high = _value_range(values, counts, PERCENTILES if kind == "percentile" else (0.0, 100.0))
    if high <= low:
        return np.zeros_like(values), Voi(kind, center=low, width=0.0)
    unit = np.clip((values - low) / (high - low), 0.0, 1.0)
    return unit, Voi(kind, center=(low + high) / 2, width=high - low)


def _value_range(
    values: np.ndarray, counts: np.ndarray | None, percentiles: tuple[float, float]
) -> tuple[float, float]:
    if counts is None:
        if percentiles == (0.0, 100.0):
            return float(values.min()), float(values.max())
        low, high = np.percentile(values, percentiles)
        return float(low), float(high)
    present = counts > 0
    if percentiles == (0.0, 100.0):
        return float(values[present].min()), float(values[present].max())
    order = np.argsort(values[present], kind="stable")
    sorted_values, weights = values[present][order], counts[present][order]
    cumulative = np.cumsum(weights) / weights.sum()
    last = sorted_values.size - 1
    low = sorted_values[min(int(np.searchsorted(cumulative, percentiles[0] / 100.0)), last)]
    high = sorted_values[min(int(np.searchsorted(cumulative, percentiles[1] / 100.0)), last)]
    return float(low), float(high)


def has_window(ds: Any) -> bool:
    return ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, "")


def has_voi_lut(ds: Any) -> bool:
    return bool(ds.get("VOILUTSequence"))


def first_window(ds: Any) -> tuple[float, float, str]:
    """(center, width, function) of the file's first window; a width the function cannot use is refused."""
    center = _first_number(ds.WindowCenter, "WindowCenter")
    width = _first_number(ds.WindowWidth, "WindowWidth")
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise ImageError(f"unsupported DICOM VOI LUT Function {function!r}")
    if width <= 0 or (function == "LINEAR" and width < 1):
        raise ImageError(
            f"DICOM window width {width:g} is not usable ({function} needs {'>= 1' if function == 'LINEAR' else '> 0'}); "
            "pass `dicom_window` minmax or percentile to ignore the file's window"
        )
    return center, width, function


def apply_window(values: np.ndarray, ds: Any) -> tuple[np.ndarray, Voi]:
    """The first window, PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT) and C.11.2.1.3.1 (SIGMOID), to [0, 1]."""
    center, width, function = first_window(ds)
    if function == "SIGMOID":
        unit = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        unit = np.clip((values - center) / width + 0.5, 0.0, 1.0)
    elif width == 1:  # LINEAR at width 1: a threshold at center - 0.5
        unit = (values > center - 0.5).astype(np.float64)
    else:
        unit = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    return unit, Voi("window", center=center, width=width, function=function)


def apply_voi_lut(values: np.ndarray, ds: Any) -> tuple[np.ndarray, Voi]:
    """The first VOI LUT of the VOI LUT Sequence, its output range [0, 2^bits - 1] to [0, 1]."""
    item = ds.VOILUTSequence[0]
    table, first, bits = lut_table(item, ds, "VOI LUT")
    index = np.clip(np.rint(values - first), 0, table.size - 1).astype(np.int64)
    top = float(max(2**bits - 1, table.max()))
    name = str(item.get("LUTExplanation", "") or "").strip() or "VOI LUT"
    return table[index] / top, Voi("lut", lut_name=name)


def lut_table(item: Any, ds: Any, what: str) -> tuple[np.ndarray, int, int]:
    """(entries as float64, first value mapped, bits per entry) of a LUT item (PS3.3 C.11.1.1)."""
    try:
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        entries = entries or 65536
        element = item["LUTData"]
        raw = element.value
        if isinstance(raw, (bytes, bytearray)):
            little = ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2"
            data = np.array(struct.unpack_from(f"{'<' if little else '>'}{entries}H", raw), dtype=np.float64)
        else:
            data = np.asarray(raw if isinstance(raw, (list, tuple)) else [raw], dtype=np.float64)
    except Exception as exc:
        raise ImageError(f"DICOM {what} is broken: {type(exc).__name__}: {exc}") from None
    if data.size < entries:
        raise ImageError(f"DICOM {what} holds {data.size} entries, its descriptor says {entries}")
    if not 1 <= bits <= _LUT_BITS:
        raise ImageError(f"DICOM {what} of {bits} bits per entry")
    if first > 32767:  # the descriptor's second value is US or SS: a large US is a negative SS
        first -= 65536
    return data[:entries], first, bits


def _first_number(value: Any, keyword: str) -> float:
    from pydicom.multival import MultiValue

    try:
        number = float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)
    except (TypeError, ValueError, IndexError):
        raise ImageError(f"DICOM {keyword} is not a number: {value!r}") from None
    return _finite(number, keyword)


def _float(ds: Any, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ImageError(f"DICOM {keyword} is not a number: {value!r}") from None
    return _finite(number, keyword)


def _finite(number: float, keyword: str) -> float:
    """A NaN or infinite window or rescale value would turn every pixel black or white and be explained as
    data: it is a corrupt header, named."""
    if not math.isfinite(number):
        raise ImageError(f"DICOM {keyword} is not a finite number ({number!r}): corrupt header")
    return number
