"""Loggers from the ``logger`` config group: CSV always when configured, wandb offline unless turned on.

wandb pitfalls handled here: the mode is set per run (never by changing ``WANDB_MODE`` mid-process),
and every job finishes its run (:func:`finish_loggers`), so Hydra multirun jobs never log into one run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig, run_name: str, tags: list[str] | None = None) -> list[Logger]:
    """CSV and/or wandb loggers as configured in ``cfg.logger``."""
    loggers: list[Logger] = []
    lcfg = cfg.get("logger") or {}
    if "csv" in lcfg:
        loggers.append(CSVLogger(save_dir=lcfg.csv.save_dir, name=lcfg.csv.name, version=""))
    if "wandb" in lcfg and "project" in lcfg.wandb:
        w = OmegaConf.to_container(lcfg.wandb, resolve=True)
        assert isinstance(w, dict)
        Path(w["save_dir"]).mkdir(parents=True, exist_ok=True)
        loggers.append(WandbLogger(
            project=w["project"], mode=w["mode"], save_dir=w["save_dir"], group=w.get("group"),
            tags=[*(w.get("tags") or []), *(tags or [])], name=run_name, job_type=str(cfg.task),
            config=plain_config(cfg),
        ))
    return loggers


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The job config as plain types for logging (no paths to raw data, no subject lists)."""
    out = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(out, dict)
    dataset = out.get("dataset", {})
    for key in ("root", "cache_root", "subjects", "demo"):
        dataset.pop(key, None)
    return out


def finish_loggers(loggers: list[Logger]) -> None:
    """Flush every logger and finish wandb runs (call in a ``finally``)."""
    for lg in loggers:
        try:
            lg.finalize("success")
        except Exception as err:  # finishing must never hide the job's own error
            log.warning("logger %s did not finalise: %s", type(lg).__name__, err)
        if isinstance(lg, WandbLogger):
            import wandb

            if wandb.run is not None:
                wandb.finish()
