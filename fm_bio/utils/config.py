"""OmegaConf resolvers used by the configs, and config helpers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def path_tag(path: str) -> str:
    """``<folder name>-<8 hex>`` for a dataset root, so caches of different roots never mix."""
    resolved = Path(str(path)).expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    return f"{resolved.name}-{digest}"


def gpus_per_node(accelerator: str, devices: Any) -> int:
    """GPUs a SLURM job asks for per node: the trainer's devices on a GPU trainer, none on a CPU one."""
    if str(accelerator) not in ("gpu", "cuda", "auto"):
        return 0
    return int(devices) if str(devices).lstrip("-").isdigit() and int(devices) > 0 else 1


def register_resolvers() -> None:
    """Register the ``fm_bio.*`` resolvers (idempotent)."""
    if not OmegaConf.has_resolver("fm_bio.path_tag"):
        OmegaConf.register_new_resolver("fm_bio.path_tag", path_tag)
    if not OmegaConf.has_resolver("fm_bio.gpus_per_node"):
        OmegaConf.register_new_resolver("fm_bio.gpus_per_node", gpus_per_node)


def conf_dir() -> Path:
    """The folder of the shipped Hydra configs (``fm_bio/conf``)."""
    return Path(__file__).resolve().parents[1] / "conf"


def to_plain(node: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (resolved); anything else unchanged."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


RUN_ONLY_KEYS = ("report", "progress", "n_jobs", "print_config", "strict", "paths", "hydra", "logger", "ckpt_path",
                 "skip_finished")
"""Top-level config keys that say where or how verbosely a job runs, not what it computes."""


def settings_hash(cfg: DictConfig, ignore: tuple[str, ...] = RUN_ONLY_KEYS, files: tuple[str | None, ...] = ()) -> str:
    """A short hash of the settings that decide a job's results: the config before interpolation, without
    the ``ignore`` keys, plus the size and modification time of each existing file in ``files`` (artifacts
    the job reads, so a retrained FM at the same path is not mistaken for the old one)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    kept = {k: v for k, v in plain.items() if k not in ignore}
    stamps = {}
    for name in files:
        if name and Path(name).is_file():
            st = Path(name).stat()
            stamps[str(name)] = [st.st_size, st.st_mtime_ns]
    text = json.dumps({"config": kept, "files": stamps}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
