"""DeepSense-style encoder (the FMBIO prototype's design): per modality Conv1d + ReLU + BatchNorm1d
layers, a GRU over the resulting time steps, and an MLP projector to the embedding.

Context window: a branch treats the ``L`` epochs of a window as one series of ``L * T`` samples
(missing neighbours are already zeros in the batch, so they pass through transparently). The
down-sampling is derived from that length (:func:`plan_downsampling`): layer ``i`` reduces the series
by a factor chosen so that the GRU sees at most ``max_gru_steps`` steps (ecg 7680 samples -> 62 steps
with the defaults; hr 30 -> 30; activity 1 -> 1: short inputs are never strided). A layer realises
its factor as a convolution with stride <= ``conv_kernel`` (so every sample is seen), followed by a
max-pool when the factor exceeds the kernel (long context windows). The parameter shapes therefore
depend only on the hyperparameters, never on ``(L, T)``: weights transfer between context lengths.

The GRU's outputs are averaged over time (as in DeepSense) and projected to ``embedding_dim``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from fm_bio.models.encoders.base import MultimodalEncoder, check_fraction, check_positive_int

__all__ = ["DeepSenseBranch", "DeepSenseEncoder", "DeepSensePaperEncoder", "plan_downsampling"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def plan_downsampling(n_samples: int, n_layers: int, max_steps: int, kernel: int) -> list[tuple[int, int]]:
    """Per-layer ``(conv_stride, pool)`` so that ``n_samples`` end as at most ``max_steps`` steps.

    The total reduction needed is spread evenly (geometrically) over the layers. A layer's factor
    ``r`` is realised as a conv stride ``<= kernel`` (so the convolution sees every sample) times a
    max-pool: ``pool = ceil(r / kernel)``, ``stride = ceil(r / pool)``. A layer maps length ``n`` to
    ``ceil(ceil(n / stride) / pool)``; the last layer takes whatever is still needed, so the bound
    always holds. Inputs already short enough get ``(1, 1)`` everywhere (no striding).
    """
    plan: list[tuple[int, int]] = []
    n = n_samples
    for i in range(n_layers):
        need = _ceil_div(n, max_steps)
        remaining = n_layers - i
        factor = need if remaining == 1 else max(1, round(need ** (1.0 / remaining)))
        pool = _ceil_div(factor, kernel)
        stride = _ceil_div(factor, pool)
        plan.append((int(stride), int(pool)))
        n = _ceil_div(_ceil_div(n, stride), pool)
    return plan


class _BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that tolerates one value per channel in training (batch of 1, length 1): batch
    statistics are undefined there, so it normalises with the running statistics (without updating
    them) instead of raising."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] * x.shape[-1] <= 1:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
            )
        return super().forward(x)


class DeepSenseBranch(nn.Module):
    """One modality: ``[B, L, T]`` -> ``[B, embedding_dim]`` (parameters: see :class:`DeepSenseEncoder`)."""

    def __init__(
        self,
        input_shape: tuple[int, int],
        conv_channels: int,
        conv_layers: int,
        conv_kernel: int,
        gru_hidden: int,
        gru_layers: int,
        embedding_dim: int,
        dropout: float,
        max_gru_steps: int,
    ) -> None:
        super().__init__()
        L, T = input_shape
        n = L * T
        self.n_samples = n
        self.downsampling = plan_downsampling(n, conv_layers, max_gru_steps, conv_kernel)
        layers: list[nn.Module] = []
        in_channels = 1
        for stride, pool in self.downsampling:
            layers += [
                nn.Conv1d(in_channels, conv_channels, conv_kernel, stride=stride, padding=conv_kernel // 2),
                nn.ReLU(),
                _BatchNorm1d(conv_channels),
            ]
            n = _ceil_div(n, stride)  # odd kernel, padding k // 2: output length ceil(n / stride)
            if pool > 1:
                layers.append(nn.MaxPool1d(pool, stride=pool, ceil_mode=True))
                n = _ceil_div(n, pool)
            in_channels = conv_channels
        self.n_steps = n
        self.conv = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            conv_channels,
            gru_hidden,
            num_layers=gru_layers,
            batch_first=True,
            dropout=dropout if gru_layers > 1 else 0.0,
        )
        self.projector = nn.Sequential(
            nn.Linear(gru_hidden, gru_hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(gru_hidden, embedding_dim),
        )

    def describe(self) -> str:
        """The derived sizes: (conv stride, max-pool) per layer and GRU steps."""
        return f"{self.n_samples} samples, (stride, pool) {self.downsampling} -> {self.n_steps} GRU steps"

    def forward(self, x: Tensor) -> Tensor:
        """``x`` float [B, L, T] -> embedding [B, embedding_dim]."""
        h = self.conv(x.reshape(x.shape[0], 1, -1))  # [B, C, steps]
        h = self.dropout(h.transpose(1, 2))  # [B, steps, C]
        out, _ = self.gru(h)  # [B, steps, H]
        return self.projector(out.mean(dim=1))


class DeepSenseEncoder(MultimodalEncoder):
    """DeepSense-style multimodal encoder, sized for CPU by default.

    Parameters
    ----------
    modality_shapes : ``{modality: (L, T)}`` (epochs per context window, samples per epoch).
    conv_channels : channels of every Conv1d layer.
    conv_layers : number of Conv1d + ReLU + BatchNorm1d layers (each may down-sample, see module doc).
    conv_kernel : Conv1d kernel length in samples (odd, so that lengths stay ``ceil(n / stride)``).
    gru_hidden : GRU hidden size (also the projector's hidden width).
    gru_layers : stacked GRU layers.
    embedding_dim : D, the size of every modality's embedding and of the fused one.
    dropout : dropout before the GRU, between GRU layers and in the projector.
    max_gru_steps : upper bound on the GRU sequence length; sets the conv down-sampling.
    """

    name = "deepsense"

    def __init__(
        self,
        modality_shapes: Mapping[str, Sequence[int]],
        conv_channels: int = 32,
        conv_layers: int = 3,
        conv_kernel: int = 5,
        gru_hidden: int = 64,
        gru_layers: int = 1,
        embedding_dim: int = 64,
        dropout: float = 0.1,
        max_gru_steps: int = 64,
    ) -> None:
        super().__init__(modality_shapes, embedding_dim)
        conv_kernel = check_positive_int("conv_kernel", conv_kernel)
        if conv_kernel % 2 == 0:
            raise ValueError(
                f"conv_kernel={conv_kernel} must be odd (keeps every layer's output length at "
                f"ceil(n / stride)); use {conv_kernel - 1} or {conv_kernel + 1}"
            )
        self._hparams = {
            "conv_channels": check_positive_int("conv_channels", conv_channels),
            "conv_layers": check_positive_int("conv_layers", conv_layers),
            "conv_kernel": conv_kernel,
            "gru_hidden": check_positive_int("gru_hidden", gru_hidden),
            "gru_layers": check_positive_int("gru_layers", gru_layers),
            "embedding_dim": self.embedding_dim,
            "dropout": check_fraction("dropout", dropout),
            "max_gru_steps": check_positive_int("max_gru_steps", max_gru_steps),
        }
        self.branches = nn.ModuleDict(
            {m: DeepSenseBranch(shape, **self._hparams) for m, shape in self.input_shapes.items()}
        )
        self._log_built()


class DeepSensePaperEncoder(DeepSenseEncoder):
    """:class:`DeepSenseEncoder` with the FMBIO prototype's sizes (for GPUs): 4 conv layers of 512
    channels, a 4-layer GRU of 1024 units, 1024-dimensional embeddings. Any size can be overridden."""

    name = "deepsense_paper"

    def __init__(
        self,
        modality_shapes: Mapping[str, Sequence[int]],
        conv_channels: int = 512,
        conv_layers: int = 4,
        conv_kernel: int = 5,
        gru_hidden: int = 1024,
        gru_layers: int = 4,
        embedding_dim: int = 1024,
        dropout: float = 0.1,
        max_gru_steps: int = 64,
    ) -> None:
        super().__init__(
            modality_shapes,
            conv_channels=conv_channels,
            conv_layers=conv_layers,
            conv_kernel=conv_kernel,
            gru_hidden=gru_hidden,
            gru_layers=gru_layers,
            embedding_dim=embedding_dim,
            dropout=dropout,
            max_gru_steps=max_gru_steps,
        )
