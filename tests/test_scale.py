"""Scale-out on existing engines: DDP (2 CPU processes, gloo), the SLURM launcher's settings, and a sweep
through hydra-submitit-launcher's local executor."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from fm_bio.utils.config import register_resolvers
from tests.factories import STAGES_A, make_mesa_tree, write_mesa_subject

REPO = Path(__file__).resolve().parents[1]


def _launcher(overrides: list[str]):
    register_resolvers()
    with initialize_config_module(config_module="fm_bio.conf", version_base="1.3"):
        return compose(config_name="config", overrides=["hydra/launcher=slurm", "paths.root_dir=/tmp", *overrides],
                       return_hydra_config=True).hydra.launcher


def test_slurm_launcher_follows_the_trainer():
    launcher = _launcher(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    cpu = _launcher([])  # a CPU trainer asks SLURM for no GPU
    assert (cpu.nodes, cpu.tasks_per_node, cpu.gpus_per_node) == (1, 1, 0)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ddp_two_cpu_processes_pretrain_once(tmp_path, strategy):
    raw = make_mesa_tree(tmp_path / "raw", n_subjects=4)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "fm_bio.run", "experiment=pretrain_mesa", f"dataset.root={raw}",
           f"dataset.cache_root={tmp_path / 'cache'}", f"hydra.run.dir={run}", "progress=false", "n_jobs=1",
           f"trainer={strategy}", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.sync_batchnorm=false",
           "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "+trainer.limit_train_batches=3",
           "+trainer.limit_val_batches=2", "dataset.datamodule.batch_size=16", "dataset.datamodule.seq_len=4",
           "model.probe_max_per_subject=40", "split.subjects.val_fraction=0.25"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (run / "pretrain.log").read_text() + proc.stderr
    assert "GLOBAL_RANK: 1" in log and "MEMBER: 2/2" in log, "two processes must have joined"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts.count("last.ckpt") == 1 and sum(n.startswith("best-") for n in ckpts) == 1
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    steps = [(r["epoch"], r["step"], r.get("train/loss")) for r in rows if r.get("train/loss")]
    assert len(steps) == len(set(steps)) and len(steps) > 0, "one logger: each step logged once"
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1, "one wandb run"
    summary = json.loads((run / "pretrain_summary.json").read_text())
    assert Path(summary["encoder_artifact"]).exists()


@pytest.mark.slow
def test_submitit_local_sweep_runs_two_jobs(tmp_path):
    raw = tmp_path / "raw"
    for k in range(3):
        write_mesa_subject(raw, k + 1, STAGES_A * 6, hr_bpm=55 + 5 * k, seed=k)
    common = [f"dataset.root={raw}", f"dataset.cache_root={tmp_path / 'cache'}", "progress=false", "n_jobs=1"]
    proc = subprocess.run([sys.executable, "-m", "fm_bio.run", "task=preprocess", *common,
                           f"hydra.run.dir={tmp_path / 'pre'}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "fm_bio.run", "-m", "experiment=study_mesa", *common,
                           "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "study.clients=[0001,0002]",
                           "client=0001,0002", "model=classic", "split.client.n_folds=2", "logger=csv",
                           f"hydra.sweep.dir={sweep}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.rglob("metrics.json"))]
    assert sorted(r["client"] for r in records) == ["0001", "0002"] and all(r["status"] == "ok" for r in records)
    assert list(sweep.glob(".submitit/*")), "the jobs ran through submitit"
