"""Pieces shared by the objectives: projection heads, reading an encoder output, zero terms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # the encoders are written separately; only duck typing is needed at run time
    from fm_bio.models.encoders.base import EncoderOutput  # noqa: F401

__all__ = ["ProjectionHead", "check_modalities", "modality_embeddings", "run_groups"]


class ProjectionHead(nn.Module):
    """Two-layer MLP projection head (SimCLR style): ``Linear(D, H) -> ReLU -> Linear(H, proj_dim)``.

    Parameters
    ----------
    embedding_dim : D, the width of the encoder's per-modality embedding.
    proj_dim : width of the projection the loss sees.
    hidden_dim : H (default: D).
    """

    def __init__(self, embedding_dim: int, proj_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        if embedding_dim < 1 or proj_dim < 1:
            raise ValueError(f"embedding_dim={embedding_dim} and proj_dim={proj_dim} must be >= 1")
        hidden = int(hidden_dim or embedding_dim)
        self.net = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.ReLU(), nn.Linear(hidden, proj_dim))

    def forward(self, x: Tensor) -> Tensor:
        """Project ``x`` [B, D] to [B, proj_dim]."""
        return self.net(x)


def check_modalities(modalities: Sequence[str]) -> list[str]:
    """Validate an objective's modality list (non-empty, unique names); return it as a list."""
    mods = [str(m) for m in modalities]
    if not mods:
        raise ValueError("an objective needs at least one modality, got an empty list")
    if len(set(mods)) != len(mods):
        raise ValueError(f"modalities must be unique, got {mods}")
    return mods


def modality_embeddings(view: EncoderOutput | Mapping[str, Tensor] | Any, known: Sequence[str]) -> dict[str, Tensor]:
    """The per-modality embeddings [B, D] of one view, in the order of ``known``, missing ones skipped.

    ``view`` is an ``EncoderOutput`` (anything with a ``per_modality`` mapping) or that mapping itself.
    A modality the objective was not built for is an error (a configuration mismatch, not data).
    """
    per_modality = getattr(view, "per_modality", view)
    if not isinstance(per_modality, Mapping):
        raise TypeError(
            f"expected an EncoderOutput (with .per_modality) or a dict of modality -> [B, D] tensors, "
            f"got {type(view).__name__}"
        )
    unknown = sorted(set(per_modality) - set(known))
    if unknown:
        raise ValueError(
            f"encoder output has modalities {unknown} that the objective was not built for "
            f"(it knows {list(known)}); build the objective with the encoder's modality list"
        )
    out: dict[str, Tensor] = {}
    for m in known:
        if m in per_modality and per_modality[m] is not None:
            z = per_modality[m]
            if z.dim() != 2:
                raise ValueError(f"embedding of modality {m!r} must be [B, D], got shape {tuple(z.shape)}")
            out[m] = z
    return out


def run_groups(batch_size: int, seq_len: int | None, device: torch.device) -> Tensor | None:
    """Run id of every row when the batch is runs of ``seq_len`` consecutive epochs (None otherwise).

    Row ``i`` belongs to run ``i // seq_len``. ``batch_size`` must be a multiple of ``seq_len``.
    """
    if seq_len is None or seq_len < 2:
        return None
    if batch_size % seq_len:
        raise ValueError(
            f"batch of {batch_size} rows is not a whole number of runs of seq_len={seq_len}; use "
            f"ConsecutiveEpochSampler(drop_last=True) or pass seq_len=None"
        )
    return torch.arange(batch_size, device=device) // seq_len
