"""DICOMweb: a PACS as a source (QIDO-RS, WADO-RS into a pseudonymous cache) and as a destination (STOW-RS)."""

from densecam_core.data.sources.dicomweb.source import DicomwebSource

__all__ = ["DicomwebSource"]
