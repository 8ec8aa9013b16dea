"""Decoding any radiograph file to 8-bit pixels, and preprocessing it for the model.

Every failure is an ``ImageError`` with a readable reason; the job records it as an error row.
No torch here: the store reader uses ``decode_image`` for overlays.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW, decode_dicom, has_preamble, is_dicom_name
from densecam_core.data.errors import ImageError
from densecam_core.data.geometry import Geometry, check_work_area, validate_resize_mode
from densecam_core.parallel.shared_block import BlockHandle, attached

__all__ = ["ImageError", "decode_pixels", "read_image"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000: far above any radiograph, far below a decompression bomb
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # a 16-bit 8000 x 8000 PNG stored raw is 128 MB
PREPROCESS_VERSION = 1
"""Bump when decoding or resizing changes what a model input holds: input caches of other versions are never used."""
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def read_bytes(path: str, *, max_bytes: int | None = None) -> bytes:
    """Read a local path or an fsspec URL, turning OS errors into readable reasons.

    Only regular files are read (a FIFO or device named ``.png`` would block or never end), and
    never more than ``max_bytes`` (default ``DEFAULT_MAX_BYTES``): a huge non-image is refused before
    it is read into memory.
    """
    limit = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    try:
        if "://" in path and not path.startswith("file://"):
            data = _read_url(path, limit)
        else:
            data = _read_local(path.removeprefix("file://"), limit)
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


def _read_local(path: str, limit: int) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses anything not regular
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"not a regular file (a FIFO, socket or device): {path}")
        if info.st_size > limit:
            raise _too_large(info.st_size, limit, path)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            # read(n) allocates n bytes first: ask for the file's size (+1 to see a file that grew)
            data = handle.read(min(limit, info.st_size) + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise _too_large(len(data), limit, path)
    return data


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
) -> np.ndarray:
    """Decode a PNG/JPEG/TIFF of any mode, or a DICOM file, to uint8: (H, W) for grey sources, (H, W, 3)
    for colour ones. With ``resize``, the size check counts what that resize mode will allocate (the
    padded square for ``pad``), before any pixel is decoded.

    16-bit and 32-bit grey PNGs are scaled to 8 bits over the range of values they contain
    (a 12-bit radiograph in a 16-bit PNG would otherwise be nearly black, or clipped white).
    Transparent pixels are composited onto black. DICOM is recognised by its content (the DICM
    preamble) or a ``.dcm`` name.
    """
    data = read_bytes(source, max_bytes=max_bytes) if isinstance(source, str) else source
    if not data:
        raise ImageError("empty file (0 bytes)")
    name = source if isinstance(source, str) else ""
    if has_preamble(data) or is_dicom_name(name):
        return decode_dicom(data, window=dicom_window, max_pixels=max_pixels, name=name, resize=resize)
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


def to_rgb8(image: Image.Image) -> np.ndarray:
    """Any PIL mode to (H, W, 3) uint8."""
    return as_rgb(to_pixels(image))


@dataclass(frozen=True)
class ModelInput:
    """A resized uint8 model input, (C, size, size) with C = 1 (grey source) or 3, before normalisation.

    Why uint8: it is what the input cache stores and what travels to the device (a quarter of the
    float bytes); ``normalise`` (host) and the Explainer (device) turn it into the network's input.
    """

    pixels: np.ndarray
    geometry: Geometry


@dataclass(frozen=True)
class Preprocessed:
    """A model-ready (3, size, size) float32 array and the geometry that maps back to the original."""

    array: np.ndarray
    geometry: Geometry


def resize_pixels(pixels: np.ndarray, size: int = 320, mode: str = "stretch") -> ModelInput:
    """Resize (H, W) or (H, W, 3) uint8 to ``size`` x ``size`` by ``stretch`` or ``pad`` (reflect), PIL bilinear."""
    validate_resize_mode(mode)
    height, width = pixels.shape[:2]
    geometry = Geometry(height, width, size, mode)
    if mode == "pad":
        top, bottom, left, right = geometry.padding
        pad_mode = "reflect" if min(height, width) > 1 else "edge"
        widths = [(top, bottom), (left, right)] + ([(0, 0)] if pixels.ndim == 3 else [])
        pixels = np.pad(pixels, widths, mode=pad_mode)  # type: ignore[call-overload]
    resized = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
    chw = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    return ModelInput(np.ascontiguousarray(chw), geometry)


def normalise(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8, C in {1, 3} -> (3, H, W) float32, ImageNet-normalised (the host path)."""
    rgb = np.broadcast_to(pixels, (3, *pixels.shape[1:])).astype(np.float32)
    return (rgb / 255.0 - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]


