"""Decompression bombs inside DICOM files: a codestream claiming more pixels than its header, a deflated
dataset inflating past the byte cap, and non-finite header values read as data. Each is an error row
(an ``ImageError`` with a reason), refused before the decoder allocates."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit
from support.dicom_reference import dataset, to_bytes

from densecam_core.data.codestream import codestream_size
from densecam_core.data.decode import read_image
from densecam_core.data.errors import ImageError

CLAIMED = 16000


def _jpeg_claiming(rows: int, columns: int) -> bytes:
    """A real 64x64 baseline JPEG whose SOF0 header is patched to claim ``rows`` x ``columns``."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64), 100, np.uint8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", rows, columns)
    return bytes(data)


def _j2k_claiming(rows: int, columns: int) -> bytes:
    """A real 64x64 JPEG 2000 codestream whose SIZ is patched to claim ``rows`` x ``columns``."""
    import openjpeg

    data = bytearray(openjpeg.encode(np.full((64, 64), 100, np.uint8), codec_format=0))
    siz = data.index(b"\xff\x51")
    data[siz + 6 : siz + 14] = struct.pack(">II", columns, rows)
    return bytes(data)


def _compressed_dicom(frame: bytes, syntax: str) -> bytes:
    ds = dataset(np.zeros((64, 64), np.uint16), bits_stored=8)
    ds.BitsAllocated, ds.HighBit = 8, 7
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_codestream_sizes_against_the_bytes_written():
    # patched to sizes the encoders could have written: the parser reads back what was written
    assert codestream_size(_jpeg_claiming(64, 64)) == (64, 64)
    assert codestream_size(_j2k_claiming(64, 48)) == (64, 48)
    assert codestream_size(b"\x01\x00\x00\x00" + b"\0" * 60) is None  # an RLE header has no size


@pytest.mark.parametrize(("make", "syntax"), [(_jpeg_claiming, JPEGBaseline8Bit), (_j2k_claiming, JPEG2000Lossless)])
def test_codestream_claiming_more_than_the_header_is_an_error_row(tmp_path: Path, make, syntax):
    path = tmp_path / "bomb.dcm"
    path.write_bytes(_compressed_dicom(make(CLAIMED, CLAIMED), syntax))
    assert path.stat().st_size < 4096  # the audit's 2 KB file
    with pytest.raises(ImageError, match=f"declares {CLAIMED}x{CLAIMED}.*decompression bomb"):
        read_image(str(path))


def test_codestream_disagreeing_with_the_header_is_an_error_row(tmp_path: Path):
    path = tmp_path / "liar.dcm"
    path.write_bytes(_compressed_dicom(_jpeg_claiming(64, 80), JPEGBaseline8Bit))
    with pytest.raises(ImageError, match="declares 64x80 pixels but the header says 64x64"):
        read_image(str(path))


def test_honest_compressed_files_still_decode(tmp_path: Path):
    path = tmp_path / "fine.dcm"
    path.write_bytes(_compressed_dicom(_j2k_claiming(64, 64), JPEG2000Lossless))
    assert read_image(str(path)).shape == (64, 64)


def _deflate_bomb(tmp_path: Path, inflated: int) -> Path:
    """A deflated-syntax DICOM whose dataset inflates to ``inflated`` bytes (a 64x64 header; the pixel data
    element as long as the rest), compressed in steps so the test never holds it either."""
    from pydicom.filewriter import write_file_meta_info

    ds = dataset(np.zeros((64, 64), np.uint16))
    del ds.PixelData
    plain = to_bytes(ds)  # explicit VR little endian: the meta group, then the dataset as it inflates
    (group_length,) = struct.unpack_from("<I", plain, 132 + 8)
    body = plain[132 + 12 + group_length :]
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    meta = io.BytesIO()
    meta.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    pixel_length = inflated - len(body) - 12
    pixel_length -= pixel_length % 2
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_length)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [meta.getvalue(), compressor.compress(body + element)]
    zeros = bytes(16 << 20)
    left = pixel_length
    while left:
        step = min(left, len(zeros))
        parts.append(compressor.compress(zeros[:step]))
        left -= step
    parts.append(compressor.flush())
    path = tmp_path / "deflate-bomb.dcm"
    path.write_bytes(b"".join(parts))
    return path


