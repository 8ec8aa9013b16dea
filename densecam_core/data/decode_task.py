"""The decode processes' task: a chunk of files decoded into a shared block (no pickled pixels), importing no torch."""

from __future__ import annotations

from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW
from densecam_core.data.geometry import Geometry
from densecam_core.data.preprocess import ModelInput, load_or_reason
from densecam_core.parallel.shared_block import BlockHandle, attached


def load_chunk(
    paths: list[str],
    size: int,
    mode: str,
    max_pixels: int,
    max_bytes: int | None,
    block: BlockHandle | None = None,
    slots: list[int] | None = None,
    dicom_window: str = DEFAULT_DICOM_WINDOW,
    within: str | None = None,
) -> list[ModelInput | tuple[Geometry, int] | str]:
    """``load_or_reason`` for several images in one task of a decode process: each task costs the
    submitting process (pickling, queues, its result thread) far more GIL time than a decode costs it,
    so a GPU actor hands its processes a few images at a time.

    With ``block``, each image's pixels go into slot ``slots[i]`` of the actor's shared block (array
    ``pixels``, (n, 3, size, size) uint8) and only its geometry and channel count come back: the
    pixels never travel through a pickle. Without it, each model input comes back pickled."""
    if block is None or slots is None:
        return [load_or_reason(path, size, mode, max_pixels, max_bytes, dicom_window, within) for path in paths]
    results: list[ModelInput | tuple[Geometry, int] | str] = []
    with attached(block) as arrays:
        for path, slot in zip(paths, slots):
            loaded = load_or_reason(path, size, mode, max_pixels, max_bytes, dicom_window, within)
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
