"""Patch-Transformer encoder: per modality a ViT-style Transformer over patches of the signal.

Context window: a branch treats the ``L`` epochs of a window as one series of ``n = L * T`` samples
(missing neighbours are zeros in the batch and pass through). The series is cut into
``n_tokens = ceil(n / patch_len)`` non-overlapping patches with ``patch_len = ceil(n / max_tokens)``
(zero-padded at the end), so the token count never exceeds ``max_tokens`` (ecg 7680 samples ->
64 patches of 120 samples = 0.47 s; hr 30 -> 30 tokens of 1 s; activity 1 -> 1 token). Each patch is
embedded linearly, a learned positional embedding is added, a CLS token is prepended (``pool="cls"``)
and ``n_layers`` pre-norm Transformer layers follow; the CLS output (or the mean over patch tokens,
``pool="mean"``) goes through a final LayerNorm and an MLP projector to ``embedding_dim``.

Unlike the DeepSense branches, the patch embedding and the positional embedding depend on ``(L, T)``:
weights transfer only between encoders built for the same shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from fm_bio.models.encoders.base import MultimodalEncoder, check_fraction, check_positive_int

__all__ = ["POOLING_OPTIONS", "PatchTransformerBranch", "TransformerEncoder"]

POOLING_OPTIONS = ("cls", "mean")


class PatchTransformerBranch(nn.Module):
    """One modality: ``[B, L, T]`` -> ``[B, embedding_dim]`` (parameters: see :class:`TransformerEncoder`)."""

    def __init__(
        self,
        input_shape: tuple[int, int],
        d_model: int,
        n_heads: int,
        n_layers: int,
        ff_mult: int,
        max_tokens: int,
        embedding_dim: int,
        dropout: float,
        pool: str,
    ) -> None:
        super().__init__()
        L, T = input_shape
        n = L * T
        self.n_samples = n
        self.patch_len = -(-n // max_tokens)
        self.n_tokens = -(-n // self.patch_len)
        self.pad = self.n_tokens * self.patch_len - n
        self.pool = pool
        self.patch_embed = nn.Linear(self.patch_len, d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model)) if pool == "cls" else None
        n_positions = self.n_tokens + (1 if pool == "cls" else 0)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_positions, d_model))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=ff_mult * d_model,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.projector = nn.Sequential(
            nn.Linear(d_model, d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(d_model, embedding_dim),
        )

    def describe(self) -> str:
        """The derived sizes: patch length and token count."""
        return f"{self.n_samples} samples -> {self.n_tokens} tokens of {self.patch_len} samples ({self.pool})"

    def forward(self, x: Tensor) -> Tensor:
        """``x`` float [B, L, T] -> embedding [B, embedding_dim]."""
        B = x.shape[0]
        series = x.reshape(B, -1)
        if self.pad:
            series = nn.functional.pad(series, (0, self.pad))
        tokens = self.patch_embed(series.reshape(B, self.n_tokens, self.patch_len))  # [B, N, d]
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)
        h = self.transformer(self.dropout(tokens + self.pos_embed))
        pooled = h[:, 0] if self.cls_token is not None else h.mean(dim=1)
        return self.projector(self.norm(pooled))


class TransformerEncoder(MultimodalEncoder):
    """Multimodal patch-Transformer encoder (see the module docstring).

    Parameters
    ----------
    modality_shapes : ``{modality: (L, T)}`` (epochs per context window, samples per epoch).
    d_model : token width.
    n_heads : attention heads (must divide ``d_model``).
    n_layers : pre-norm Transformer encoder layers.
    ff_mult : feed-forward width as a multiple of ``d_model``.
    max_tokens : upper bound on patch tokens per modality; sets the patch length.
    embedding_dim : D, the size of every modality's embedding and of the fused one.
    dropout : dropout on tokens, in attention / feed-forward and in the projector.
    pool : ``"cls"`` (a learned CLS token) or ``"mean"`` (mean over the patch tokens).
    """

    name = "transformer"

    def __init__(
        self,
        modality_shapes: Mapping[str, Sequence[int]],
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        ff_mult: int = 2,
        max_tokens: int = 64,
        embedding_dim: int = 64,
        dropout: float = 0.1,
        pool: str = "cls",
    ) -> None:
        super().__init__(modality_shapes, embedding_dim)
        d_model = check_positive_int("d_model", d_model)
        n_heads = check_positive_int("n_heads", n_heads)
        if d_model % n_heads:
            raise ValueError(
                f"d_model={d_model} is not divisible by n_heads={n_heads}; pick n_heads among the "
                f"divisors of d_model (e.g. {[h for h in (1, 2, 4, 8, 16) if d_model % h == 0]})"
            )
        if pool not in POOLING_OPTIONS:
            raise ValueError(f"pool={pool!r}; options: {list(POOLING_OPTIONS)}")
        self._hparams = {
            "d_model": d_model,
            "n_heads": n_heads,
            "n_layers": check_positive_int("n_layers", n_layers),
            "ff_mult": check_positive_int("ff_mult", ff_mult),
            "max_tokens": check_positive_int("max_tokens", max_tokens),
            "embedding_dim": self.embedding_dim,
            "dropout": check_fraction("dropout", dropout),
            "pool": str(pool),
        }
        self.branches = nn.ModuleDict(
            {m: PatchTransformerBranch(shape, **self._hparams) for m, shape in self.input_shapes.items()}
        )
        self._log_built()
