"""What every dataset source provides."""

from __future__ import annotations

import abc
from pathlib import Path

from fm_bio.data.records import DataError, NightRecord


class Source(abc.ABC):
    """A raw dataset on disk: lists subjects, loads one night at a time (never the whole dataset)."""

    name: str = "source"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(
                f"{self.name}: dataset root {self.root} does not exist. Point dataset.root at the "
                f"downloaded dataset (or leave the default to use the generated demo data)."
            )

    @abc.abstractmethod
    def subjects(self) -> list[str]:
        """Subject ids found under the root, sorted."""

    @abc.abstractmethod
    def load(self, subject: str) -> NightRecord:
        """Read one subject's night; raises :class:`DataError` naming the file and the fix."""

    def settings(self) -> dict:
        """Reader settings, other than their defaults, that change what :meth:`load` returns; they are part
        of the cache's config hash, so changing one re-preprocesses instead of reusing a stale cache."""
        return {}

    def normalise_subject_id(self, subject: str | int) -> str:
        """The canonical string form of a subject id (e.g. MESA ``1`` -> ``"0001"``)."""
        return str(subject).strip()

    def check_subject(self, subject: str | int) -> str:
        """Canonical id of ``subject``; an error listing what is there when it is unknown."""
        sid = self.normalise_subject_id(subject)
        available = self.subjects()
        if sid not in available:
            shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
            raise DataError(f"{self.name}: subject {sid!r} not found under {self.root}; available ({len(available)}): {shown}")
        return sid
