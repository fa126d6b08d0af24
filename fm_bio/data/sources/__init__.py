"""Readers of raw datasets in their published layouts. One module per dataset; each source lists
its subjects and loads one night into a :class:`fm_bio.data.records.NightRecord`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fm_bio.data.sources.applewatch import AppleWatchSource
from fm_bio.data.sources.base import Source
from fm_bio.data.sources.mesa import MesaSource

SOURCES: dict[str, type[Source]] = {"mesa": MesaSource, "applewatch": AppleWatchSource}


def make_source(kind: str, root: str | Path, **options: Any) -> Source:
    """Build the source of dataset ``kind`` (``mesa`` or ``applewatch``) over ``root``."""
    try:
        cls = SOURCES[kind]
    except KeyError:
        raise ValueError(f"unknown dataset source {kind!r}; options: {sorted(SOURCES)}") from None
    return cls(root, **options)


__all__ = ["AppleWatchSource", "MesaSource", "SOURCES", "Source", "make_source"]
