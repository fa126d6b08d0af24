"""From raw files through `python -m fm_bio.run task=preprocess` to batches of the configured DataModule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
from hydra import compose, initialize_config_module

from fm_bio.utils.config import register_resolvers
from tests.factories import make_mesa_tree, make_sleep_accel_tree

REPO = Path(__file__).resolve().parents[1]


def _preprocess(dataset: str, raw: Path, cache_root: Path, run_dir: Path) -> None:
    cmd = [sys.executable, "-m", "fm_bio.run", "task=preprocess", f"dataset={dataset}", f"dataset.root={raw}",
           f"dataset.cache_root={cache_root}", "progress=false", f"hydra.run.dir={run_dir}"]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)


def _datamodule(dataset: str, cache_root: Path, overrides: list[str]):
    register_resolvers()
    with initialize_config_module(config_module="fm_bio.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"dataset={dataset}", f"dataset.cache_root={cache_root}",
                                                       "paths.root_dir=/nonexistent", *overrides])
    return hydra.utils.instantiate(cfg.dataset.datamodule)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mesa", "applewatch"])
def test_raw_to_batches(dataset, tmp_path):
    raw = make_mesa_tree(tmp_path / "raw", 3) if dataset == "mesa" else make_sleep_accel_tree(tmp_path / "raw")
    cache_root = tmp_path / "cache"
    _preprocess(dataset, raw, cache_root, tmp_path / "run")
    assert (tmp_path / "run" / "preprocess_report.json").exists()
    assert (tmp_path / "run" / "preprocess.log").exists()

    dm = _datamodule(dataset, cache_root, ["dataset.datamodule.context_epochs=2"])
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape[1:] == (5, 30)
    if dataset == "mesa":
        assert batch["ecg"].shape[1:] == (5, 7680) and batch["activity"].shape[1:] == (5, 1)
    assert (batch["label"] >= 0).all()
    assert set(dm.subject_split.train).isdisjoint(dm.subject_split.val)

    client = dm.subjects[0]
    cdm = _datamodule(dataset, cache_root, [f"client={client}", "dataset.datamodule.context_epochs=1", "split.client.n_folds=2"])
    cdm.setup()
    test_rows = np.concatenate([b["epoch_index"].numpy() for b in cdm.test_dataloader()])
    train_rows = np.concatenate([b["epoch_index"].numpy() for b in cdm.train_dataloader()])
    assert len(test_rows) and len(train_rows)
    assert np.min(np.abs(train_rows[:, None] - test_rows[None, :])) > 1  # the context gap holds
