"""The image size a compressed DICOM frame's own codestream declares, read from its first bytes.

A decoder allocates what the codestream says (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ), not what the DICOM
header's Rows and Columns say: a 2 KB file whose header says 64x64 can claim 16000x16000 inside and make
the decoder allocate gigabytes. These few-byte parsers let the decoder be refused first. Torch-free.
"""

from __future__ import annotations

import io
import struct

from densecam_core.data.errors import ImageError

_SOF_MARKERS = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7})
"""JPEG frame headers: SOF0-3, 5-7, 9-11, 13-15 (ITU T.81 B.1.1.3) and JPEG-LS SOF55 (ITU T.87)."""
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: markers without a length
_J2K_SOC, _J2K_SIZ = b"\xff\x4f", b"\xff\x51"


def codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) the JPEG, JPEG-LS or JPEG 2000 codestream ``frame`` declares; None when it starts
    like none of them (RLE and uncompressed data have no such header)."""
    if frame[:2] == b"\xff\xd8":
        return _jpeg_size(frame)
    start = frame.find(_J2K_SOC + _J2K_SIZ) if frame[:4] != _J2K_SOC + _J2K_SIZ else 0
    if start >= 0 and (frame[:4] == _J2K_SOC + _J2K_SIZ or frame[4:8] == b"jP  "):
        return _j2k_size(frame, start)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int]:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ImageError("corrupt JPEG codestream: no frame header before the image data")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        (length,) = struct.unpack_from(">H", data, at + 2)
        if marker in _SOF_MARKERS:
            if at + 9 > len(data):
                break
            rows, columns = struct.unpack_from(">HH", data, at + 5)
            return rows, columns
        if marker == 0xDA or length < 2:  # scan data before any frame header
            raise ImageError("corrupt JPEG codestream: no frame header before the image data")
        at += 2 + length
    raise ImageError("truncated JPEG codestream: its frame header is missing")


def _j2k_size(data: bytes, start: int) -> tuple[int, int]:
    # SIZ: marker, Lsiz (2), Rsiz (2), Xsiz, Ysiz, XOsiz, YOsiz (4 each): ITU T.800 A.5.1
    fields = start + 2 + 2 + 2 + 2
    if fields + 16 > len(data):
        raise ImageError("truncated JPEG 2000 codestream: its SIZ header is cut short")
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", data, fields)
    if xosiz > xsiz or yosiz > ysiz:
        raise ImageError("corrupt JPEG 2000 codestream: its image offset lies beyond its size")
    return ysiz - yosiz, xsiz - xosiz


def first_fragment(pixel_data: bytes) -> bytes:
    """The first fragment of encapsulated pixel data (after the basic offset table)."""
    from pydicom.encaps import generate_fragments, parse_basic_offsets

    buffer = io.BytesIO(pixel_data)
    try:
        parse_basic_offsets(buffer)
        return next(generate_fragments(buffer))
    except (StopIteration, ValueError, struct.error) as exc:
        raise ImageError(f"corrupt encapsulated DICOM pixel data ({type(exc).__name__})") from None


def check_codestream(pixel_data: bytes, rows: int, columns: int, max_pixels: int) -> None:
    """Refuse a compressed frame whose codestream declares another size than the header, or more pixels
    than the cap, before the decoder allocates for it."""
    declared = codestream_size(first_fragment(pixel_data))
    if declared is None:
        return
    if declared[0] * declared[1] > max_pixels:
        raise ImageError(
            f"compressed DICOM frame declares {declared[0]}x{declared[1]} pixels, more than max_pixels="
            f"{max_pixels} (decompression bomb guard)"
        )
    if declared != (rows, columns):
        raise ImageError(
            f"compressed DICOM frame declares {declared[0]}x{declared[1]} pixels but the header says "
            f"{rows}x{columns}: corrupt or crafted file"
        )
