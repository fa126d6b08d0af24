"""Self-supervised objectives: FOCAL, the plain InfoNCE baseline and the subject adversary.

Both objectives share ``forward(view1, view2, seq_len=None) -> dict[str, Tensor]`` with key ``loss``;
build them by name with :func:`build_objective`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from fm_bio.objectives.adversary import SubjectAdversary, grad_reverse, warmup_weight
from fm_bio.objectives.focal import FocalObjective, orthogonality_loss, temporal_ranking_loss
from fm_bio.objectives.infonce import InfoNCEObjective, info_nce

__all__ = [
    "OBJECTIVES",
    "FocalObjective",
    "InfoNCEObjective",
    "SubjectAdversary",
    "build_objective",
    "grad_reverse",
    "info_nce",
    "orthogonality_loss",
    "temporal_ranking_loss",
    "warmup_weight",
]

OBJECTIVES: dict[str, type[nn.Module]] = {"focal": FocalObjective, "infonce": InfoNCEObjective}
"""Objective name (``conf/loss/*.yaml`` ``objective.name``) -> class."""


def build_objective(name: str, modalities: Sequence[str], embedding_dim: int, **params: Any) -> nn.Module:
    """Build the objective ``name`` (``focal`` | ``infonce``) for ``modalities`` and embedding width D.

    ``params`` are the class's keyword arguments (e.g. ``temperature``); an unknown one is an error
    that lists the accepted ones.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; options: {sorted(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "modalities", "embedding_dim")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"objective {name!r} got unknown parameters {unknown}; accepted: {accepted}")
    return cls(modalities, embedding_dim, **params)
