"""The leave-subjects-out study (task=loso): subject folds, and one tiny run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fm_bio.tasks.loso import quality_section, settings_hash, subject_folds
from tests.factories import STAGES_AW, write_sleep_accel_subject

REPO = Path(__file__).resolve().parents[1]


def test_subject_folds_partition_every_subject_once():
    subjects = [f"s{i:02d}" for i in range(11)]
    folds = subject_folds(subjects, 4, seed=3)
    flat = [s for f in folds for s in f]
    assert sorted(flat) == subjects and len(flat) == len(set(flat))
    assert sorted(len(f) for f in folds) == [2, 3, 3, 3]
    assert folds == subject_folds(list(reversed(subjects)), 4, seed=3)  # input order does not matter
    assert folds != subject_folds(subjects, 4, seed=4)
    assert [len(f) for f in subject_folds(subjects, 11, seed=0)] == [1] * 11  # leave-one-subject-out
    with pytest.raises(ValueError, match="n_folds"):
        subject_folds(subjects, 12, seed=0)


def test_quality_section_lists_each_ablation(tmp_path):
    run = tmp_path / "context_0"
    run.mkdir()
    summary = {"overrides": ["experiment=applewatch_loso", "dataset.root=/x", "dataset.datamodule.context_epochs=0",
                             "report.out_dir=y"],
               "models_summary": {"base": {"n_clients": 11, **{k: {"mean": 0.5, "sd": 0.1}
                                                              for k in ("kappa", "macro_f1", "accuracy")}}}}
    (run / "loso_summary.json").write_text(json.dumps(summary))
    text = "\n".join(quality_section(tmp_path))
    assert "| context_0 | `dataset.datamodule.context_epochs=0` | base | 11 | 0.500 ± 0.100" in text
    assert "dataset.root" not in text and "report.out_dir" not in text
    assert "No ablation runs" in "\n".join(quality_section(tmp_path / "absent"))


@pytest.mark.slow
def test_loso_runs_every_subject_as_a_client_once_and_resumes(tmp_path):
    raw = tmp_path / "sleep-accel"
    subjects = ["1000001", "1000002", "1000003", "1000004"]
    for k, sid in enumerate(subjects):
        stages = (STAGES_AW if k % 2 else STAGES_AW[::-1]) * 6  # 1-h nights
        write_sleep_accel_subject(raw, sid, stages, hr_bpm=55.0 + 5 * k, seed=k, motion=k != 3)
    run_dir, report = tmp_path / "run", tmp_path / "report"
    args = [sys.executable, "-m", "fm_bio.run", "experiment=applewatch_loso", f"dataset.root={raw}",
            f"dataset.cache_root={tmp_path / 'cache'}", "n_jobs=1", "loso.n_folds=2",
            "loso.models=[base,fm_population,classic_population]", "trainer.max_epochs=1",
            "split.client.n_folds=2", "dataset.datamodule.batch_size=32", "dataset.datamodule.context_epochs=2",
            'loso.pretrain_overrides=["model=pretrain","trainer.max_epochs=1","dataset.datamodule.seq_len=4",'
            '"model.probe_max_per_subject=20","split.subjects.val_fraction=0.5","split.subjects.test_fraction=0"]',
            'loso.population_overrides=["model=fm_finetune","trainer.max_epochs=1","split.subjects.val_fraction=0.5",'
            '"split.subjects.test_fraction=0"]',
            f"report.out_dir={report}", "report.figures=false", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    plan = json.loads((run_dir / "loso_plan.json").read_text())
    folds = plan["subject_folds"]
    assert sorted(s for f in folds for s in f) == subjects
    for f, clients in enumerate(folds):
        pre = json.loads((run_dir / f"fold{f}" / "pretrain" / "pretrain_summary.json").read_text())["subjects"]
        assert sorted(pre["split_params"]["holdout"]) == sorted(clients)  # the fold's clients never pretrain
        assert pre["train"]["n_subjects"] + pre["val"]["n_subjects"] == len(subjects) - len(clients)
        pop = json.loads((run_dir / f"fold{f}" / "population" / "population_summary.json").read_text())
        assert pop["n_train_subjects"] >= 1
    records = [json.loads(p.read_text()) for p in sorted((run_dir / "jobs").rglob("metrics.json"))]
    assert len(records) == len(subjects) * 3 and all(r["status"] == "ok" for r in records)
    assert sorted({r["client"] for r in records}) == subjects
    text = (report / "results.md").read_text()
    for heading in ("## Per client", "## Paired tests", "## Study design", "## Quality work", "## Beside published results"):
        assert heading in text
    assert "| classic_population |" in text
    # a re-run skips every finished stage and job and rewrites the same report
    first = {p: p.stat().st_mtime_ns for p in (run_dir / "jobs").rglob("metrics.json")}
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert {p: p.stat().st_mtime_ns for p in first} == first
    assert "already finished: skipped" in proc.stderr + proc.stdout


def test_resuming_into_a_folder_of_another_study_is_refused(tmp_path):
    from fm_bio.tasks.loso import check_resumable

    plan = {"dataset_root": "/a", "subject_folds": [["1"], ["2"]], "settings_hash": "abc", "seed": 1}
    path = tmp_path / "loso_plan.json"
    check_resumable(path, plan)  # a new folder
    path.write_text(json.dumps(plan))
    check_resumable(path, dict(plan))  # the same study: resumes
    with pytest.raises(SystemExit, match="settings_hash"):
        check_resumable(path, {**plan, "settings_hash": "def"})
    with pytest.raises(SystemExit, match="subject_folds"):
        check_resumable(path, {**plan, "subject_folds": [["2"], ["1"]]})


def test_settings_hash_ignores_where_and_how_a_study_runs():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"seed": 1, "trainer": {"max_epochs": 5}, "loso": {"models": ["base"], "n_folds": 4},
                            "paths": {"log_dir": "/x"}, "progress": True, "report": {"out_dir": "/y"}})
    same = OmegaConf.merge(cfg, {"paths": {"log_dir": "/z"}, "progress": False, "loso": {"models": ["base", "classic"]}})
    assert settings_hash(cfg) == settings_hash(same)
    assert settings_hash(cfg) != settings_hash(OmegaConf.merge(cfg, {"trainer": {"max_epochs": 6}}))
