"""The one 4-class sleep-stage scheme used across datasets, and each dataset's raw-code mapping.

Classes: wake, light (N1+N2), deep (N3+N4), REM. Unscored, movement and unknown codes map to
``MASKED`` (-1): such epochs keep their place in time but never reach a loss or a metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from enum import IntEnum

import numpy as np

MASKED = -1
"""Label value of an epoch that is unscored, movement or of an unknown code."""


class SleepStage(IntEnum):
    """The 4-class target. The integer value is the class index used in the cache and the models."""

    WAKE = 0
    LIGHT = 1
    DEEP = 2
    REM = 3


CLASS_NAMES: tuple[str, ...] = tuple(s.name.lower() for s in SleepStage)
"""Class names in index order: ``("wake", "light", "deep", "rem")``."""

LABEL_COUNT_KEYS: tuple[str, ...] = (*CLASS_NAMES, "unscored")
"""Keys of a subject's ``label_counts`` in the manifest (``unscored`` = every masked epoch)."""

# Raw stage code -> class. Codes not listed are unknown: masked and reported.
SLEEP_ACCEL_CODES: Mapping[int, int] = {
    -1: MASKED,  # unscored
    0: SleepStage.WAKE,
    1: SleepStage.LIGHT,  # N1
    2: SleepStage.LIGHT,  # N2
    3: SleepStage.DEEP,  # N3
    4: SleepStage.DEEP,  # N4 (R&K scoring)
    5: SleepStage.REM,
}
NSRR_CODES: Mapping[int, int] = {
    0: SleepStage.WAKE,
    1: SleepStage.LIGHT,  # Stage 1 sleep
    2: SleepStage.LIGHT,  # Stage 2 sleep
    3: SleepStage.DEEP,  # Stage 3 sleep
    4: SleepStage.DEEP,  # Stage 4 sleep (R&K)
    5: SleepStage.REM,
    6: MASKED,  # movement time
    9: MASKED,  # unscored
}
DATASET_CODES: Mapping[str, Mapping[int, int]] = {"sleep_accel": SLEEP_ACCEL_CODES, "nsrr": NSRR_CODES}


def map_stage_codes(codes: np.ndarray, scheme: str) -> tuple[np.ndarray, dict[int, int]]:
    """Map raw per-epoch stage codes to the 4-class scheme.

    Parameters
    ----------
    codes : integer array of raw codes, one per 30-s epoch (``MASKED`` where nothing was scored).
    scheme : ``"sleep_accel"`` or ``"nsrr"`` (a key of ``DATASET_CODES``).

    Returns
    -------
    labels : int8 array, class index or ``MASKED``.
    unknown : ``{raw code: n epochs}`` for codes the scheme does not know (masked, never guessed).
    """
    try:
        table = DATASET_CODES[scheme]
    except KeyError:
        raise ValueError(f"unknown stage-code scheme {scheme!r}; options: {sorted(DATASET_CODES)}") from None
    codes = np.asarray(codes, dtype=np.int64)
    labels = np.full(codes.shape, MASKED, dtype=np.int8)
    for raw, cls in table.items():
        labels[codes == raw] = cls
    known = np.isin(codes, np.fromiter(table.keys(), dtype=np.int64)) | (codes == MASKED)
    unknown = {int(c): int(n) for c, n in sorted(Counter(codes[~known].tolist()).items())}
    return labels, unknown


def count_labels(labels: np.ndarray) -> dict[str, int]:
    """Count epochs per class name plus ``unscored`` (masked); keys are ``LABEL_COUNT_KEYS``."""
    labels = np.asarray(labels)
    counts = {name: int(np.sum(labels == stage)) for name, stage in zip(CLASS_NAMES, SleepStage, strict=True)}
    counts["unscored"] = int(np.sum(labels == MASKED))
    return counts
