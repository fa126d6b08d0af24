"""Every config composes; the entry point's groups are there; the package ships its configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from fm_bio.utils.config import register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
REQUIRED_GROUPS = ["dataset", "split", "encoder", "loss", "model", "trainer", "logger", "paths", "experiment", "debug"]


def _compose(overrides: list[str]):
    register_resolvers()
    with initialize_config_module(config_module="fm_bio.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_required_groups_exist():
    for group in REQUIRED_GROUPS:
        assert (CONF / group).is_dir() and list((CONF / group).glob("*.yaml")), group


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    cfg = _compose([f"experiment={experiment}", f"hydra.run.dir={tmp_path}", f"paths.root_dir={tmp_path}"])
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.resolve(job)  # every interpolation resolves
    assert job.task and job.dataset.cache_root.startswith(str(tmp_path))


@pytest.mark.parametrize("group", ["dataset", "split", "trainer", "logger", "debug"])
def test_every_option_of_a_group_composes(group, tmp_path):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_")):
        cfg = _compose([f"{group}={option}", f"paths.root_dir={tmp_path}"])
        assert cfg is not None


def test_cache_roots_of_different_data_roots_differ(tmp_path):
    a = _compose(["dataset=mesa", f"paths.root_dir={tmp_path}"])
    b = _compose(["dataset=mesa", f"paths.root_dir={tmp_path}", "dataset.root=/elsewhere/mesa"])
    assert a.dataset.cache_root != b.dataset.cache_root
