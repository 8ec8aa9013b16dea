"""Where a manifest's images come from. Each kind of source is one module with one class
(``registry.Source``); ``open_source`` finds the one that reads an argument. ``locations`` is the only
place that tells a URL from a path."""

from densecam_core.data.sources.registry import SOURCES, Source, SourceOptions, open_source, register_source

__all__ = ["SOURCES", "Source", "SourceOptions", "open_source", "register_source"]
