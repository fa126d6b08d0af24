"""Signal processing pieces and the per-night pipeline's quality-control accounting."""

from __future__ import annotations

import numpy as np
import pytest

from fm_bio.data.records import IrregularSeries, NightRecord, RegularSignal
from fm_bio.data.sources import MesaSource
from fm_bio.preprocessing import ecg as ecg_ops
from fm_bio.preprocessing import heart_rate as hr_ops
from fm_bio.preprocessing.activity import normalise_activity
from fm_bio.preprocessing.pipeline import QC_REASONS, PreprocessConfig, preprocess_night
from tests.factories import synthetic_ecg


@pytest.mark.parametrize("detector", ["sleepecg", "neurokit"])
def test_rpeak_detection_recovers_heart_rate(detector):
    ecg, beats = synthetic_ecg(300.0, 62.0, seed=3)
    peaks = ecg_ops.detect_rpeaks(ecg, 256.0, detector)
    assert abs(len(peaks) - len(beats)) <= 2
    t, hr, _ = ecg_ops.beat_heart_rate(peaks, 256.0, 30, 200)
    assert abs(np.median(hr) - 62.0) < 2.0


def test_beat_heart_rate_drops_missed_beats_and_out_of_range():
    peaks = (np.arange(0, 60, 1.0) * 256).astype(int)  # 60 bpm
    peaks = np.delete(peaks, 30)  # a missed beat -> one 2-s interval (30 bpm, and a 100% jump)
    t, hr, n_rej = ecg_ops.beat_heart_rate(peaks, 256.0, 40, 200)
    assert n_rej == 1 and np.allclose(hr, 60.0)


def test_bounded_gap_interpolation():
    t = np.array([0.0, 5, 10, 15, 100, 105, 110])
    v = np.array([60.0, 62, 64, 66, 70, 70, 70])
    hr = hr_ops.to_1hz_grid(t, v, 120, max_gap_s=10)
    assert np.isfinite(hr[:15]).all()  # 0.5 .. 14.5 bridged
    assert np.isnan(hr[20:95]).all()  # the 85-s gap is not bridged
    assert np.isfinite(hr[100:110]).all()
    assert np.isnan(hr[116:]).all()  # beyond the last sample by more than max_gap_s / 2
    assert hr[2] == pytest.approx(61.0)  # t = 2.5 -> linear


def test_fill_short_gaps_only():
    x = np.array([1, np.nan, np.nan, 4, np.nan, np.nan, np.nan, np.nan, 9], dtype=np.float32)
    y = hr_ops.fill_short_gaps(x, 2)
    assert y[1] == pytest.approx(2) and y[2] == pytest.approx(3) and np.isnan(y[4:8]).all()


def test_range_check_counts():
    y, n = hr_ops.range_check(np.array([20.0, 60, 250, np.nan]), 30, 200)
    assert n == 2 and np.isnan(y[[0, 2, 3]]).all() and y[1] == 60


@pytest.mark.parametrize("method", hr_ops.HR_NORMALISATIONS)
def test_normalisations(method):
    rng = np.random.default_rng(0)
    hr = 60 + 5 * np.sin(np.arange(3600) / 300) + rng.standard_normal(3600)
    hr[100:110] = np.nan
    out = hr_ops.normalise_night(hr, method)
    assert np.isnan(out[100:110]).all() and np.isfinite(np.delete(out, range(100, 110))).all()
    valid = np.isfinite(out)
    if method == "night_scale":
        assert abs(out[valid].mean()) < 1e-6
        assert np.percentile(np.abs(out[valid]), 90) == pytest.approx(1.0, rel=1e-3)
    elif method == "zscore":
        assert out[valid].std() == pytest.approx(1.0, rel=1e-3)
    elif method == "none":
        assert np.allclose(out[valid], hr[valid])


def test_activity_normalisation():
    out = normalise_activity(np.array([0, 1, 10, 100, np.nan, 1000]))
    assert np.isnan(out[4]) and out[0] == 0 and np.all(np.diff(out[[0, 1, 2, 3, 5]]) > 0)


def test_ecg_scaling_robust_and_flat():
    x = np.vstack([np.random.default_rng(0).standard_normal(7680) * 3 + 5, np.zeros(7680)]).astype(np.float32)
    y = ecg_ops.scale_epochs(x, "robust")
    assert abs(np.median(y[0])) < 1e-3 and 0.9 < np.subtract(*np.percentile(y[0], [75, 25])) / 1.349 < 1.1
    assert np.all(y[1] == 0)


