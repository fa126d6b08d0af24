"""Pretraining end to end: a short run through the CLI that logs, checkpoints and exports the encoder;
the artifact loads safely and serves a subset of modalities; the adversary lowers the subject probe."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fm_bio.training.artifacts import load_encoder, read_artifact
from tests.factories import make_mesa_tree

REPO = Path(__file__).resolve().parents[1]


def _pretrain_cmd(raw: Path, cache_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fm_bio.run", "experiment=pretrain_mesa", f"dataset.root={raw}",
            f"dataset.cache_root={cache_root}", f"hydra.run.dir={run_dir}", "progress=false", "n_jobs=1",
            "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
            "dataset.datamodule.batch_size=16", "dataset.datamodule.seq_len=4", "model.probe_max_per_subject=40",
            "split.subjects.val_fraction=0.25", *extra]


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pretrain")
    raw = make_mesa_tree(tmp / "raw", n_subjects=4)
    run_dir = tmp / "run"
    proc = subprocess.run(_pretrain_cmd(raw, tmp / "cache", run_dir), cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_short_run_logs_checkpoints_and_exports(pretrained_run):
    rows = list(csv.DictReader((pretrained_run / "csv" / "metrics.csv").open()))
    columns = set(rows[0])
    for key in ("train/loss", "val/loss", "train/shared", "train/private", "train/orthogonality", "train/temporal",
                "train/adversary_ce", "probe/stage_acc", "probe/stage_majority", "probe/subject_acc",
                "probe/subject_chance"):
        assert key in columns, key
    assert sum(1 for r in rows if r["probe/subject_acc"]) == 2  # one probe per epoch
    assert (pretrained_run / "checkpoints" / "last.ckpt").exists()
    assert list((pretrained_run / "checkpoints").glob("best-*.ckpt"))
    ckpt = torch.load(pretrained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "state_dict" in ckpt
    runs = list((pretrained_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one offline wandb run per job"


@pytest.mark.slow
def test_artifact_loads_weights_only_and_serves_hr_activity(pretrained_run):
    payload = read_artifact(pretrained_run / "encoder.pt")
    assert payload["extra"]["modalities"] == ["ecg", "hr", "activity"]
    encoder = load_encoder(pretrained_run / "encoder.pt")
    batch = {"hr": torch.randn(5, 1, 30), "activity": torch.randn(5, 1, 1)}  # Apple Watch: no ECG
    out = encoder(batch)
    assert set(out.per_modality) == {"hr", "activity"} and out.fused.shape == (5, encoder.embedding_dim)
    assert torch.isfinite(out.fused).all()


def test_artifact_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="experiment=pretrain_mesa"):
        read_artifact(tmp_path / "nope.pt")


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_module

    from fm_bio.utils.config import register_resolvers

    register_resolvers()
    with initialize_config_module(config_module="fm_bio.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.slow
def test_adversary_lowers_subject_probe_on_the_embedded_data(tmp_path):
    """Subject identity is easy to decode from the demo data (per-subject ECG morphology, heart rate, ...);
    with the adversary on, a fresh linear probe decodes it less well than with it off (same seed)."""
    from fm_bio.demo.generate import generate_mesa_demo
    from fm_bio.tasks.pretrain import pretrain_task

    raw = tmp_path / "raw"
    generate_mesa_demo(raw, n_subjects=6, seed=5, night_hours=(2.0, 2.0))
    results = {}
    for name, loss in (("off", "loss=focal"), ("on", "loss=[focal,subject_adversary]")):
        out = tmp_path / name
        cfg = _compose(["experiment=pretrain_mesa", loss, "logger=csv", f"paths.root_dir={tmp_path}",
                        f"paths.output_dir={out}", f"dataset.root={raw}", f"dataset.cache_root={tmp_path / 'cache'}",
                        "trainer.max_epochs=8", "trainer.enable_progress_bar=false", "dataset.datamodule.batch_size=64",
                        "split.subjects.val_fraction=0.2", "n_jobs=1", "progress=false"])
        results[name] = pretrain_task(cfg)["probe_history"][-1]
    off, on = results["off"], results["on"]
    print("subject probe off / on:", off, on)
    assert off["subject_acc"] > 2 * off["subject_chance"], "subject identity should be decodable without the adversary"
    assert on["subject_acc"] < off["subject_acc"] - 0.05, results
    assert on["stage_acc"] > on["stage_majority"], "the encoder must still carry sleep-stage information"


@pytest.mark.slow
def test_killed_pretraining_resumes_from_last_ckpt_to_the_same_end(tmp_path):
    """A run killed mid-epoch (os._exit, like SIGKILL) and re-run with ckpt_path=last ends with exactly the
    weights of an uninterrupted run (same seed, deterministic CPU settings)."""
    import os

    raw = make_mesa_tree(tmp_path / "raw", n_subjects=4)
    extra = ("trainer.max_epochs=3", "logger=csv")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc = subprocess.run(_pretrain_cmd(raw, tmp_path / "cache", whole, *extra), cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "killer"), str(REPO)]),
           "FM_BIO_KILL_AT_STEP": "5"}  # 3 steps per epoch: killed in the middle of the second epoch
    proc = subprocess.run(_pretrain_cmd(raw, tmp_path / "cache", killed, *extra, "ckpt_path=last"), cwd=REPO,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 137, proc.stderr[-3000:]
    assert not (killed / "encoder.pt").exists()
    first = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert first["epoch"] == 0 and first["global_step"] == 3  # the end of the first epoch
    proc = subprocess.run(_pretrain_cmd(raw, tmp_path / "cache", killed, *extra, "ckpt_path=last"), cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 9
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), f"{key} differs after the resumption"
    wa, wb = read_artifact(whole / "encoder.pt"), read_artifact(killed / "encoder.pt")
    assert all(torch.equal(v, wb["state_dict"][k]) for k, v in wa["state_dict"].items())
