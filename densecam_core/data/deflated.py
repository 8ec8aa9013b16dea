"""DICOM files in the Deflated Explicit VR Little Endian transfer syntax, inflated within a byte cap.

pydicom inflates the whole dataset in one ``zlib.decompress``: a 1 MB file can inflate to gigabytes before
any check runs. Here the deflated part is first inflated in bounded steps that keep nothing (its size is
counted), refused past the cap, and only then inflated for real, and the file rewritten as plain Explicit VR
Little Endian, which every later step reads as usual. Torch-free.
"""

from __future__ import annotations

import io
import zlib

from densecam_core.data.errors import ImageError

DEFLATED = "1.2.840.10008.1.2.1.99"
_STEP = 1 << 20


def is_deflated(head: bytes) -> bool:
    """The file meta information (in the first bytes of a file) names the deflated transfer syntax."""
    return DEFLATED.encode() in head[:4096]


def inflate_file(data: bytes, *, max_bytes: int) -> bytes:
    """``data`` unchanged unless it is a deflated DICOM file; then the same dataset in Explicit VR Little
    Endian, refused with an ``ImageError`` when it would inflate to more than ``max_bytes``."""
    if not is_deflated(data):
        return data
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian

    stream = io.BytesIO(data)
    try:
        read_preamble(stream, force=True)
        meta = _read_file_meta_info(stream)
    except Exception as exc:  # pydicom raises many types for broken headers
        raise ImageError(f"corrupt DICOM file meta information ({type(exc).__name__})") from None
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
        return data
    body = data[stream.tell() :]
    inflated_size = _inflated_size(body, max_bytes)
    if inflated_size > max_bytes:
        raise ImageError(
            f"deflated DICOM data inflates to more than max_image_bytes={max_bytes} (decompression bomb guard)"
        )
    try:
        inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise ImageError(f"corrupt deflated DICOM data: {exc}") from None
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    from pydicom.filebase import DicomBytesIO

    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    out.write(inflated)
    return out.getvalue()


def _inflated_size(body: bytes, limit: int) -> int:
    """How many bytes ``body`` inflates to, counted in steps of at most 1 MB and never past ``limit`` + 1."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, pending = 0, body
    try:
        while total <= limit:
            chunk = inflater.decompress(pending, _STEP)
            total += len(chunk)
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                break
    except zlib.error as exc:
        raise ImageError(f"corrupt deflated DICOM data: {exc}") from None
    return total