def test_deflate_bomb_is_refused_by_the_byte_cap(tmp_path: Path):
    path = _deflate_bomb(tmp_path, 64 << 20)  # 64 MB inflated: over a 16 MB cap
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageError, match="inflates to more than max_image_bytes=16777216"):
        read_image(str(path), max_bytes=16 << 20)


def test_deflated_file_within_the_cap_decodes(tmp_path: Path):
    ds = dataset(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    path = tmp_path / "deflated.dcm"
    path.write_bytes(to_bytes(ds))
    assert read_image(str(path), dicom_window="minmax").shape == (64, 64)


def _peak_memory_of_read(path: Path) -> tuple[str, int]:
    """Run ``read_image`` in a child process: (its error, how much its peak resident memory grew, bytes)."""
    script = textwrap.dedent(
        f"""
        import resource
        from densecam_core.data.decode import read_image
        from densecam_core.data.errors import ImageError
        import pydicom, pydicom.encaps, openjpeg, numpy, PIL.Image, zlib  # loaded before the baseline
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            read_image({str(path)!r})
            reason = "decoded"
        except ImageError as exc:
            reason = exc.reason
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(reason)
        print((after - before) * 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    reason, grown = out.stdout.strip().splitlines()[-2:]
    return reason, int(grown)


@pytest.mark.slow
def test_bombs_stay_under_200_mb(tmp_path: Path):
    """The audit's reproductions at full size: a 1 GiB deflate bomb and 16000² codestreams, read with the
    default caps; the reading process's peak memory grows by less than 200 MB (it grew 1.3-2.1 GB before)."""
    cases = {
        "deflate": _deflate_bomb(tmp_path, 1 << 30),
        "jpeg": tmp_path / "jpeg.dcm",
        "j2k": tmp_path / "j2k.dcm",
    }
    cases["jpeg"].write_bytes(_compressed_dicom(_jpeg_claiming(CLAIMED, CLAIMED), JPEGBaseline8Bit))
    cases["j2k"].write_bytes(_compressed_dicom(_j2k_claiming(CLAIMED, CLAIMED), JPEG2000Lossless))
    for name, path in cases.items():
        reason, grown = _peak_memory_of_read(path)
        print(f"{name}: {reason!r}, peak memory grew {grown / 1e6:.1f} MB")
        assert "bomb" in reason, (name, reason)
        assert grown < 200e6, (name, grown)


@pytest.mark.parametrize(
    ("element", "value"),
    [("WindowCenter", "NaN"), ("WindowWidth", "inf"), ("RescaleSlope", "1e309"), ("RescaleIntercept", "-inf")],
)
def test_non_finite_header_values_are_error_rows(tmp_path: Path, element: str, value: str):
    extra = {"WindowCenter": "2048", "WindowWidth": "4096"}
    extra[element] = value
    ds = dataset(np.full((8, 8), 1000, np.uint16), **extra)
    path = tmp_path / "nan.dcm"
    path.write_bytes(to_bytes(ds))
    with pytest.raises(ImageError, match=f"DICOM {element} is not a finite number"):
        read_image(str(path))


def test_rescale_overflowing_to_infinity_is_an_error_row(tmp_path: Path):
    ds = dataset(np.full((8, 8), 4000, np.uint16), RescaleSlope="1e308", RescaleIntercept="0")
    path = tmp_path / "overflow.dcm"
    path.write_bytes(to_bytes(ds))
    with pytest.raises(ImageError, match="overflow to non-finite values"):
        read_image(str(path), dicom_window="minmax")
