"""The preprocessing run: cache layout, manifest, skipping intact subjects, atomicity, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fm_bio.data import cache
from fm_bio.data.sources import AppleWatchSource, MesaSource
from fm_bio.preprocessing.pipeline import PreprocessConfig
from fm_bio.tasks.preprocess import PreprocessError, run_preprocess
from tests.factories import STAGES_A, write_mesa_subject

REPO = Path(__file__).resolve().parents[1]


def cache_digest(root: Path) -> dict[str, str]:
    """Every file of a cache (except temporaries) -> its content hash."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".tmp" not in p.parts:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_cache_layout_and_manifest(mesa_tree, tmp_path):
    root = tmp_path / "cache"
    report = run_preprocess(MesaSource(mesa_tree), root, PreprocessConfig(), n_jobs=1, progress=False)
    assert sorted(report.processed) == ["0001", "0002"] and not report.failed
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["subjects"]["0001"]
    assert entry["subject"] == "0001"
    assert entry["label_counts"] == {"wake": 4, "light": 7, "deep": 3, "rem": 4, "unscored": 2}
    assert entry["n_epochs"] + sum(entry["qc"].values()) == entry["n_night_epochs"] == len(STAGES_A)
    assert entry["config_hash"] == PreprocessConfig().hash()
    arrays = cache.open_subject(root, "0001")
    assert isinstance(arrays["ecg"], np.memmap) and arrays["ecg"].shape == (entry["n_epochs"], 7680)
    assert arrays["hr"].shape == (entry["n_epochs"], 30) and arrays["activity"].shape == (entry["n_epochs"], 1)
    assert arrays["label"].dtype == np.int8 and arrays["t_start_s"][1] == 30.0


def test_rerun_skips_intact_and_redoes_damaged_or_changed(mesa_tree, tmp_path):
    root = tmp_path / "cache"
    cfg = PreprocessConfig()
    run_preprocess(MesaSource(mesa_tree), root, cfg, progress=False)
    before = cache_digest(root)
    again = run_preprocess(MesaSource(mesa_tree), root, cfg, progress=False)
    assert again.processed == [] and sorted(again.skipped_intact) == ["0001", "0002"]
    assert cache_digest(root) == before
    # a damaged file (size changed) -> that subject only is redone
    ecg = root / "0002" / "ecg.npy"
    ecg.write_bytes(ecg.read_bytes()[:-100])
    third = run_preprocess(MesaSource(mesa_tree), root, cfg, progress=False)
    assert third.processed == ["0002"] and cache_digest(root) == before
    # other settings -> everything is redone
    fourth = run_preprocess(MesaSource(mesa_tree), root, PreprocessConfig(hr_max_gap_s=12), progress=False)
    assert sorted(fourth.processed) == ["0001", "0002"]


def test_bad_subject_is_reported_not_fatal_unless_strict(mesa_tree, tmp_path):
    (mesa_tree / "polysomnography/edfs/mesa-sleep-0002.edf").write_bytes(b"garbage" * 100)
    root = tmp_path / "cache"
    report = run_preprocess(MesaSource(mesa_tree), root, PreprocessConfig(), n_jobs=2, progress=False)
    assert report.processed == ["0001"] and list(report.failed) == ["0002"]
    assert "mesa-sleep-0002.edf" in report.failed["0002"]
    manifest = cache.load_manifest(root)
    assert list(manifest["subjects"]) == ["0001"] and "0002" in manifest["failed"]
    with pytest.raises(PreprocessError, match="0002"):
        run_preprocess(MesaSource(mesa_tree), tmp_path / "cache2", PreprocessConfig(), strict=True, progress=False)


def test_write_interrupted_inside_a_subject_leaves_no_half_subject(mesa_tree, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    real_save = np.save
    calls = {"n": 0}

    def dying_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed mid-write")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        cache.write_subject(root, "0001", {"label": np.zeros(3, np.int8), "epoch_index": np.arange(3),
                                           "t_start_s": np.zeros(3), "hr": np.zeros((3, 30))}, {"config_hash": "x"})
    assert not (root / "0001").exists()
    assert cache.read_subject_meta(root, "0001") is None


def _preprocess_cmd(raw: Path, cache_root: Path, n_jobs: int) -> list[str]:
    return [sys.executable, "-m", "fm_bio.run", "task=preprocess", "dataset=mesa", f"dataset.root={raw}",
            f"dataset.cache_root={cache_root}", f"n_jobs={n_jobs}", "progress=false",
            f"hydra.run.dir={cache_root.parent / 'run'}-{time.time_ns()}"]


