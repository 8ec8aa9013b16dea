"""The one exception a bad input file raises, whatever its format."""

from __future__ import annotations


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is what the index's ``error`` column records."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ManifestError(ValueError):
    """A manifest that cannot be used; raised before any work starts."""
