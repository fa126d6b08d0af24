"""The exported encoder artifact: weights + the resolved encoder/modality config, loaded safely by path.

An artifact is one ``torch.save`` file holding only tensors and plain Python types, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs). Downstream tasks build the encoder from the
stored config and load the weights.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from fm_bio import __version__

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = 1


def export_encoder(encoder: torch.nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``encoder``'s weights and ``encoder.config()`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": ARTIFACT_FORMAT,
        "fm_bio_version": __version__,
        "encoder_config": encoder.config(),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "extra": extra or {},
    }
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_artifact(path: str | Path) -> dict[str, Any]:
    """The artifact's payload (``weights_only`` load); a clear error when missing or not an artifact."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"encoder artifact {path} not found; run `python -m fm_bio.run experiment=pretrain_mesa` "
                                f"and pass the `encoder.pt` of its run folder")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{path} is not an fm-bio encoder artifact (format {ARTIFACT_FORMAT})")
    return payload


def load_encoder(path: str | Path) -> torch.nn.Module:
    """Rebuild the encoder stored at ``path`` with its weights (in eval mode)."""
    from fm_bio.models.encoders import build_encoder

    payload = read_artifact(path)
    encoder = build_encoder(**payload["encoder_config"])
    encoder.load_state_dict(payload["state_dict"])
    encoder.eval()
    return encoder
