"""The real sleep-accel subjects (../shared/data/sleep-accel), when present: counts against the raw files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REAL_SLEEP_ACCEL

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (REAL_SLEEP_ACCEL / "labels").is_dir(),
                       reason=f"real sleep-accel data not found at {REAL_SLEEP_ACCEL} (only on the project machines)"),
]
NAMES = {-1: "unscored", 0: "wake", 1: "light", 2: "light", 3: "deep", 4: "deep", 5: "rem"}


def raw_label_counts(path: Path) -> dict[str, int]:
    counts = Counter({k: 0 for k in ("wake", "light", "deep", "rem", "unscored")})
    for line in path.read_text().split("\n"):
        if line.strip():
            counts[NAMES[int(line.split()[1])]] += 1
    return dict(counts)


def test_preprocess_real_sleep_accel_via_the_cli(tmp_path):
    cache_root = tmp_path / "cache"
    cmd = [sys.executable, "-m", "fm_bio.run", "task=preprocess", "dataset=applewatch",
           f"dataset.root={REAL_SLEEP_ACCEL}", f"dataset.cache_root={cache_root}", "progress=false",
           f"hydra.run.dir={tmp_path / 'run'}"]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    manifest = json.loads((cache_root / "manifest.json").read_text())
    label_files = sorted((REAL_SLEEP_ACCEL / "labels").glob("*_labeled_sleep.txt"))
    assert len(manifest["subjects"]) == len(label_files) == 11 and not manifest["failed"]
    for path in label_files:
        sid = path.name.split("_")[0]
        entry = manifest["subjects"][sid]
        n_lines = sum(1 for line in path.read_text().split("\n") if line.strip())
        assert entry["label_counts"] == raw_label_counts(path), sid
        assert entry["n_night_epochs"] == n_lines, sid
        assert entry["n_epochs"] + sum(entry["qc"].values()) == n_lines, sid
        # no motion/ in this copy: activity is Walch et al.'s count feature, placed by matching label rows
        assert entry["modalities"] == ["activity", "hr"] and "count_feature" in entry["source_files"], sid
        walch_rows = sum(1 for line in (REAL_SLEEP_ACCEL / "features" / f"{sid}_count_feature.out").read_text().split("\n")
                         if line.strip())
        assert entry["n_epochs"] <= walch_rows, sid  # never more epochs than the feature covers
    report = json.loads((tmp_path / "run" / "preprocess_report.json").read_text())
    assert report["n_epochs_kept"] == sum(e["n_epochs"] for e in manifest["subjects"].values())
