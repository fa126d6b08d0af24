"""The per-client study end to end: a tiny pretraining, a subprocess sweep of 2 clients x 2 models, and
the report built from its jobs (plus one wandb offline run per job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import STAGES_A, write_mesa_subject

REPO = Path(__file__).resolve().parents[1]
CLIENTS = ["0004", "0005"]
BAD_CLIENT = "0099"  # not in the data: its jobs fail


NETGUARD = REPO / "tests" / "netguard"


def _env(netlog: Path | None) -> dict[str, str]:
    """The environment of a job: with ``netlog``, outbound sockets are blocked (tests/netguard) and every
    attempt is written to ``netlog``."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    if netlog is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(NETGUARD), str(REPO), env.get("PYTHONPATH", "")])
        env["FM_BIO_NETGUARD_LOG"] = str(netlog)
    return env


def _run(args: list[str], netlog: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "fm_bio.run", *args], cwd=REPO, capture_output=True, text=True,
                          env=_env(netlog))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_netguard_blocks_and_records_outbound_connections(tmp_path):
    """The guard the socket-blocked runs rely on: an outbound connect fails and is recorded; loopback works."""
    log = tmp_path / "net.log"
    code = ("import socket\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
            "socket.create_connection(s.getsockname(), timeout=2).close()\n"
            "try:\n    socket.create_connection(('192.0.2.1', 443), timeout=2)\n"
            "except OSError as e:\n    print('blocked' if 'netguard' in str(e) else 'other', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(log))
    assert "blocked" in proc.stdout, proc.stdout + proc.stderr
    assert "192.0.2.1" in log.read_text()


@pytest.mark.slow
def test_sweep_two_clients_two_models_yields_a_report(tmp_path):
    raw = tmp_path / "raw"
    for k in range(5):
        write_mesa_subject(raw, k + 1, STAGES_A * 6, hr_bpm=52 + 6 * k, seed=k)  # 1-h nights
    common = [f"dataset.root={raw}", f"dataset.cache_root={tmp_path / 'cache'}", "progress=false", "n_jobs=1",
              f"study.clients=[{','.join(CLIENTS)}]", "study.name=tiny"]
    netlog = tmp_path / "network_attempts.log"  # every job below runs with outbound sockets blocked
    pre = tmp_path / "pretrain"
    _run(["experiment=pretrain_mesa", *common, f"hydra.run.dir={pre}", "trainer.max_epochs=1",
          "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "dataset.datamodule.batch_size=16",
          "dataset.datamodule.seq_len=4", "model.probe_max_per_subject=20", "split.subjects.val_fraction=0.34"], netlog=netlog)
    manifest_split = json.loads((pre / "pretrain_summary.json").read_text())["subjects"]
    assert manifest_split["train"]["n_subjects"] + manifest_split["val"]["n_subjects"] == 3  # clients held out

    sweep = tmp_path / "sweep"
    sweep_args = ["-m", "experiment=study_mesa", *common, f"study.encoder_artifact={pre / 'encoder.pt'}",
                  f"client={','.join([*CLIENTS, BAD_CLIENT])}", "model=base,fm_finetune,classic", f"hydra.sweep.dir={sweep}",
                  "trainer.max_epochs=2", "split.client.n_folds=2", "dataset.datamodule.batch_size=16"]
    _run(sweep_args, netlog=netlog)  # the unknown client's jobs fail; the sweep goes on
    failed = [p for p in sweep.rglob("metrics.json") if json.loads(p.read_text())["status"] == "failed"]
    assert len(failed) == 3 and all(BAD_CLIENT in json.loads(p.read_text())["error"] for p in failed)
    jobs = sorted(p for p in sweep.rglob("metrics.json") if p not in failed)
    assert len(jobs) == 6
    finished = {p: p.stat().st_mtime_ns for p in jobs}
    proc = _run(sweep_args, netlog=netlog)  # re-running the sweep skips the finished jobs
    assert {p: p.stat().st_mtime_ns for p in jobs} == finished
    assert (proc.stdout + proc.stderr).count("already finished: skipped") == 6
    for path in jobs:
        record = json.loads(path.read_text())
        assert record["status"] == "ok", record
        lines = (path.parent / "predictions.csv").read_text().strip().splitlines()
        labelled = sum(1 for s in STAGES_A * 6 if s not in (6, 9))
        assert len(lines) - 1 == labelled == record["metrics"]["n_epochs"]  # every labelled epoch once, out of fold
        assert len(list((path.parent / "wandb").glob("offline-run-*"))) == 1, "one wandb run per job"
        if record["model"] == "classic":
            assert record["split"]["gap_epochs"] >= 10  # the feature windows never reach the test block

    out = tmp_path / "report"
    _run(["task=report", f"report.sweep_dir={sweep}", f"report.out_dir={out}", "study=none", "study.name=tiny",
          f"hydra.run.dir={tmp_path / 'report_run'}"], netlog=netlog)
    text = (out / "results.md").read_text()
    for client in CLIENTS:
        for model in ("base", "fm_finetune", "classic"):
            assert f"| {client} | {model} |" in text
    assert f"| {BAD_CLIENT} | base | failed | failed | failed |" in text  # the failure is named in the report
    assert "not in the mesa cache" in text.split("## Failed and missing jobs")[1]
    assert "Kappa" in text and "Wilcoxon" in text
    assert list((out / "figures").glob("hypnogram_*.png"))
    assert not netlog.exists(), f"the jobs tried to reach the network: {netlog.read_text()}"
    # Cross-dataset transfer: the MESA-format FM (ecg, hr, activity) serving an Apple Watch client (hr, activity)
    from tests.factories import make_sleep_accel_tree

    aw = make_sleep_accel_tree(tmp_path / "aw_raw")
    for sid in ("1000001", "1000002", "1000003"):  # 20-epoch nights are too short for folds: lengthen them
        path = aw / "labels" / f"{sid}_labeled_sleep.txt"
        stages = [line.split()[1] for line in path.read_text().splitlines()] * 6
        path.write_text("".join(f"{30 * i} {s}\n" for i, s in enumerate(stages)))
    transfer = tmp_path / "transfer"
    _run(["experiment=applewatch_from_mesa", f"dataset.root={aw}", f"dataset.cache_root={tmp_path / 'aw_cache'}",
          "progress=false", "n_jobs=1", "client=1000001", "model=fm_finetune", "study.clients=[1000001]",
          f"study.encoder_artifact={pre / 'encoder.pt'}", "trainer.max_epochs=2", "split.client.n_folds=2",
          "dataset.datamodule.batch_size=16", "dataset.preprocess.hr_max_gap_s=100000", f"hydra.run.dir={transfer}"])
    record = json.loads((transfer / "metrics.json").read_text())
    assert record["status"] == "ok" and record["dataset"] == "applewatch" and record["metrics"]["n_epochs"] > 0
