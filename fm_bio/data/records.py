"""Small containers that carry one night from a dataset source into preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EPOCH_S = 30.0
"""Length of one scoring epoch in seconds (AASM / R&K)."""


class DataError(ValueError):
    """A raw input file is missing, corrupt or inconsistent. The message names the file, the problem
    and the fix."""


@dataclass
class RegularSignal:
    """A uniformly sampled signal starting at the recording start (t = 0)."""

    data: np.ndarray
    sfreq_hz: float

    @property
    def duration_s(self) -> float:
        return len(self.data) / self.sfreq_hz


@dataclass
class IrregularSeries:
    """Samples at irregular times (seconds from the recording start), e.g. wearable heart rate."""

    t_s: np.ndarray
    values: np.ndarray


@dataclass
class NightRecord:
    """One subject's night as read from the raw files, before any preprocessing.

    ``stage_codes`` holds the dataset's raw code per 30-s epoch (``labels.MASKED`` where no stage
    event covers it); ``labels`` the 4-class mapping of it. Signals are optional: a source fills the
    modalities the subject has.
    """

    subject: str
    dataset: str
    stage_codes: np.ndarray
    labels: np.ndarray
    unknown_stage_codes: dict[int, int] = field(default_factory=dict)
    ecg: RegularSignal | None = None
    hr: RegularSignal | IrregularSeries | None = None
    activity_counts: np.ndarray | None = None  # one value per epoch, NaN where missing
    steps: np.ndarray | None = None  # one value per epoch, NaN where missing
    recording_start: str | None = None  # clock time "HH:MM:SS" when known
    source_files: dict[str, str] = field(default_factory=dict)
    issues: dict[str, int] = field(default_factory=dict)  # counted anomalies of the raw files

    @property
    def n_epochs(self) -> int:
        """Number of 30-s epochs in the night (scored or not)."""
        return int(len(self.labels))

    def modalities(self) -> list[str]:
        """Names of the signals this night carries."""
        out = []
        if self.ecg is not None:
            out.append("ecg")
        if self.hr is not None:
            out.append("hr")
        if self.activity_counts is not None:
            out.append("activity")
        return out


def rel(path: Path | str) -> str:
    """Path as a string for messages and manifests."""
    return str(path)
