"""DICOM radiographs to the 8-bit image a model input is made from, as a radiologist's viewer shows it.

The grayscale pipeline runs in the standard's order (PS3.3 C.11): the modality LUT (rescale slope and
intercept, or a Modality LUT Sequence), then the VOI transform (a window, or a VOI LUT Sequence), then
MONOCHROME1 inversion *after* the VOI transform, then the VOI output range mapped linearly to 0-255.
Stored pixels are integers of at most 16 bits, so the whole pipeline is evaluated once per possible
stored value (at most 65,536 of them) and applied as one table lookup per pixel.

Every failure is an ``ImageError`` whose reason becomes the image's error row. Torch-free.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from densecam_core.data.errors import ImageError
from densecam_core.geometry import check_work_area

DICOM_WINDOWS = ("first", "lut", "minmax", "percentile")
"""How the VOI transform is chosen: ``first`` the file's first window, else its VOI LUT, else min-max;
``lut`` its VOI LUT, else its first window, else min-max; ``minmax`` the range of the image's values;
``percentile`` the 0.5-99.5 percentile range of the image's values (the file's own VOI ignored)."""
DEFAULT_DICOM_WINDOW = "first"
PERCENTILES = (0.5, 99.5)
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
GREY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR")
_LUT_BITS = 16


def validate_dicom_window(name: str) -> str:
    if name not in DICOM_WINDOWS:
        raise ValueError(f"--dicom-window must be one of {', '.join(DICOM_WINDOWS)}; got {name!r}")
    return name


def has_preamble(head: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    return head[128:132] == b"DICM"


def is_dicom_name(name: str) -> bool:
    return name.lower().endswith(DICOM_EXTENSIONS)


@dataclass(frozen=True)
class Voi:
    """The VOI transform an image was shown with: ``kind`` window, lut, minmax or percentile."""

    kind: str
    center: float | None = None
    width: float | None = None
    function: str = "LINEAR"
    lut_name: str | None = None


def parse_dataset(data: bytes, *, name: str = "", stop_before_pixels: bool = False) -> Any:
    """The pydicom Dataset of a file's bytes; a file that is not DICOM is an ImageError naming why."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    preamble = has_preamble(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns of fixable header quirks; the reasons that matter raise
            ds = pydicom.dcmread(io.BytesIO(data), force=not preamble, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise ImageError(_not_dicom(name)) from None
    except Exception as exc:  # pydicom raises many types for broken headers
        if not preamble:
            raise ImageError(_not_dicom(name)) from None
        raise ImageError(f"corrupt DICOM header: {type(exc).__name__}: {exc}") from None
    if not _has_any(ds, ("SOPClassUID", "PixelData", "Modality", "Rows")):
        if not preamble:
            raise ImageError(_not_dicom(name))
        raise ImageError("truncated or corrupt DICOM file: no data element could be read after its header")
    _ensure_transfer_syntax(ds)
    return ds


def _not_dicom(name: str) -> str:
    suffix = f" despite its {name.rsplit('.', 1)[-1]!r} extension" if "." in name.rsplit("/", 1)[-1] else ""
    return f"not a DICOM file{suffix} (no DICM preamble, no readable DICOM elements)"


def _has_any(ds: Any, keywords: tuple[str, ...]) -> bool:
    try:
        return any(keyword in ds for keyword in keywords)
    except Exception:
        return False


def _ensure_transfer_syntax(ds: Any) -> None:
    """Files without file meta information (no preamble) are read as pydicom found them encoded."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def sop_class_name(ds: Any) -> str:
    uid = ds.get("SOPClassUID")
    if uid is None:
        return "unknown SOP class"
    name = getattr(uid, "name", str(uid))
    return name if name != str(uid) else f"SOP class {uid}"


def check_image(ds: Any, *, max_pixels: int, resize: str | None = None) -> tuple[int, int]:
    """Refuse what cannot be one radiograph, before any pixel is decoded; returns (rows, columns)."""
    if not any(keyword in ds for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError(f"DICOM without pixel data ({sop_class_name(ds)})")
    frames = _int(ds, "NumberOfFrames", 1) or 1
    if frames > 1:
        raise ImageError(
            f"multi-frame DICOM ({frames} frames, {sop_class_name(ds)}): only single-frame images are explained"
        )
    rows, columns = _int(ds, "Rows", None), _int(ds, "Columns", None)
    if rows is None or columns is None:
        raise ImageError("DICOM image without Rows or Columns")
    if rows <= 0 or columns <= 0:
        raise ImageError(f"empty DICOM image ({rows}x{columns} pixels)")
    samples = _int(ds, "SamplesPerPixel", 1) or 1
    too_large = check_work_area(columns, rows, max_pixels, resize)
    if too_large:
        raise ImageError(too_large)
    allocated, stored = _int(ds, "BitsAllocated", None), _int(ds, "BitsStored", None)
    if allocated is None or stored is None or stored < 1:
        raise ImageError(f"DICOM image without valid BitsAllocated/BitsStored ({allocated}/{stored})")
    if stored > allocated:
        raise ImageError(f"DICOM BitsStored {stored} is larger than BitsAllocated {allocated}")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in GREY + COLOUR:
        raise ImageError(f"unsupported DICOM photometric interpretation {photometric or '(none)'!r}")
    if (photometric in (*GREY, "PALETTE COLOR")) != (samples == 1):
        raise ImageError(f"DICOM {photometric} with {samples} samples per pixel")
    _check_decoder(ds)
    return rows, columns


def _int(ds: Any, keyword: str, default: int | None) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ImageError(f"DICOM {keyword} is not a number: {value!r}") from None


def _check_decoder(ds: Any) -> None:
    from pydicom.pixels import get_decoder

    uid = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise ImageError(
            f"unsupported DICOM transfer syntax {_syntax_name(uid)}: pydicom has no decoder for it"
        ) from None
    if not decoder.is_available:
        raise ImageError(
            f"unsupported DICOM transfer syntax {_syntax_name(uid)}: no decoder for it is installed "
            "(densecam's job install brings pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg and pylibjpeg-rle)"
        )


def _syntax_name(uid: Any) -> str:
    name = getattr(uid, "name", "")
    return f"{uid} ({name})" if name and name != str(uid) else str(uid)


def stored_pixels(ds: Any) -> np.ndarray:
    """The stored values (colour already RGB), decoding failures named."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(ds.pixel_array)
    except ImageError:
        raise
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        syntax = _syntax_name(ds.file_meta.TransferSyntaxUID)
        lowered = str(exc).lower()
        if any(word in lowered for word in ("length", "truncat", "less than expected")) or isinstance(exc, EOFError):
            raise ImageError(f"truncated or corrupt DICOM pixel data ({syntax}): {text}") from None
        raise ImageError(f"undecodable DICOM pixel data ({syntax}): {text}") from None


def decode_dicom(
    data: bytes, *, window: str = DEFAULT_DICOM_WINDOW, max_pixels: int, name: str = "", resize: str | None = None
) -> np.ndarray:
    """A DICOM file's bytes -> uint8, (H, W) for grey images, (H, W, 3) for colour ones."""
    ds = parse_dataset(data, name=name)
    check_image(ds, max_pixels=max_pixels, resize=resize)
    return dataset_to_uint8(ds, window=window)[0]


def dataset_to_uint8(ds: Any, *, window: str = DEFAULT_DICOM_WINDOW) -> tuple[np.ndarray, Voi | None]:
    """A checked Dataset -> (uint8 pixels, the VOI transform applied; None for colour images)."""
    validate_dicom_window(window)
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    arr = stored_pixels(ds)
    if photometric in GREY:
        return grey_to_uint8(arr, ds, window=window)
    return colour_to_uint8(arr, ds, photometric), None


def colour_to_uint8(arr: np.ndarray, ds: Any, photometric: str) -> np.ndarray:
    """RGB (pydicom has converted YBR already) or palette colour -> (H, W, 3) uint8."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            rgb = np.asarray(apply_color_lut(arr, ds))
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception as exc:
            raise ImageError(f"DICOM palette colour lookup table is broken: {type(exc).__name__}: {exc}") from None
        rgb = rgb[..., :3]
    else:
        rgb, bits = arr, int(ds.BitsStored)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ImageError(f"DICOM colour image of shape {rgb.shape}, expected (rows, columns, 3)")
    if rgb.dtype == np.uint8 and bits <= 8:
        return np.ascontiguousarray(rgb)
    top = float(2 ** min(bits, 32) - 1)
    return np.clip(np.rint(rgb.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


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
    return values * slope + intercept


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
            "pass --dicom-window minmax or percentile to ignore the file's window"
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
        return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)
    except (TypeError, ValueError, IndexError):
        raise ImageError(f"DICOM {keyword} is not a number: {value!r}") from None


def _float(ds: Any, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ImageError(f"DICOM {keyword} is not a number: {value!r}") from None
