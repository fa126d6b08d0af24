"""Building the Lightning Trainer from the ``trainer`` config group, and the shared run set-up."""

from __future__ import annotations

import logging
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def quiet_known_warnings() -> None:
    """Silence warnings that are known and harmless on this stack (see shared/docs/pitfalls.md)."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")


def process_rank() -> int:
    """This process's global rank as the launchers announce it (RANK, SLURM_PROCID, LOCAL_RANK...); 0 alone."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def build_trainer(cfg: DictConfig, output_dir: Path, loggers: list, callbacks: list, **overrides: Any) -> pl.Trainer:
    """A Trainer with the ``trainer`` group's arguments, writing into ``output_dir``."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    kwargs.update(overrides)
    return pl.Trainer(default_root_dir=str(output_dir), logger=loggers or False, callbacks=callbacks, **kwargs)


class RngStateCheckpoint(pl.Callback):
    """Saves the global random states (python, numpy, torch) in every checkpoint and restores them when a
    run resumes from one (``ckpt_path=last``), so augmentations and dropout after the resumption draw the
    same numbers as an uninterrupted run. Stored as plain lists and tensors (loads with ``weights_only``)."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        py_version, py_state, py_gauss = random.getstate()
        return {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
                "python": [py_version, list(py_state), py_gauss]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        py_version, py_state, py_gauss = state_dict["python"]
        random.setstate((py_version, tuple(py_state), py_gauss))
        log.info("random states restored from the checkpoint")