@pytest.mark.slow
def test_killed_run_then_rerun_equals_uninterrupted(tmp_path):
    n_subjects = 8
    raw = tmp_path / "mesa"
    for k in range(n_subjects):
        write_mesa_subject(raw, k + 1, STAGES_A * 6, hr_bpm=50 + 5 * k, seed=k)  # 1-h nights
    reference = tmp_path / "ref"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(_preprocess_cmd(raw, reference, 2), check=True, cwd=REPO, env=env, capture_output=True)
    expected = cache_digest(reference)
    assert len(json.loads((reference / "manifest.json").read_text())["subjects"]) == n_subjects
    interrupted = 0
    # Kill points by progress, not by the clock (the machine may be busy): while the first subject is being
    # written (its temporary folder exists), and after 3 and 6 subjects are complete.
    for trial, n_complete in enumerate((0, 3, 6)):
        target = tmp_path / f"killed{trial}"
        proc = subprocess.Popen(_preprocess_cmd(raw, target, 2), cwd=REPO, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            complete = [p for p in target.glob("[0-9]*") if p.is_dir()] if target.exists() else []
            writing = list((target / ".tmp").glob("*")) if (target / ".tmp").exists() else []
            if len(complete) >= n_complete and (n_complete or writing):
                break
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, wherever they are
        proc.wait()
        done = json.loads((target / "manifest.json").read_text())["subjects"] if (target / "manifest.json").exists() else {}
        interrupted += len(done) < n_subjects
        subprocess.run(_preprocess_cmd(raw, target, 2), check=True, cwd=REPO, env=env, capture_output=True)
        assert cache_digest(target) == expected, f"trial {trial}: resumed cache differs from the uninterrupted one"
    assert interrupted == 3, "a run finished before it was killed; the test proves less than it claims"


def test_applewatch_tree_preprocess_counts(sleep_accel_tree, tmp_path):
    cfg = PreprocessConfig(modalities=("hr", "activity"), optional_modalities=("activity",), hr_source="device",
                           hr_max_gap_s=300)
    report = run_preprocess(AppleWatchSource(sleep_accel_tree), tmp_path / "c", cfg, progress=False)
    manifest = cache.load_manifest(tmp_path / "c")
    assert sorted(report.processed) == ["1000001", "1000002", "1000003"]
    assert manifest["subjects"]["1000003"]["modalities"] == ["hr"]
    assert manifest["subjects"]["1000001"]["modalities"] == ["activity", "hr"]


def test_sharded_preprocessing_merges_to_the_unsharded_manifest(tmp_path):
    """Two shards writing into one cache, then merged, give exactly the manifest (and files) of one run."""
    import json

    from fm_bio.data.sources import MesaSource
    from fm_bio.tasks.preprocess import PreprocessError, merge_shards, run_preprocess, shard_subjects
    from tests.factories import make_mesa_tree

    raw = make_mesa_tree(tmp_path / "raw", n_subjects=5)
    source, cfg = MesaSource(raw), PreprocessConfig()
    whole = run_preprocess(source, tmp_path / "whole", cfg, progress=False)
    assert len(whole.processed) == 5
    shared = tmp_path / "sharded"
    reports = [run_preprocess(source, shared, cfg, progress=False, shard=i, num_shards=2) for i in range(2)]
    assert sorted(s for r in reports for s in r.processed) == sorted(whole.processed)
    assert not set(reports[0].processed) & set(reports[1].processed)
    assert not (shared / "manifest.json").exists()  # only the shard manifests so far
    with pytest.raises(PreprocessError, match="missing"):
        merge_shards(shared, 3)
    merge_shards(shared, 2)
    a = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    b = json.loads((shared / "manifest.json").read_text())
    assert a == b
    assert shard_subjects(["c", "a", "b"], 1, 2) == ["b"] and shard_subjects(["a"], None, 1) == ["a"]


def test_bad_input_kinds_are_errors_or_counted(tmp_path):
    """All-EXCLUDED actigraphy, an unknown stage code, out-of-range heart rate and the same subject twice."""
    import json

    from fm_bio.data.sources import AppleWatchSource, MesaSource
    from fm_bio.tasks.preprocess import PreprocessError, run_preprocess
    from tests.factories import STAGES_A, STAGES_AW, write_mesa_subject, write_sleep_accel_subject

    root = tmp_path / "mesa"
    write_mesa_subject(root, 1, STAGES_A * 2, excluded_epochs=tuple(range(40)))  # actigraphy EXCLUDED all night
    write_mesa_subject(root, 2, [7 if s == 3 else s for s in STAGES_A] * 2)  # stage code 7 does not exist
    src = MesaSource(root)
    report = run_preprocess(src, tmp_path / "cache", PreprocessConfig(), progress=False)
    assert list(report.failed) == ["0001"] and "all EXCLUDED" in report.failed["0001"]
    assert "optional_modalities" in report.failed["0001"]  # the fix is named
    entry = json.loads((tmp_path / "cache" / "manifest.json").read_text())["subjects"]["0002"]
    assert entry["unknown_stage_codes"] == {"7": 4} and entry["label_counts"]["unscored"] >= 4  # masked, counted
    # tolerance asked for: activity optional -> the subject is cached without it
    report = run_preprocess(src, tmp_path / "cache_opt", PreprocessConfig(optional_modalities=("activity",)),
                            progress=False)
    assert not report.failed
    opt = json.loads((tmp_path / "cache_opt" / "manifest.json").read_text())["subjects"]["0001"]
    assert opt["modalities"] == ["ecg", "hr"] and opt["signal_stats"]["activity_all_missing"] == 40
    with pytest.raises(PreprocessError, match="more than once"):
        run_preprocess(src, tmp_path / "cache_dup", PreprocessConfig(), subjects=["1", "0001"], progress=False)

    aw = tmp_path / "aw"
    write_sleep_accel_subject(aw, "1000001", STAGES_AW * 3, hr_bpm=300.0, motion=False)  # all out of range
    write_sleep_accel_subject(aw, "1000002", STAGES_AW * 3, hr_bpm=60.0, motion=False)
    cfg = PreprocessConfig(modalities=("hr",), hr_source="device", hr_max_gap_s=300.0)
    report = run_preprocess(AppleWatchSource(aw), tmp_path / "awcache", cfg, progress=False)
    assert list(report.failed) == ["1000001"] and "hr_gap" in report.failed["1000001"]
    assert "1000001_heartrate.txt" in report.failed["1000001"]  # the file is named