def _record(n: int = 10, hr_values=None, ecg=None, activity=None) -> NightRecord:
    labels = np.array([0, 1, 1, 2, 2, 3, 3, -1, 0, 1][:n], dtype=np.int8)
    t = np.arange(-20, n * 30 + 20, 5.0)
    hr = IrregularSeries(t, np.full(len(t), 60.0, dtype=np.float32) if hr_values is None else hr_values)
    return NightRecord(subject="x", dataset="test", stage_codes=labels.astype(int), labels=labels, hr=hr, ecg=ecg,
                       activity_counts=activity)


def test_qc_accounts_for_every_epoch_and_first_reason_wins():
    n = 10
    t = np.arange(-20, n * 30 + 20, 5.0)
    hr = np.full(len(t), 60.0, dtype=np.float32)
    hr[(t > 60) & (t < 130)] = 300  # out of range -> a 70-s gap in epochs 2-4
    activity = np.arange(n, dtype=np.float32)
    activity[[3, 8]] = np.nan
    rec = _record(n, hr_values=hr, activity=activity)
    cfg = PreprocessConfig(modalities=("hr", "activity"), hr_source="device", hr_max_gap_s=30)
    night = preprocess_night(rec, cfg)
    qc = night.entry["qc"]
    assert set(qc) == set(QC_REASONS)
    assert qc["hr_gap"] == 3 and qc["activity_missing"] == 1  # epoch 3 counted once, under hr_gap
    assert night.entry["n_epochs"] + sum(qc.values()) == n
    assert night.arrays["epoch_index"].tolist() == [0, 1, 5, 6, 7, 9]
    assert night.arrays["hr"].shape == (6, 30) and night.arrays["activity"].shape == (6, 1)
    assert night.entry["label_counts"]["unscored"] == 1  # counted before QC
    assert np.isfinite(night.arrays["hr"]).all()


def test_ecg_qc_flat_nan_and_labels_longer_than_signal():
    n = 10
    ecg, _ = synthetic_ecg(8 * 30, 60)  # 8 epochs of signal for 10 label epochs
    ecg = ecg.astype(np.float32)
    ecg[7680 * 2: 7680 * 3] = 0.0  # flat epoch 2
    ecg[7680 * 4 + 5] = np.nan  # NaN in epoch 4
    rec = _record(n, ecg=RegularSignal(ecg, 256.0))
    night = preprocess_night(rec, PreprocessConfig(modalities=("ecg", "hr"), hr_max_gap_s=10))
    qc = night.entry["qc"]
    assert qc["no_signal"] == 2 and qc["ecg_flat"] == 1 and qc["ecg_nan"] == 1
    assert night.entry["n_epochs"] + sum(qc.values()) == n
    assert night.arrays["ecg"].shape[1] == 7680 and np.isfinite(night.arrays["ecg"]).all()


def test_ecg_resampled_when_rate_differs():
    ecg, _ = synthetic_ecg(120, 60, sfreq_hz=512)
    rec = _record(4, ecg=RegularSignal(ecg.astype(np.float32), 512.0))
    night = preprocess_night(rec, PreprocessConfig(modalities=("ecg", "hr")))
    assert night.entry["signal_stats"]["ecg_resampled_from_hz"] == 512
    assert night.arrays["ecg"].shape == (night.entry["n_epochs"], 7680)
    assert abs(np.median(night.arrays["hr_bpm"]) - 60) < 3


def test_missing_required_modality_is_an_error():
    rec = _record(4)
    with pytest.raises(ValueError, match=r"modalities \['activity'\] requested"):
        preprocess_night(rec, PreprocessConfig(modalities=("hr", "activity"), hr_source="device"))
    night = preprocess_night(rec, PreprocessConfig(modalities=("hr", "activity"), optional_modalities=("activity",),
                                                   hr_source="device"))
    assert night.entry["modalities"] == ["hr"]


def test_mesa_night_through_the_pipeline_hr_from_ecg_and_from_channel(mesa_tree):
    rec = MesaSource(mesa_tree).load(2)  # factory: 65 bpm
    for source in ("ecg", "channel"):
        night = preprocess_night(rec, PreprocessConfig(hr_source=source))
        assert night.entry["n_epochs"] == rec.n_epochs
        assert abs(np.median(night.arrays["hr_bpm"]) - 65) < 2
        assert night.arrays["ecg"].shape == (rec.n_epochs, 7680)


def test_config_hash_changes_with_settings():
    assert PreprocessConfig().hash() == PreprocessConfig().hash()
    assert PreprocessConfig().hash() != PreprocessConfig(hr_max_gap_s=11).hash()