def preprocess(rgb: np.ndarray, size: int = 320, mode: str = "stretch") -> Preprocessed:
    """Resize to ``size`` x ``size`` by ``stretch`` or ``pad`` (reflect), then ImageNet-normalise."""
    model_input = resize_pixels(rgb, size, mode)
    return Preprocessed(np.ascontiguousarray(normalise(model_input.pixels)), model_input.geometry)


def load_model_input(
    path: str,
    size: int = 320,
    mode: str = "stretch",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
) -> ModelInput:
    """decode + resize to a uint8 model input; raises ImageError with the reason."""
    pixels = decode_pixels(path, max_pixels=max_pixels, max_bytes=max_bytes, dicom_window=dicom_window, resize=mode)
    return resize_pixels(pixels, size, mode)


def load_or_reason(
    path: str,
    size: int,
    mode: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
) -> ModelInput | str:
    """``load_model_input``, or the reason the image cannot be used: the per-image boundary, where any
    decoder failure becomes an error row. Torch-free, so decode worker processes start light."""
    try:
        return load_model_input(path, size, mode, max_pixels=max_pixels, max_bytes=max_bytes, dicom_window=dicom_window)
    except ImageError as exc:
        return exc.reason
    except Exception as exc:  # any decoder bug becomes an error row, never a failed shard
        return f"unexpected {type(exc).__name__}: {exc}"


def load_chunk(
    paths: list[str],
    size: int,
    mode: str,
    max_pixels: int,
    max_bytes: int | None,
    block: BlockHandle | None = None,
    slots: list[int] | None = None,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
) -> list[ModelInput | tuple[Geometry, int] | str]:
    """``load_or_reason`` for several images in one task of a decode process: each task costs the
    submitting process (pickling, queues, its result thread) far more GIL time than a decode costs it,
    so a GPU actor hands its processes a few images at a time.

    With ``block``, each image's pixels go into slot ``slots[i]`` of the actor's shared block (array
    ``pixels``, (n, 3, size, size) uint8) and only its geometry and channel count come back: the
    pixels never travel through a pickle. Without it, each model input comes back pickled."""
    if block is None or slots is None:
        return [load_or_reason(path, size, mode, max_pixels, max_bytes, dicom_window) for path in paths]
    results: list[ModelInput | tuple[Geometry, int] | str] = []
    with attached(block) as arrays:
        for path, slot in zip(paths, slots):
            loaded = load_or_reason(path, size, mode, max_pixels, max_bytes, dicom_window)
            if isinstance(loaded, str):
                results.append(loaded)
                continue
            channels = loaded.pixels.shape[0]
            arrays["pixels"][slot, :channels] = loaded.pixels
            results.append((loaded.geometry, channels))
    return results


def ready(_: object = None) -> bool:
    """A no-op a decode process runs once at start, so it has imported this module before the first shard."""
    return True


def load_for_model(
    path: str,
    size: int = 320,
    mode: str = "stretch",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
) -> Preprocessed:
    """decode + preprocess; raises ImageError with the reason."""
    pixels = decode_pixels(path, max_pixels=max_pixels, dicom_window=dicom_window, resize=mode)
    return preprocess(pixels, size, mode)


def is_image_name(name: str) -> bool:
    """Files a folder walk picks up: image extensions, never hidden (``._image1.png``) files."""
    base = os.path.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)
