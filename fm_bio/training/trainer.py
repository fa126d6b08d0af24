"""Building the Lightning Trainer from the ``trainer`` config group, and the shared run set-up."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def quiet_known_warnings() -> None:
    """Silence warnings that are known and harmless on this stack (see shared/docs/pitfalls.md)."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")


def build_trainer(cfg: DictConfig, output_dir: Path, loggers: list, callbacks: list, **overrides: Any) -> pl.Trainer:
    """A Trainer with the ``trainer`` group's arguments, writing into ``output_dir``."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    kwargs.update(overrides)
    return pl.Trainer(default_root_dir=str(output_dir), logger=loggers or False, callbacks=callbacks, **kwargs)
