"""The single entry point: ``python -m fm_bio.run [task=<name>] [experiment=<name>] [overrides...]``.

``task`` chooses the job (see :data:`fm_bio.tasks.TASKS`); Hydra composes the config from ``conf/``
(shipped inside the package as ``fm_bio.conf``). Outputs go to a per-run folder under ``outputs/``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from fm_bio.utils.config import register_resolvers

log = logging.getLogger("fm_bio.run")
register_resolvers()

CONFIG_PATH = "pkg://fm_bio.conf"


def run_task(cfg: DictConfig) -> dict[str, Any]:
    """Run the task named by ``cfg.task`` and return its summary (written to ``summary.json``)."""
    from fm_bio.tasks import TASKS

    if cfg.task not in TASKS:
        raise SystemExit(f"unknown task {cfg.task!r}; available: {sorted(TASKS)}")
    os.environ.setdefault("WANDB_SILENT", "true")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log.info("task=%s  output folder: %s", cfg.task, out)
    summary = TASKS[cfg.task](cfg)
    from fm_bio.training.trainer import process_rank

    if process_rank() == 0:  # DDP: one summary, by rank 0
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    if cfg.get("print_config"):
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=False))
    run_task(cfg)


if __name__ == "__main__":
    main()
