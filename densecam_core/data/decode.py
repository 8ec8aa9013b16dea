"""Decoding any radiograph file to 8-bit pixels, and preprocessing it for the model.

Every failure is an ``ImageError`` with a readable reason; the job records it as an error row.
No torch here: the store reader uses ``decode_image`` for overlays.
"""

from __future__ import annotations

import errno
import io
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from densecam_core import fileio
from densecam_core.data.dicom import (
    DEFAULT_DICOM_WINDOW,
    DEFAULT_MAX_BYTES,
    decode_dicom,
    has_preamble,
    is_dicom_name,
)
from densecam_core.data.errors import ImageError
from densecam_core.data.geometry import check_work_area
from densecam_core.data.sources.locations import is_remote, local_path

__all__ = ["DEFAULT_MAX_BYTES", "ImageError", "decode_pixels", "read_image"]

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000: far above any radiograph, far below a decompression bomb
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def read_bytes(path: str, *, max_bytes: int | None = None, within: str | None = None) -> bytes:
    """Read a local path or an fsspec URL, turning OS errors into readable reasons.

    Only regular files are read (a FIFO or device named ``.png`` would block or never end), and
    never more than ``max_bytes`` (default ``DEFAULT_MAX_BYTES``): a huge non-image is refused before
    it is read into memory.
    """
    limit = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    try:
        if is_remote(path):
            data = _read_url(path, limit)
        else:
            data = _read_local(local_path(path), limit, within)
    except FileNotFoundError:
        raise ImageError(f"missing file: {path}") from None
    except PermissionError:
        raise ImageError(f"unreadable (permission denied): {path}") from None
    except IsADirectoryError:
        raise ImageError(f"not a file (a directory): {path}") from None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise ImageError(f"missing file: {path}") from None
        raise ImageError(f"unreadable: {exc}") from None
    if not data:
        raise ImageError(f"empty file (0 bytes): {path}")
    return data


def _too_large(size: int, limit: int, path: str) -> ImageError:
    return ImageError(f"file too large: {size} bytes > max_image_bytes={limit}: {path}")


def _read_local(path: str, limit: int, within: str | None = None) -> bytes:
    try:
        return fileio.read_regular_file(path, max_bytes=limit, within=within)
    except fileio.LinkOutsideError:
        raise ImageError(
            f"a symbolic link leading outside the folder {within}: not read ({os.path.relpath(path, within or '.')})"
        ) from None
    except fileio.NotRegularFileError:
        raise ImageError(f"not a regular file (a FIFO, socket or device): {path}") from None
    except fileio.FileTooLargeError:
        size = os.stat(path).st_size
        raise _too_large(size, limit, path) from None


def _read_url(path: str, limit: int) -> bytes:
    import fsspec

    fs, inner = fsspec.core.url_to_fs(path)
    size = fs.size(inner)
    if size is not None and size > limit:
        raise _too_large(int(size), limit, path)
    with fs.open(inner, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise _too_large(len(data), limit, path)
    return data


def read_image(
    path_or_url: str,
    *,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
) -> np.ndarray:
    """The 8-bit image a model input is made from, before resizing: uint8, (H, W) grey or (H, W, 3) colour.

    Any supported file (PNG, JPEG, TIFF, DICOM; a local path or an fsspec URL). DICOM goes through the
    grayscale pipeline in the standard's order (``densecam_core.data.dicom``), its VOI chosen by
    ``dicom_window`` as in ``densecam explain --dicom-window``. Raises ``ImageError`` with the reason.
    """
    return decode_pixels(path_or_url, max_pixels=max_pixels, max_bytes=max_bytes, dicom_window=dicom_window)


def decode_pixels(
    source: str | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
    resize: str | None = None,
    within: str | None = None,
) -> np.ndarray:
    """Decode a PNG/JPEG/TIFF of any mode, or a DICOM file, to uint8: (H, W) for grey sources, (H, W, 3)
    for colour ones. With ``resize``, the size check counts what that resize mode will allocate (the
    padded square for ``pad``), before any pixel is decoded.

    16-bit and 32-bit grey PNGs are scaled to 8 bits over the range of values they contain
    (a 12-bit radiograph in a 16-bit PNG would otherwise be nearly black, or clipped white).
    Transparent pixels are composited onto black. DICOM is recognised by its content (the DICM
    preamble) or a ``.dcm`` name.
        ``within``: a local folder the file must not leave through a symbolic link (a folder walk's root).
    """
    data = read_bytes(source, max_bytes=max_bytes, within=within) if isinstance(source, str) else source
    if not data:
        raise ImageError("empty file (0 bytes)")
    name = source if isinstance(source, str) else ""
    if has_preamble(data) or is_dicom_name(name):
        cap = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
        return decode_dicom(data, window=dicom_window, max_pixels=max_pixels, name=name, resize=resize, max_bytes=cap)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            too_large = check_work_area(width, height, max_pixels, resize)
            if too_large:
                raise ImageError(too_large)
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large (decompression bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"truncated or corrupt image: {exc}") from None
    return to_pixels(image)


def decode_image(
    source: str | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, dicom_window: str = DEFAULT_DICOM_WINDOW
) -> np.ndarray:
    """Decode any supported file to an (H, W, 3) uint8 array (grey repeated into three channels)."""
    return as_rgb(decode_pixels(source, max_pixels=max_pixels, dicom_window=dicom_window))


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) colour -> (H, W, 3)."""
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels


def to_pixels(image: Image.Image) -> np.ndarray:
    """Any PIL mode to uint8: (H, W) when the image has no colour, else (H, W, 3)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            return np.zeros(values.shape, dtype=np.uint8)
        scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("LA", "RGBA", "PA"):
        rgba = np.asarray(image.convert("RGBA"))
        # composited onto black in integers (round half up): no float copy four times the image's size
        rgb = ((rgba[:, :, :3].astype(np.uint16) * rgba[:, :, 3:4] + 127) // 255).astype(np.uint8)
        return rgb[:, :, 0].copy() if mode == "LA" else rgb
    if mode == "L" or mode == "1":
        return np.asarray(image.convert("L"))
    return np.asarray(image.convert("RGB"))


def is_image_name(name: str) -> bool:
    """Files a folder walk picks up: image extensions, never hidden (``._image1.png``) files."""
    base = os.path.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)
