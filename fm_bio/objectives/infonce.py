"""Symmetric InfoNCE and the plain multimodal contrastive baseline (``loss=infonce``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as nnf

from fm_bio.objectives.common import ProjectionHead, check_modalities, modality_embeddings, run_groups

if TYPE_CHECKING:
    from fm_bio.models.encoders.base import EncoderOutput

__all__ = ["InfoNCEObjective", "info_nce"]


def info_nce(a: Tensor, b: Tensor, temperature: float, groups: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between two sets of paired embeddings.

    Rows are L2-normalised; ``s_ij = cos(a_i, b_j) / temperature``. Row ``i`` of ``a`` must pick its
    partner ``b_i`` among all rows of ``b`` (cross-entropy of ``softmax_j s_ij`` at ``j = i``) and vice
    versa (``softmax_i s_ij`` at ``i = j``); the loss is the mean of both directions, averaged over
    rows. For independent random embeddings it is about ``log(B)``; for ``a == b`` it approaches 0 as
    the temperature falls.

    Parameters
    ----------
    a, b : [B, d] paired embeddings (row ``i`` of ``a`` and of ``b`` are a positive pair).
    temperature : softmax temperature (> 0).
    groups : optional [B] integer ids; pairs ``(i, j)`` with ``i != j`` and the same id are left out of
        the softmax (not used as negatives), e.g. neighbouring epochs of one run of a night.

    Returns
    -------
    Scalar tensor.
    """
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"info_nce needs two [B, d] tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = a.shape[0]
    if n == 0:
        raise ValueError("info_nce got an empty batch")
    logits = nnf.normalize(a, dim=-1) @ nnf.normalize(b, dim=-1).T / temperature
    if groups is not None:
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape [{n}], got {tuple(groups.shape)}")
        eye = torch.eye(n, dtype=torch.bool, device=logits.device)
        excluded = (groups[:, None] == groups[None, :]) & ~eye
        logits = logits.masked_fill(excluded, float("-inf"))
    target = torch.arange(n, device=logits.device)
    return 0.5 * (nnf.cross_entropy(logits, target) + nnf.cross_entropy(logits.T, target))


class InfoNCEObjective(nn.Module):
    """Plain multimodal contrastive baseline (``loss=infonce``).

    One projection head per modality. Terms (each an unweighted, detached scalar for logging):

    - ``cross_modal``: :func:`info_nce` between the projections of every pair of modalities within each
      view, averaged over pairs and views (0 with one modality);
    - ``cross_view``: :func:`info_nce` between the two views of each modality, averaged over modalities;
    - ``loss`` = ``cross_modal_weight * cross_modal + cross_view_weight * cross_view`` (keeps the graph).

    Parameters
    ----------
    modalities : the modalities the encoder embeds; a view may hold a subset of them.
    embedding_dim : width D of the per-modality embeddings.
    proj_dim : projection width (default 64).
    temperature : InfoNCE temperature (default 0.2).
    cross_modal_weight, cross_view_weight : term weights (default 1.0 each).
    exclude_run_negatives : when ``seq_len`` is given, other epochs of the same run are not used as
        negatives (they are near-duplicates of the anchor); default True.
    head_hidden_dim : hidden width of the projection heads (default: ``embedding_dim``).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        embedding_dim: int,
        proj_dim: int = 64,
        temperature: float = 0.2,
        cross_modal_weight: float = 1.0,
        cross_view_weight: float = 1.0,
        exclude_run_negatives: bool = True,
        head_hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.modalities = check_modalities(modalities)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.cross_modal_weight = float(cross_modal_weight)
        self.cross_view_weight = float(cross_view_weight)
        self.exclude_run_negatives = bool(exclude_run_negatives)
        self.heads = nn.ModuleDict(
            {m: ProjectionHead(embedding_dim, proj_dim, head_hidden_dim) for m in self.modalities}
        )

    def forward(self, view1: EncoderOutput, view2: EncoderOutput, seq_len: int | None = None) -> dict[str, Tensor]:
        """Loss terms for two views; ``seq_len`` only groups runs for ``exclude_run_negatives``."""
        e1 = modality_embeddings(view1, self.modalities)
        e2 = modality_embeddings(view2, self.modalities)
        if not e1 or not e2:
            raise ValueError(f"a view holds none of the objective's modalities {self.modalities}")
        p1 = {m: self.heads[m](z) for m, z in e1.items()}
        p2 = {m: self.heads[m](z) for m, z in e2.items()}
        ref = next(iter(p1.values()))
        groups = run_groups(ref.shape[0], seq_len, ref.device) if self.exclude_run_negatives else None

        cross_modal = []
        for proj in (p1, p2):
            mods = list(proj)
            cross_modal += [
                info_nce(proj[m], proj[n], self.temperature, groups) for i, m in enumerate(mods) for n in mods[i + 1 :]
            ]
        cross_view = [info_nce(p1[m], p2[m], self.temperature, groups) for m in p1 if m in p2]
        if not cross_modal and not cross_view:
            raise ValueError(
                f"nothing to contrast: view 1 holds {list(p1)} and view 2 holds {list(p2)} (one modality each, "
                f"different); give both views the same modalities"
            )

        zero = ref.new_zeros(())
        t_modal = torch.stack(cross_modal).mean() if cross_modal else zero
        t_view = torch.stack(cross_view).mean() if cross_view else zero
        loss = self.cross_modal_weight * t_modal + self.cross_view_weight * t_view
        return {"cross_modal": t_modal.detach(), "cross_view": t_view.detach(), "loss": loss}
