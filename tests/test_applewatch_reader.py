"""sleep-accel reader on tiny trees, including broken inputs."""

from __future__ import annotations

import numpy as np
import pytest

from fm_bio.data.labels import MASKED
from fm_bio.data.records import DataError
from fm_bio.data.sources import AppleWatchSource
from tests.factories import STAGES_AW, write_sleep_accel_subject


def test_reads_labels_hr_motion_steps(sleep_accel_tree):
    src = AppleWatchSource(sleep_accel_tree)
    assert src.subjects() == ["1000001", "1000002", "1000003"]
    rec = src.load(1000001)
    assert rec.n_epochs == len(STAGES_AW)
    assert rec.labels[0] == MASKED and rec.labels[1] == 0 and rec.labels[7] == 2  # N4 -> deep
    t = rec.hr.t_s
    assert np.all(np.diff(t) > 0), "heart rate must come out sorted with unique times"
    assert t.min() >= -600 and rec.issues["hr_samples_unsorted"] >= 1 and rec.issues["hr_samples_duplicate_time"] == 1
    # motion-derived activity is larger in wake epochs (the factory moves more in wake)
    wake = rec.labels == 0
    sleep = rec.labels > 0
    assert np.nanmean(rec.activity_counts[wake]) > 5 * np.nanmean(rec.activity_counts[sleep])
    assert rec.steps is not None


def test_subject_without_motion_loads_with_heart_rate_only(sleep_accel_tree):
    rec = AppleWatchSource(sleep_accel_tree).load("1000003")
    assert rec.activity_counts is None and rec.hr is not None and rec.modalities() == ["hr"]


def test_empty_heart_rate_file(sleep_accel_tree):
    (sleep_accel_tree / "heart_rate/1000001_heartrate.txt").write_text("")
    with pytest.raises(DataError, match=r"1000001_heartrate\.txt: the file is empty"):
        AppleWatchSource(sleep_accel_tree).load("1000001")


def test_non_numeric_heart_rate_names_the_line(sleep_accel_tree):
    path = sleep_accel_tree / "heart_rate/1000001_heartrate.txt"
    lines = path.read_text().splitlines()
    lines[3] = "12.0,abc"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"heartrate\.txt: line 4 is not numeric"):
        AppleWatchSource(sleep_accel_tree).load("1000001")


def test_missing_heart_rate_file(sleep_accel_tree):
    (sleep_accel_tree / "heart_rate/1000002_heartrate.txt").unlink()
    with pytest.raises(DataError, match="heart-rate file .* is missing"):
        AppleWatchSource(sleep_accel_tree).load("1000002")


def test_labels_off_grid_or_duplicated(tmp_path):
    write_sleep_accel_subject(tmp_path, "2000001", STAGES_AW)
    path = tmp_path / "labels/2000001_labeled_sleep.txt"
    path.write_text("0 0\n45 1\n")
    with pytest.raises(DataError, match="not on the 30-s epoch grid"):
        AppleWatchSource(tmp_path).load("2000001")
    path.write_text("0 0\n30 1\n30 2\n")
    with pytest.raises(DataError, match="labelled twice"):
        AppleWatchSource(tmp_path).load("2000001")


def test_unknown_label_code_masked_and_counted(tmp_path):
    write_sleep_accel_subject(tmp_path, "2000001", STAGES_AW)
    (tmp_path / "labels/2000001_labeled_sleep.txt").write_text("0 0\n30 7\n60 2\n")
    rec = AppleWatchSource(tmp_path).load("2000001")
    assert rec.labels.tolist() == [0, MASKED, 1] and rec.unknown_stage_codes == {7: 1}


def test_missing_label_epochs_keep_their_place(tmp_path):
    write_sleep_accel_subject(tmp_path, "2000001", STAGES_AW)
    (tmp_path / "labels/2000001_labeled_sleep.txt").write_text("0 0\n30 2\n120 5\n")
    rec = AppleWatchSource(tmp_path).load("2000001")
    assert rec.labels.tolist() == [0, 1, MASKED, MASKED, 3]
    assert rec.issues["label_epochs_missing_from_file"] == 2


def test_unknown_subject_lists_available(sleep_accel_tree):
    with pytest.raises(DataError, match="not found.*1000001"):
        AppleWatchSource(sleep_accel_tree).load("999")


def _write_walch_features(root, sid, codes, first, counts):
    """Walch-style feature files for rows ``first .. first + len(counts) - 1`` of the label epochs,
    unscored (-1) epochs dropped as in their pipeline."""
    folder = root / "features"
    folder.mkdir(exist_ok=True)
    rows = [e for e in range(first, first + len(counts)) if codes[e] != -1]
    values = {e: c for e, c in zip(range(first, first + len(counts)), counts, strict=True)}
    (folder / f"{sid}_count_feature.out").write_text("".join(f"{values[e]:.6f}\n" for e in rows))
    (folder / f"{sid}_time_feature.out").write_text("".join(f"{(e - rows[0]) * 30 / 3600:.6f}\n" for e in rows))
    (folder / f"{sid}_psg_labels.out").write_text("".join(f"{codes[e]:.6f}\n" for e in rows))
    return rows


def test_activity_from_walch_features_is_placed_by_matching_labels(sleep_accel_tree):
    sid = "1000003"  # no motion/
    counts = np.arange(1.0, 16.0)
    rows = _write_walch_features(sleep_accel_tree, sid, STAGES_AW, 2, counts)
    record = AppleWatchSource(sleep_accel_tree).load(sid)
    act = record.activity_counts
    assert record.source_files["count_feature"].endswith(f"{sid}_count_feature.out")
    expected = {e: counts[e - 2] for e in rows}
    assert all(act[e] == expected[e] for e in rows)
    assert np.isnan(act[[e for e in range(len(STAGES_AW)) if e not in rows]]).all()  # no row: missing


def test_walch_features_of_another_night_are_an_error(sleep_accel_tree):
    sid = "1000003"
    _write_walch_features(sleep_accel_tree, sid, STAGES_AW[::-1], 0, np.ones(20))  # another subject's labels
    with pytest.raises(DataError, match="cannot place Walch"):
        AppleWatchSource(sleep_accel_tree).load(sid)


def test_activity_source_none_and_motion_precedence(sleep_accel_tree):
    _write_walch_features(sleep_accel_tree, "1000003", STAGES_AW, 0, np.ones(20))
    assert AppleWatchSource(sleep_accel_tree, activity_source="none").load("1000003").activity_counts is None
    _write_walch_features(sleep_accel_tree, "1000001", STAGES_AW, 0, np.full(20, 7.0))
    rec = AppleWatchSource(sleep_accel_tree).load("1000001")  # has motion/: motion wins under auto
    assert "motion" in rec.source_files and "count_feature" not in rec.source_files
    rec = AppleWatchSource(sleep_accel_tree, activity_source="features").load("1000001")
    assert np.nanmax(rec.activity_counts) == 7.0
    assert AppleWatchSource(sleep_accel_tree, activity_source="features").settings() == {"activity_source": "features"}
    assert AppleWatchSource(sleep_accel_tree).settings() == {}
