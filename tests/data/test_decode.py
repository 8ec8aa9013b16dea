"""Decoding every mode, per-image errors with reasons, and exact geometry back to the original."""

from __future__ import annotations

import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densecam_core import BatchLoader, Geometry, decode_image, preprocess
from densecam_core.data.decode import as_rgb, to_pixels


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16", "I", "CMYK"])
def test_every_mode_decodes_to_rgb8(mode: str):
    base = Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1)), "L")
    image = (
        base.convert(mode) if mode not in ("I;16", "I") else Image.fromarray(np.asarray(base).astype(np.uint16) * 16)
    )
    if mode == "I":
        image = image.convert("I")
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    # Pillow writes no 32-bit PNGs; 16-bit PNGs may open as mode "I", so convert that one in memory
    rgb = as_rgb(to_pixels(image)) if mode == "I" else decode_image(png_bytes(image, fmt))
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    assert rgb[:, -1].mean() > rgb[:, 0].mean() + 100, "gradient must survive"


def test_sixteen_bit_scaled_over_full_range_not_clipped():
    values = np.array([[1000, 2000], [3000, 4095]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    rgb = decode_image(png_bytes(image))
    assert rgb[0, 0, 0] == 0 and rgb[1, 1, 0] == 255
    assert 80 <= rgb[0, 1, 0] <= 90  # (2000-1000)/3095*255 = 82.4


def test_bad_files_give_reasons(tmp_path: Path):
    good = tmp_path / "good.png"
    Image.new("L", (50, 40), 128).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    big = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(big)
    locked = tmp_path / "locked.png"
    locked.write_bytes(data)
    os.chmod(locked, 0)
    expectations = {
        "truncated.png": "truncated or corrupt",
        "empty.png": "empty file",
        "text.png": "not an image",
        "missing.png": "missing file",
        "big.png": "too large",
    }
    paths = [str(good)] + [str(tmp_path / name) for name in expectations]
    if os.geteuid() != 0:  # root reads anything: the permission case only exists for other users
        paths.append(str(locked))
        expectations["locked.png"] = "permission denied"
    batches = list(BatchLoader(paths, size=64, batch_size=len(paths), max_pixels=200 * 200))
    assert len(batches) == 1
    batch = batches[0]
    assert batch.images is not None and batch.images.shape == (1, 3, 64, 64)
    assert batch.records[0].error is None
    for record in batch.records[1:]:
        assert record.error and expectations[Path(record.path).name] in record.error, record


def grey_pngs(folder: Path, count: int, *, height: int, step: int) -> list[str]:
    """``count`` grey PNGs named by position: image i is 40 + i wide and has grey level i * ``step``."""
    paths = []
    for i in range(count):
        Image.new("L", (40 + i, height), i * step).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    return paths


def test_loader_keeps_order_across_batches(tmp_path: Path):
    paths = grey_pngs(tmp_path, 7, height=32, step=30)
    records = [r for b in BatchLoader(paths, size=32, batch_size=3, num_threads=2) for r in b.records]
    assert [r.position for r in records] == list(range(7))
    assert [r.geometry.orig_width for r in records] == [40 + i for i in range(7)]


@pytest.mark.parametrize("mode", ["stretch", "pad"])
@pytest.mark.parametrize("shape", [(60, 100), (100, 60)])
def test_point_and_heatmap_land_on_the_right_original_pixel(mode: str, shape: tuple[int, int]):
    height, width = shape
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    py, px = height // 2 - 1, width // 2 + 2  # off-centre, away from the reflected border copies
    rgb[py, px] = 255
    size = 64
    pre = preprocess(rgb, size, mode)
    channel = pre.array[0]
    iy, ix = np.unravel_index(np.argmax(channel), channel.shape)
    ox, oy = pre.geometry.input_to_original(ix + 0.5, iy + 0.5)
    assert (
        abs(ox - (px + 0.5)) <= pre.geometry.canvas[1] / size and abs(oy - (py + 0.5)) <= pre.geometry.canvas[0] / size
    )
    # a map that is the model input itself, mapped back, peaks on the bright pixel
    back = pre.geometry.to_original(channel)
    assert back.shape == (height, width)
    assert np.unravel_index(np.argmax(back), back.shape) == (py, px)
    # exact inverse
    gx, gy = pre.geometry.original_to_input(*pre.geometry.input_to_original(10.25, 33.5))
    assert np.isclose(gx, 10.25) and np.isclose(gy, 33.5)


def test_pad_mode_crops_padding_and_reflects():
    geometry = Geometry(50, 100, 64, "pad")
    assert geometry.padding == (25, 25, 0, 0) and geometry.canvas == (100, 100)
    rgb = np.zeros((50, 100, 3), dtype=np.uint8)
    rgb[:5] = 200  # a bright top edge is reflected into the padding above it
    pre = preprocess(rgb, 64, "pad")
    assert pre.array[0, 14, 32] > pre.array[0, 0, 32]
    full = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    back = geometry.to_original(full)
    assert back.shape == (50, 100) and back.min() > full[15].min() - 64


def test_reads_are_bounded_fifo_and_huge_files_are_refused_without_reading(tmp_path):
    import os

    from densecam_core.data.decode import ImageError, read_bytes

    fifo = tmp_path / "trap.png"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(ImageError, match="not a regular file"):
        read_bytes(str(fifo))
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:  # sparse: 512 MB that cost no disk
        handle.truncate(512 * 1024 * 1024)
    with pytest.raises(ImageError, match="file too large: 536870912 bytes > max_image_bytes=268435456"):
        read_bytes(str(huge))
    with pytest.raises(ImageError, match="max_image_bytes=10"):
        read_bytes(str(tmp_path / "trap.png").replace("trap", "huge"), max_bytes=10)


def hang_on(suffix: str, monkeypatch, module, name: str) -> threading.Event:
    """``module.name`` hangs on paths ending in ``suffix`` (a read from a dead mount) until the event is set."""
    release = threading.Event()
    real = getattr(module, name)

    def hangs(path, *args):
        if path.endswith(suffix):
            release.wait(30)
        return real(path, *args)

    monkeypatch.setattr(module, name, hangs)
    return release


def test_a_read_past_its_deadline_is_an_error_row_not_a_stalled_batch(tmp_path, monkeypatch):
    from densecam_core.data import loader

    release = hang_on("stuck.png", monkeypatch, loader, "_load")
    paths = []
    for name in ("a.png", "stuck.png", "b.png"):
        Image.new("L", (40, 40), color=90).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    started = time.monotonic()
    batches = list(loader.BatchLoader(paths, size=32, batch_size=3, read_timeout=0.5))
    release.set()
    records = batches[0].records
    assert [r.error is None for r in records] == [True, False, True]
    assert "did not finish within 0.5 s" in records[1].error and time.monotonic() - started < 10


def test_grey_batches_stay_one_channel_only_when_every_image_is_grey(tmp_path: Path):
    paths = []
    for i, mode in enumerate(["L", "L", "L", "RGB"]):
        path = tmp_path / f"{i}.png"
        Image.new(mode, (40, 36), (i * 40, 10, 200) if mode == "RGB" else i * 40).save(path)
        paths.append(str(path))
    grey_kept = [b.images for b in BatchLoader(paths, size=32, batch_size=2, grey_batches=True)]
    assert [tuple(x.shape) for x in grey_kept] == [(2, 1, 32, 32), (2, 3, 32, 32)]
    plain = [b.images for b in BatchLoader(paths, size=32, batch_size=2)]
    assert [tuple(x.shape) for x in plain] == [(2, 3, 32, 32), (2, 3, 32, 32)]
    assert torch.equal(grey_kept[0].expand(-1, 3, -1, -1), plain[0])  # the same pixels, broadcast later
    assert torch.equal(grey_kept[1], plain[1])  # a mixed batch is broadcast on the host as before


class CountingPool(ThreadPoolExecutor):
    """A decode pool that records every task's images, as a GPU actor's process pool would receive them."""

    def __init__(self) -> None:
        super().__init__(4)
        self.tasks: list[list[str]] = []

    def submit(self, fn, /, *args, **kwargs):
        self.tasks.append(list(args[0]))
        return super().submit(fn, *args, **kwargs)


def test_a_decode_pool_gets_runs_of_images_per_task_and_the_batches_are_unchanged(tmp_path: Path):
    from densecam_core.data.preprocess import ModelInput, load_model_input

    paths = grey_pngs(tmp_path, 11, height=36, step=20)
    (tmp_path / "3.png").write_bytes(b"not a png")  # an error inside a task stays that image's error
    cached = {5: ModelInput(np.full((1, 32, 32), 7, np.uint8), Geometry(36, 45, 32))}
    plain = list(BatchLoader(paths, size=32, batch_size=4, cached=cached))
    with CountingPool() as pool:
        chunked = list(BatchLoader(paths, size=32, batch_size=4, cached=cached, executor=pool, chunk=3))
    # runs of at most 3 consecutive images, never across a cached image, every uncached image once
    names = [[Path(p).stem for p in task] for task in pool.tasks]
    assert sorted(int(n) for task in names for n in task) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert all(len(task) <= 3 and "5" not in task for task in names)
    assert all([int(n) for n in task] == list(range(int(task[0]), int(task[0]) + len(task))) for task in names)
    assert len(pool.tasks) < 10
    for ours, theirs in zip(chunked, plain, strict=True):
        assert [(r.position, r.error, r.geometry, r.from_cache) for r in ours.records] == [
            (r.position, r.error, r.geometry, r.from_cache) for r in theirs.records
        ]
        assert torch.equal(ours.images, theirs.images)
    assert chunked[0].records[3].error is not None and chunked[1].records[1].from_cache
    direct = load_model_input(paths[10], 32)
    assert torch.equal(chunked[-1].images[-1], torch.from_numpy(np.broadcast_to(direct.pixels, (3, 32, 32)).copy()))


def test_a_hung_image_in_a_task_of_several_fails_alone(tmp_path: Path, monkeypatch):
    from densecam_core.data import decode_task

    release = hang_on("stuck.png", monkeypatch, decode_task, "load_or_reason")
    names = ["a.png", "stuck.png", "b.png", "c.png", "d.png"]
    for i, name in enumerate(names):
        Image.new("L", (40, 40), color=30 * i).save(tmp_path / name)
    paths = [str(tmp_path / n) for n in names]
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        loader = BatchLoader(paths, size=32, batch_size=5, executor=pool, chunk=4, read_timeout=0.5)
        (batch,) = list(loader)
        records = batch.records
        release.set()
    assert [r.error is None for r in records] == [True, False, True, True, True]
    assert "did not finish within 0.5 s" in records[1].error and time.monotonic() - started < 10
    assert loader.late == 2  # the task of four, then the hung image's own: the worker retires its processes
    for record, name in zip(records, names):
        if record.error is None:  # the images that shared the hung one's task are decoded, not lost
            assert record.pixels.shape == (1, 32, 32) and int(record.pixels.mean()) == 30 * names.index(name)


@pytest.mark.parametrize("shape, mode", [((1, 100_000), "L"), ((2, 40_000), "RGB")], ids=["grey-line", "rgb-strip"])
def test_pad_checks_the_padded_square_before_allocating_it(tmp_path, shape, mode):
    """A 100 KB 100000x1 PNG padded to a square would ask for 1e10 pixels (9.3 GiB): refused from the
    header, with no allocation of the square (tracemalloc sees numpy's allocations)."""
    import tracemalloc

    from densecam_core.data.preprocess import load_or_reason

    path = tmp_path / "strip.png"
    Image.new(mode, shape[::-1]).save(path)
    tracemalloc.start()
    try:
        reason = load_or_reason(str(path), 64, "pad")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    side = max(shape)
    assert isinstance(reason, str) and f"padded to {side}x{side}" in reason and "refused before decoding" in reason
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB allocated to refuse it"
    stretched = load_or_reason(str(path), 64, "stretch")  # the same file stretched needs only H x W: fine
    assert not isinstance(stretched, str)


def test_alpha_and_16_bit_images_decode_without_float_copies():
    """Compositing alpha in integers gives what the float formula gave (round half to even never ties)."""
    from densecam_core.data.decode import to_pixels

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    expected = np.clip(np.rint(rgba[:, :, :3] * (rgba[:, :, 3:4] / 255.0)), 0, 255).astype(np.uint8)
    assert np.array_equal(to_pixels(Image.fromarray(rgba, "RGBA")), expected)
    grey16 = rng.integers(100, 4000, (16, 16)).astype(np.uint16)
    got = to_pixels(Image.fromarray(grey16))
    reference = np.rint((grey16 - grey16.min()) * (255.0 / (grey16.max() - grey16.min())))
    assert np.abs(got.astype(int) - reference).max() <= 1
