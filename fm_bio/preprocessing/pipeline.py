"""One night from a source -> the cache's per-epoch arrays, its label counts and quality-control counts.

Epoch quality control (each rejected epoch is counted under the FIRST reason that applies, so
``n_epochs + sum(qc) == n_night_epochs``):

``no_signal``        the epoch lies beyond the end of a required signal (labels longer than the recording)
``ecg_nan``          non-finite ECG samples in the epoch
``ecg_flat``         ECG standard deviation below ``ecg_flat_mv`` (electrode off)
``ecg_clipped``      more than ``ecg_clipped_fraction`` of samples at the recording's extreme values
``hr_gap``           heart rate missing for part of the epoch after bounded gap interpolation
``activity_missing`` no activity value (actigraphy EXCLUDED/off-wrist, no motion samples)
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fm_bio.data.labels import count_labels
from fm_bio.data.records import EPOCH_S, IrregularSeries, NightRecord, RegularSignal
from fm_bio.preprocessing import activity as act
from fm_bio.preprocessing import ecg as ecg_ops
from fm_bio.preprocessing import heart_rate as hr_ops

log = logging.getLogger(__name__)

ECG_SFREQ_HZ = 256.0
ECG_SAMPLES_PER_EPOCH = int(ECG_SFREQ_HZ * EPOCH_S)  # 7680
HR_SAMPLES_PER_EPOCH = int(EPOCH_S)  # 1 Hz
QC_REASONS = ("no_signal", "ecg_nan", "ecg_flat", "ecg_clipped", "hr_gap", "activity_missing")


@dataclass
class PreprocessConfig:
    """Every setting that changes the cached arrays (their hash names the cache version).

    Units are in the names. ``hr_source``: ``ecg`` (R-peaks -> beat-to-beat HR), ``channel`` (the
    recording's own HR channel, e.g. MESA's oximeter ``HR``) or ``device`` (wearable HR samples).
    """

    modalities: tuple[str, ...] = ("ecg", "hr", "activity")
    optional_modalities: tuple[str, ...] = ()  # cached when the subject has them, skipped otherwise
    hr_source: str = "ecg"
    rpeak_detector: str = "sleepecg"
    hr_min_bpm: float = 30.0
    hr_max_bpm: float = 200.0
    max_rr_change: float = 0.3
    hr_max_gap_s: float = 10.0
    hr_normalisation: str = "night_scale"
    ecg_bandpass_hz: tuple[float, float] = (0.5, 40.0)
    ecg_scaling: str = "robust"
    ecg_flat_mv: float = 0.005
    ecg_clipped_fraction: float = 0.2
    activity_normalisation: str = "log_p95"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        self.optional_modalities = tuple(self.optional_modalities)
        self.ecg_bandpass_hz = tuple(self.ecg_bandpass_hz)  # type: ignore[assignment]
        if self.hr_source not in ("ecg", "channel", "device"):
            raise ValueError(f"hr_source={self.hr_source!r}; options: ecg, channel, device")
        if self.hr_normalisation not in hr_ops.HR_NORMALISATIONS:
            raise ValueError(f"hr_normalisation={self.hr_normalisation!r}; options: {hr_ops.HR_NORMALISATIONS}")
        if self.rpeak_detector not in ecg_ops.RPEAK_DETECTORS:
            raise ValueError(f"rpeak_detector={self.rpeak_detector!r}; options: {ecg_ops.RPEAK_DETECTORS}")

    def hash(self) -> str:
        """Short stable hash of the settings (part of every manifest entry)."""
        text = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class ProcessedNight:
    """The cache arrays of one night and its manifest entry (without file info)."""

    arrays: dict[str, np.ndarray]
    entry: dict[str, Any]


def _resample(x: np.ndarray, from_hz: float, to_hz: float) -> np.ndarray:
    from fractions import Fraction

    from scipy.signal import resample_poly

    frac = Fraction(to_hz / from_hz).limit_denominator(1000)
    return resample_poly(np.nan_to_num(x), frac.numerator, frac.denominator).astype(np.float32)


def _heart_rate_1hz(record: NightRecord, cfg: PreprocessConfig, n_seconds: int, ecg_raw: np.ndarray | None,
                    stats: dict[str, int]) -> np.ndarray:
    """The night's 1 Hz heart rate (NaN where unknown), from the configured source."""
    if cfg.hr_source == "ecg":
        if ecg_raw is None:
            raise ValueError(f"subject {record.subject}: hr_source=ecg needs the ECG; add 'ecg' to the modalities "
                             f"or set hr_source=channel")
        peaks = ecg_ops.detect_rpeaks(ecg_raw, ECG_SFREQ_HZ, cfg.rpeak_detector)
        t, bpm, n_rej = ecg_ops.beat_heart_rate(peaks, ECG_SFREQ_HZ, cfg.hr_min_bpm, cfg.hr_max_bpm, cfg.max_rr_change)
        stats["beats_detected"] = int(len(peaks))
        stats["rr_intervals_rejected"] = n_rej
        return hr_ops.to_1hz_grid(t, bpm, n_seconds, cfg.hr_max_gap_s)
    if record.hr is None:
        raise ValueError(f"subject {record.subject}: no heart-rate signal was loaded (hr_source={cfg.hr_source})")
    if isinstance(record.hr, RegularSignal):
        hr, n_out = hr_ops.range_check(record.hr.data, cfg.hr_min_bpm, cfg.hr_max_bpm)
        stats["hr_samples_out_of_range"] = n_out
        hr_1hz = hr_ops.regular_to_1hz(hr, record.hr.sfreq_hz, n_seconds)
        return hr_ops.fill_short_gaps(hr_1hz, cfg.hr_max_gap_s)
    assert isinstance(record.hr, IrregularSeries)
    keep = (record.hr.values >= cfg.hr_min_bpm) & (record.hr.values <= cfg.hr_max_bpm)
    stats["hr_samples_out_of_range"] = int((~keep).sum())
    return hr_ops.to_1hz_grid(record.hr.t_s[keep], record.hr.values[keep], n_seconds, cfg.hr_max_gap_s)


