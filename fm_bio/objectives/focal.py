"""FOCAL-style multimodal contrastive objective (Liu et al., NeurIPS 2023) for epochs of one night.

FOCAL factorises each modality's embedding into a *shared* part (what the modalities have in common,
aligned across modalities) and a *private* part (what only this modality sees, aligned across the two
augmented views of the same modality), keeps the parts apart with an orthogonality penalty and adds a
temporal-consistency constraint over sequences of samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as nnf

from fm_bio.objectives.common import ProjectionHead, check_modalities, modality_embeddings, run_groups
from fm_bio.objectives.infonce import info_nce

if TYPE_CHECKING:
    from fm_bio.models.encoders.base import EncoderOutput

__all__ = ["ORTHOGONALITY_FORMS", "FocalObjective", "orthogonality_loss", "temporal_ranking_loss"]

ORTHOGONALITY_FORMS = ("cos2", "focal_original")
"""Forms of :func:`orthogonality_loss`."""


def orthogonality_loss(x: Tensor, y: Tensor, form: str = "cos2") -> Tensor:
    """Penalty that pushes paired rows of ``x`` and ``y`` [..., d] to be orthogonal.

    With ``c`` the cosine similarity of each pair of rows:

    - ``cos2``: ``mean(c^2)``; zero only when ``c = 0``, so it drives the cosine to 0 from either side;
    - ``focal_original``: ``mean(max(0, c))``, FOCAL's ``CosineEmbeddingLoss`` with target -1 and margin
      0. It only pushes positive cosines down; anti-parallel pairs (``c = -1``) cost nothing.

    Returns a scalar tensor.
    """
    if x.shape != y.shape or x.dim() < 1:
        raise ValueError(f"orthogonality_loss needs two tensors of the same shape [..., d], got {tuple(x.shape)} and {tuple(y.shape)}")
    c = nnf.cosine_similarity(x, y, dim=-1, eps=1e-8)
    if form == "cos2":
        return c.pow(2).mean()
    if form == "focal_original":
        return c.clamp_min(0).mean()
    raise ValueError(f"unknown orthogonality form {form!r}; options: {ORTHOGONALITY_FORMS}")


def temporal_ranking_loss(z: Tensor, seq_len: int | None, margin: float = 0.1) -> Tensor:
    """Temporal-consistency ranking loss over runs of consecutive epochs.

    The batch ``z`` [B, d] is ``R = B / seq_len`` runs; rows ``r * seq_len .. r * seq_len + seq_len - 1``
    are consecutive epochs of one night in time order. With ``d(i, j) = 1 - cos(z_i, z_j)`` inside a
    run, every anchor ``i``, temporal neighbour ``k`` (``|i - k| = 1``) and farther epoch ``j``
    (``|i - j| >= 2``) gives the hinge ``max(0, d(i, k) - d(i, j) + margin)``: a neighbour must be closer
    than a farther epoch by ``margin``. The loss is the mean hinge over all such triples of all runs
    (computed at once, [R, S, S, S]). For ``seq_len`` None or < 3 there is no farther epoch: returns 0.
    """
    zero = z.new_zeros(())
    if seq_len is None or seq_len < 3:
        return zero
    if z.dim() != 2:
        raise ValueError(f"temporal_ranking_loss needs [B, d] embeddings, got shape {tuple(z.shape)}")
    n = z.shape[0]
    if n % seq_len:
        raise ValueError(
            f"batch of {n} rows is not a whole number of runs of seq_len={seq_len}; use "
            f"ConsecutiveEpochSampler(drop_last=True) or pass seq_len=None"
        )
    u = nnf.normalize(z, dim=-1).reshape(n // seq_len, seq_len, -1)
    dist = 1.0 - u @ u.transpose(1, 2)  # [R, S, S]
    t = torch.arange(seq_len, device=z.device)
    gap = (t[:, None] - t[None, :]).abs()
    triples = (gap == 1)[:, :, None] & (gap >= 2)[:, None, :]  # [i, k, j]
    hinge = nnf.relu(dist[:, :, :, None] - dist[:, :, None, :] + margin)  # [R, i, k, j]
    return hinge[:, triples].mean()


class FocalObjective(nn.Module):
    """FOCAL-style objective: shared/private projections, orthogonality, temporal consistency.

    Each modality's embedding goes through two projection heads, ``shared`` and ``private``
    (``Linear(D, D) -> ReLU -> Linear(D, proj_dim)``). Terms, each an unweighted detached scalar for
    logging:

    - ``shared``: :func:`~fm_bio.objectives.infonce.info_nce` between the shared projections of every
      pair of modalities in each view, averaged over pairs and views (0 with one modality);
    - ``private``: InfoNCE between the private projections of the two views of each modality, averaged
      over modalities;
    - ``orthogonality``: :func:`orthogonality_loss` between each modality's shared and private
      projections and between the private projections of every pair of modalities (same sample, same
      view), averaged over all these pairs and both views;
    - ``temporal``: :func:`temporal_ranking_loss` on the SHARED projections of each modality and view
      (averaged) when ``seq_len >= 3``; 0 otherwise. (FOCAL's own code ranks the average distance
      within a sequence against that between sequences; this within-run ranking asks more: nearer in
      time is more similar.)
    - ``loss`` = ``shared_weight * shared + private_weight * private + orthogonality_weight *
      orthogonality + temporal_weight * temporal`` (keeps the graph).

    With ``seq_len`` given and ``exclude_run_negatives`` on, other epochs of the anchor's run are not
    InfoNCE negatives (they are near-duplicates; FOCAL likewise contrasts only across sequences).

    Parameters
    ----------
    modalities : the modalities the encoder embeds; a view may hold a subset (missing ones are skipped).
    embedding_dim : width D of the per-modality embeddings.
    proj_dim : projection width (default 64).
    temperature : InfoNCE temperature (default 0.2).
    shared_weight, private_weight, orthogonality_weight : term weights (default 1.0 each).
    orthogonality : ``cos2`` (default; mean cos^2) or ``focal_original`` (mean max(0, cos)).
    temporal_weight : weight of the temporal term (default 0.1).
    temporal_margin : margin of the ranking hinge in cosine distance (range 0..2; default 0.1).
    exclude_run_negatives : see above (default True).
    head_hidden_dim : hidden width of the projection heads (default: ``embedding_dim``).

    Defaults match ``conf/loss/focal.yaml``.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        embedding_dim: int,
        proj_dim: int = 64,
        temperature: float = 0.2,
        shared_weight: float = 1.0,
        private_weight: float = 1.0,
        orthogonality_weight: float = 1.0,
        orthogonality: str = "cos2",
        temporal_weight: float = 0.1,
        temporal_margin: float = 0.1,
        exclude_run_negatives: bool = True,
        head_hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.modalities = check_modalities(modalities)
        if orthogonality not in ORTHOGONALITY_FORMS:
            raise ValueError(f"unknown orthogonality form {orthogonality!r}; options: {ORTHOGONALITY_FORMS}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if temporal_margin < 0:
            raise ValueError(f"temporal_margin must be >= 0, got {temporal_margin}")
        self.temperature = float(temperature)
        self.shared_weight = float(shared_weight)
        self.private_weight = float(private_weight)
        self.orthogonality_weight = float(orthogonality_weight)
        self.orthogonality = orthogonality
        self.temporal_weight = float(temporal_weight)
        self.temporal_margin = float(temporal_margin)
        self.exclude_run_negatives = bool(exclude_run_negatives)
        self.shared_heads = nn.ModuleDict(
            {m: ProjectionHead(embedding_dim, proj_dim, head_hidden_dim) for m in self.modalities}
        )
        self.private_heads = nn.ModuleDict(
            {m: ProjectionHead(embedding_dim, proj_dim, head_hidden_dim) for m in self.modalities}
        )

    def project(self, view: EncoderOutput) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Shared and private projections [B, proj_dim] of the modalities present in ``view``."""
        emb = modality_embeddings(view, self.modalities)
        if not emb:
            raise ValueError(f"a view holds none of the objective's modalities {self.modalities}")
        shared = {m: self.shared_heads[m](z) for m, z in emb.items()}
        private = {m: self.private_heads[m](z) for m, z in emb.items()}
        return shared, private

    def forward(self, view1: EncoderOutput, view2: EncoderOutput, seq_len: int | None = None) -> dict[str, Tensor]:
        """Loss terms for two augmented views of the same batch (see the class docstring)."""
        s1, q1 = self.project(view1)
        s2, q2 = self.project(view2)
        ref = next(iter(s1.values()))
        groups = run_groups(ref.shape[0], seq_len, ref.device) if self.exclude_run_negatives else None
        tau, form = self.temperature, self.orthogonality

        shared, ortho, temporal = [], [], []
        for s, q in ((s1, q1), (s2, q2)):
            mods = list(s)
            for i, m in enumerate(mods):
                ortho.append(orthogonality_loss(s[m], q[m], form))
                for n in mods[i + 1 :]:
                    shared.append(info_nce(s[m], s[n], tau, groups))
                    ortho.append(orthogonality_loss(q[m], q[n], form))
                if seq_len is not None and seq_len >= 3:
                    temporal.append(temporal_ranking_loss(s[m], seq_len, self.temporal_margin))
        private = [info_nce(q1[m], q2[m], tau, groups) for m in q1 if m in q2]

        zero = ref.new_zeros(())
        terms = {
            "shared": torch.stack(shared).mean() if shared else zero,
            "private": torch.stack(private).mean() if private else zero,
            "orthogonality": torch.stack(ortho).mean(),
            "temporal": torch.stack(temporal).mean() if temporal else zero,
        }
        loss = (
            self.shared_weight * terms["shared"]
            + self.private_weight * terms["private"]
            + self.orthogonality_weight * terms["orthogonality"]
            + self.temporal_weight * terms["temporal"]
        )
        out = {k: v.detach() for k, v in terms.items()}
        out["loss"] = loss
        return out
