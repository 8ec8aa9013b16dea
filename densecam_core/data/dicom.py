"""DICOM radiographs to the 8-bit image a model input is made from, as a radiologist's viewer shows it.

Parsing (a file that is not DICOM is named as such), the checks that refuse what cannot be one
radiograph before any pixel is decoded (no pixel data, multi-frame, 0xN, a decompression bomb, a
transfer syntax without a decoder), decoding, then colour to RGB or grey through ``grayscale`` (the
pipeline of PS3.3 C.11 in the standard's order).

Every failure is an ``ImageError`` whose reason becomes the image's error row. Torch-free.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Any

import numpy as np

from densecam_core.data.codestream import check_codestream
from densecam_core.data.deflated import inflate_file
from densecam_core.data.errors import ImageError
from densecam_core.data.geometry import check_work_area
from densecam_core.data.grayscale import (
    DEFAULT_DICOM_WINDOW,
    DICOM_WINDOWS,
    Voi,
    first_window,
    grey_to_uint8,
    has_voi_lut,
    has_window,
    validate_dicom_window,
)

__all__ = [
    "DEFAULT_DICOM_WINDOW",
    "DICOM_WINDOWS",
    "Voi",
    "decode_dicom",
    "first_window",
    "has_voi_lut",
    "has_window",
    "validate_dicom_window",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # a 16-bit 8000 x 8000 image stored raw is 128 MB
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
GREY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR")


def has_preamble(head: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    return head[128:132] == b"DICM"


def is_dicom_name(name: str) -> bool:
    return name.lower().endswith(DICOM_EXTENSIONS)


def parse_dataset(
    data: bytes, *, name: str = "", stop_before_pixels: bool = False, max_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """The pydicom Dataset of a file's bytes; a file that is not DICOM is an ImageError naming why. A deflated
    file is inflated within ``max_bytes`` first (``data.deflated``)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    preamble = has_preamble(data)
    data = inflate_file(data, max_bytes=max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns of fixable header quirks; the reasons that matter raise
            ds = pydicom.dcmread(io.BytesIO(data), force=not preamble, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise ImageError(_not_dicom(name)) from None
    except Exception as exc:  # pydicom raises many types for broken headers
        if not preamble:
            raise ImageError(_not_dicom(name)) from None
        raise ImageError(f"corrupt DICOM header ({header_fault(exc)})") from None
    if not _has_any(ds, ("SOPClassUID", "PixelData", "Modality", "Rows")):
        if not preamble:
            raise ImageError(_not_dicom(name))
        raise ImageError("truncated or corrupt DICOM file: no data element could be read after its header")
    _ensure_transfer_syntax(ds)
    return ds


_TAG = re.compile(r"\(([0-9A-Fa-f]{4}),\s*([0-9A-Fa-f]{4})\)")


def header_fault(exc: Exception) -> str:
    """What went wrong in a header, without the message pydicom gave: it may quote an element's value
    (a patient's name), and the reason goes into the index."""
    tag = _TAG.search(str(exc))
    return f"{type(exc).__name__} at tag ({tag.group(1)},{tag.group(2)})" if tag else type(exc).__name__


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
    if ds.file_meta.TransferSyntaxUID.is_compressed and isinstance(ds.get("PixelData"), bytes):
        check_codestream(ds.PixelData, rows, columns, max_pixels)
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
    data: bytes,
    *,
    window: str = DEFAULT_DICOM_WINDOW,
    max_pixels: int,
    name: str = "",
    resize: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """A DICOM file's bytes -> uint8, (H, W) for grey images, (H, W, 3) for colour ones."""
    ds = parse_dataset(data, name=name, max_bytes=max_bytes)
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