def preprocess_night(record: NightRecord, cfg: PreprocessConfig) -> ProcessedNight:
    """Turn one raw night into per-epoch cache arrays with quality control.

    Raises ``ValueError`` when a required modality is absent from the record.
    """
    n = record.n_epochs
    n_seconds = int(n * EPOCH_S)
    reject = np.zeros(n, dtype=np.int8)  # 0 = kept, k = QC_REASONS[k - 1]
    stats: dict[str, int] = {}
    arrays: dict[str, np.ndarray] = {}

    def flag(mask: np.ndarray, reason: str) -> None:
        reject[(reject == 0) & mask] = QC_REASONS.index(reason) + 1

    have = set(record.modalities()) | ({"hr"} if cfg.hr_source == "ecg" and record.ecg is not None else set())
    wants = {m for m in cfg.modalities if m in have or m not in cfg.optional_modalities}
    missing = sorted(wants - have)
    if missing:
        raise ValueError(f"subject {record.subject}: modalities {missing} requested but the record has "
                         f"{record.modalities()}; change dataset.modalities")

    # ---- ECG
    ecg_raw = None
    if record.ecg is not None and ("ecg" in wants or cfg.hr_source == "ecg"):
        ecg_raw = record.ecg.data
        if abs(record.ecg.sfreq_hz - ECG_SFREQ_HZ) > 1e-6:
            stats["ecg_resampled_from_hz"] = int(round(record.ecg.sfreq_hz))
            ecg_raw = _resample(ecg_raw, record.ecg.sfreq_hz, ECG_SFREQ_HZ)
        n_sig = min(n, len(ecg_raw) // ECG_SAMPLES_PER_EPOCH)
        flag(np.arange(n) >= n_sig, "no_signal")
        if "ecg" in wants:
            raw_epochs = np.zeros((n, ECG_SAMPLES_PER_EPOCH), dtype=np.float32)
            raw_epochs[:n_sig] = ecg_raw[: n_sig * ECG_SAMPLES_PER_EPOCH].reshape(n_sig, -1)
            flag(~np.isfinite(raw_epochs).all(axis=1), "ecg_nan")
            flag(np.nanstd(raw_epochs, axis=1) < cfg.ecg_flat_mv, "ecg_flat")
            finite = ecg_raw[np.isfinite(ecg_raw)]
            if finite.size:
                lo, hi = finite.min(), finite.max()
                at_rail = (raw_epochs <= lo) | (raw_epochs >= hi)
                flag(at_rail.mean(axis=1) > cfg.ecg_clipped_fraction, "ecg_clipped")
            filtered = ecg_ops.bandpass(ecg_raw, ECG_SFREQ_HZ, *cfg.ecg_bandpass_hz)
            ecg_epochs = np.zeros_like(raw_epochs)
            ecg_epochs[:n_sig] = filtered[: n_sig * ECG_SAMPLES_PER_EPOCH].reshape(n_sig, -1)
            arrays["ecg"] = ecg_ops.scale_epochs(ecg_epochs, cfg.ecg_scaling)

    # ---- heart rate
    if "hr" in wants:
        hr_1hz = _heart_rate_1hz(record, cfg, n_seconds, ecg_raw, stats)
        hr_1hz, n_out = hr_ops.range_check(hr_1hz, cfg.hr_min_bpm, cfg.hr_max_bpm)
        if n_out:
            stats["hr_1hz_out_of_range"] = n_out
        hr_epochs = hr_1hz.reshape(n, HR_SAMPLES_PER_EPOCH)
        flag(~np.isfinite(hr_epochs).all(axis=1), "hr_gap")
        # Normalise over the epochs that will be kept (statistics of clean data only).
        kept_seconds = np.repeat(reject == 0, HR_SAMPLES_PER_EPOCH)
        hr_for_norm = np.where(kept_seconds, hr_1hz, np.nan)
        arrays["hr_bpm"] = hr_epochs.astype(np.float32)
        arrays["hr"] = hr_ops.normalise_night(hr_for_norm, cfg.hr_normalisation).reshape(n, HR_SAMPLES_PER_EPOCH)

    # ---- activity
    if "activity" in wants:
        counts = np.asarray(record.activity_counts, dtype=np.float32)
        if len(counts) != n:
            raise ValueError(f"subject {record.subject}: {len(counts)} activity epochs for {n} label epochs")
        if not np.isfinite(counts).any():
            if "activity" not in cfg.optional_modalities:
                raise ValueError(f"subject {record.subject}: no epoch has activity ({record.source_files.get('actigraphy', 'activity source')} "
                                 "is all EXCLUDED/missing); drop activity (dataset.modalities without it) or make it "
                                 "optional (dataset.preprocess.optional_modalities=[activity])")
            stats["activity_all_missing"] = n  # optional: the subject is cached without activity
            wants.discard("activity")
    if "activity" in wants:
        flag(~np.isfinite(counts), "activity_missing")
        kept_counts = np.where(reject == 0, counts, np.nan)
        arrays["activity_counts"] = counts.reshape(n, 1)
        arrays["activity"] = act.normalise_activity(kept_counts, cfg.activity_normalisation).reshape(n, 1)

    keep = reject == 0
    if not keep.any():
        reasons = {r: int((reject == i + 1).sum()) for i, r in enumerate(QC_REASONS) if (reject == i + 1).any()}
        raise ValueError(f"subject {record.subject}: all {n} epochs fail quality control {reasons}; check its files "
                         f"{sorted(record.source_files.values())} or the QC settings (dataset.preprocess)")
    epoch_index = np.arange(n, dtype=np.int32)
    out = {name: np.ascontiguousarray(a[keep]) for name, a in arrays.items()}
    out["label"] = record.labels[keep].astype(np.int8)
    out["epoch_index"] = epoch_index[keep]
    out["t_start_s"] = (epoch_index[keep] * EPOCH_S).astype(np.float64)
    if record.steps is not None:
        out["steps"] = np.asarray(record.steps, dtype=np.float32)[keep].reshape(-1, 1)
    for name in ("hr", "activity", "ecg"):
        if name in out and not np.isfinite(out[name]).all():
            raise AssertionError(f"subject {record.subject}: non-finite values left in {name} after QC")

    qc = {reason: int((reject == i + 1).sum()) for i, reason in enumerate(QC_REASONS)}
    entry = {
        "subject": record.subject,
        "dataset": record.dataset,
        "n_epochs": int(keep.sum()),
        "n_night_epochs": n,
        "label_counts": count_labels(record.labels),
        "label_counts_kept": count_labels(out["label"]),
        "qc": qc,
        "unknown_stage_codes": {str(k): v for k, v in record.unknown_stage_codes.items()},
        "issues": dict(sorted(record.issues.items())),
        "signal_stats": dict(sorted(stats.items())),
        "modalities": sorted(m for m in ("ecg", "hr", "activity") if m in out),
        "recording_start": record.recording_start,
        "source_files": record.source_files,
        "config_hash": cfg.hash(),
    }
    return ProcessedNight(arrays=out, entry=entry)
