"""Write small synthetic caches with the real cache writer, independent of the preprocessing code.

Signals carry their identity so tests can check what was gathered: in every modality column 0 is
``epoch_index + 1`` (never 0, so a zero-filled slot is recognisable); ``hr`` column 1 is
``subject number + 1`` (position in the list given to :func:`write_cache`); the other columns are
seeded noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fm_bio.data import cache
from fm_bio.data.labels import MASKED, count_labels

SAMPLES_PER_EPOCH = {"ecg": 7680, "hr": 30, "activity": 1}


@dataclass
class FakeSubject:
    """One synthetic night.

    ``qc_dropped``: epoch indices removed by quality control (not stored); ``masked``: epoch indices
    stored with label -1; ``labels``: optional per-night-epoch labels (else a seeded hypnogram).
    """

    subject: str
    n_night_epochs: int = 120
    qc_dropped: Sequence[int] = ()
    masked: Sequence[int] = ()
    modalities: Sequence[str] = ("ecg", "hr", "activity")
    labels: Sequence[int] | None = None
    extra: dict = field(default_factory=dict)


def _hypnogram(n: int, rng: np.random.Generator) -> np.ndarray:
    """Blocks of 3-15 epochs of random stages, so every class appears in a long enough night."""
    out = np.empty(n, dtype=np.int8)
    i = 0
    while i < n:
        k = int(rng.integers(3, 16))
        out[i : i + k] = rng.integers(0, 4)
        i += k
    if n >= 8:  # make sure every class is present
        out[:4] = [0, 1, 2, 3]
    return out


def write_cache(
    root: str | Path,
    subjects: Sequence[FakeSubject],
    dataset: str = "mesa",
    ecg_samples: int = 7680,
    seed: int = 0,
    config_hash: str = "test",
) -> Path:
    """Write ``subjects`` under ``root`` (arrays + meta.json + manifest.json); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    samples = {**SAMPLES_PER_EPOCH, "ecg": int(ecg_samples)}
    entries = []
    for number, spec in enumerate(subjects):
        n = spec.n_night_epochs
        night_labels = (
            np.asarray(spec.labels, dtype=np.int8) if spec.labels is not None else _hypnogram(n, rng)
        )
        night_labels = night_labels.copy()
        night_labels[np.asarray(spec.masked, dtype=np.int64)] = MASKED
        keep = np.setdiff1d(np.arange(n), np.asarray(spec.qc_dropped, dtype=np.int64))
        m = len(keep)
        arrays: dict[str, np.ndarray] = {
            "label": night_labels[keep].astype(np.int8),
            "epoch_index": keep.astype(np.int32),
            "t_start_s": keep.astype(np.float64) * 30.0,
        }
        for mod in spec.modalities:
            arr = rng.standard_normal((m, samples[mod])).astype(np.float32)
            arr[:, 0] = keep + 1
            if mod == "hr":
                arr[:, 1] = number + 1
            arrays[cache.MODALITY_FILES[mod]] = arr
        if "hr" in spec.modalities:
            arrays["hr_bpm"] = (60 + 10 * rng.standard_normal((m, 30))).astype(np.float32)
        if "activity" in spec.modalities:
            arrays["activity_counts"] = np.abs(arrays["activity"]).astype(np.float32)
        entry = {
            "n_epochs": m,
            "n_night_epochs": n,
            "label_counts": count_labels(night_labels),
            "qc": {"dropped": int(n - m)},
            "config_hash": config_hash,
            "modalities": list(spec.modalities),
            **spec.extra,
        }
        entries.append(cache.write_subject(root, spec.subject, arrays, entry))
    manifest = cache.manifest_from_entries(dataset, config_hash, entries, failed={})
    cache.atomic_write_json(root / cache.MANIFEST_NAME, manifest)
    return root


def make_subjects(ids: Sequence[str], n_night_epochs: int = 120, **kwargs) -> list[FakeSubject]:
    """``FakeSubject`` per id with the same settings."""
    return [FakeSubject(subject=s, n_night_epochs=n_night_epochs, **kwargs) for s in ids]
