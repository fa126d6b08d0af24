"""OmegaConf resolvers used by the configs, and config helpers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def path_tag(path: str) -> str:
    """``<folder name>-<8 hex>`` for a dataset root, so caches of different roots never mix."""
    resolved = Path(str(path)).expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    return f"{resolved.name}-{digest}"


def register_resolvers() -> None:
    """Register the ``fm_bio.*`` resolvers (idempotent)."""
    if not OmegaConf.has_resolver("fm_bio.path_tag"):
        OmegaConf.register_new_resolver("fm_bio.path_tag", path_tag)


def conf_dir() -> Path:
    """The folder of the shipped Hydra configs (``fm_bio/conf``)."""
    return Path(__file__).resolve().parents[1] / "conf"


def to_plain(node: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (resolved); anything else unchanged."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node
