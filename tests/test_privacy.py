"""Nothing identifying reaches wandb by default: subject ids are pseudonymised, local paths dropped."""

from __future__ import annotations

import json

from hydra import compose, initialize_config_module

from fm_bio.training.loggers import plain_config, subject_label
from fm_bio.utils.config import register_resolvers

CLIENT = "7391046"  # distinctive, so a leak is found by a plain text search


def _compose(overrides):
    register_resolvers()
    with initialize_config_module(config_module="fm_bio.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _cfg(tmp_path, *extra):
    cfg = _compose(["experiment=applewatch_from_mesa", f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'job'}",
                    f"client='{CLIENT}'", f"study.clients=['{CLIENT}','1234567']", *extra])
    return cfg


def test_subject_labels_are_stable_keyed_and_distinct(tmp_path):
    cfg = _cfg(tmp_path)
    a, b = subject_label(CLIENT, cfg), subject_label("1234567", cfg)
    assert a.startswith("subj-") and a != b and a == subject_label(CLIENT, cfg)
    assert CLIENT not in a
    other = _cfg(tmp_path / "elsewhere")  # another log folder has another key
    assert subject_label(CLIENT, other) != a
    assert subject_label(CLIENT, _cfg(tmp_path, "logger.wandb.subject_ids=raw")) == CLIENT


def test_logged_config_has_no_subject_ids_or_local_paths(tmp_path):
    text = json.dumps(plain_config(_cfg(tmp_path)))
    assert CLIENT not in text and "1234567" not in text
    assert str(tmp_path) not in text and "sleep-accel" not in text
    assert subject_label(CLIENT, _cfg(tmp_path)) in text


def test_wandb_offline_run_files_hold_no_subject_id(tmp_path):
    from fm_bio.tasks.finetune import log_job_to_wandb

    cfg = _cfg(tmp_path)
    record = {"client": CLIENT, "model": "base", "seed": 42,
              "metrics": {"accuracy": 0.5, "macro_f1": 0.4, "kappa": 0.3, "n_epochs": 10,
                          "confusion": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]},
              "folds": [{"fold": 0, "n_test": 10, "accuracy": 0.5}]}
    log_job_to_wandb(cfg, record)
    files = [p for p in (tmp_path / "job").rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files), "no offline wandb run was written"
    for path in files:
        assert CLIENT.encode() not in path.read_bytes(), f"{path} holds the raw subject id"
