"""The multimodal encoder interface: one branch per modality, fused by a masked mean.

Every encoder maps a batch dict (``{modality: float32 [B, L, T]}``, see :mod:`fm_bio.data.datasets`)
to an :class:`EncoderOutput`: one ``[B, D]`` embedding per modality given, and their mean over the
modalities present (per sample). An encoder built for ``{ecg, hr, activity}`` serves any non-empty
subset of them (Apple Watch has no ECG); keys that are not modalities of the encoder (``label``,
``context_mask``, ...) are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = [
    "EncoderOutput",
    "MultimodalEncoder",
    "check_fraction",
    "check_positive_int",
    "count_parameters",
    "modality_present_dict",
    "normalise_modality_shapes",
]


@dataclass
class EncoderOutput:
    """Output of a :class:`MultimodalEncoder`.

    Attributes
    ----------
    per_modality : ``{modality: [B, D]}`` for every modality given in the input (also for samples in
        which ``modality_present`` flags it absent: those rows are embeddings of the zero fill).
    fused : ``[B, D]``, the mean of the per-modality embeddings over the modalities present in each
        sample; zeros for a sample with no modality present.
    """

    per_modality: dict[str, Tensor]
    fused: Tensor


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise ValueError naming ``name`` when it is not an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)


def check_fraction(name: str, value: Any) -> float:
    """Return ``value`` as a float in [0, 1), or raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}={value!r} must be a number in [0, 1)")
    return float(value)


def normalise_modality_shapes(modality_shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, int]]:
    """Validate ``{modality: (L, T)}`` (L epochs per context window, T samples per epoch).

    Accepts any mapping of sequences (also OmegaConf containers) and returns plain tuples of ints.
    """
    if not isinstance(modality_shapes, Mapping) or len(modality_shapes) == 0:
        raise ValueError(
            f"modality_shapes={modality_shapes!r} must be a non-empty mapping {{modality: (L, T)}}, "
            f"e.g. {{'hr': (1, 30)}}; a dataset's `modality_shapes` property gives it"
        )
    shapes: dict[str, tuple[int, int]] = {}
    for m, shape in modality_shapes.items():
        m = str(m)
        if not m or "." in m:
            raise ValueError(f"modality name {m!r} must be a non-empty string without '.'")
        try:
            dims = tuple(int(x) for x in shape)
        except (TypeError, ValueError):
            dims = ()
        if len(dims) != 2 or min(dims) < 1:
            raise ValueError(
                f"modality_shapes[{m!r}]={shape!r} must be (L, T): L epochs per context window (>= 1) and "
                f"T samples per epoch (>= 1), e.g. (1, 7680) for ecg without context"
            )
        shapes[m] = (dims[0], dims[1])
    return shapes


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def modality_present_dict(present: Tensor, modalities: Sequence[str]) -> dict[str, Tensor]:
    """Turn a batch's ``modality_present`` bool ``[B, M]`` (M in the dataset's modality order) into the
    ``{modality: bool [B]}`` that :meth:`MultimodalEncoder.forward` takes."""
    if present.ndim != 2 or present.shape[1] != len(modalities):
        raise ValueError(
            f"modality_present has shape {tuple(present.shape)} but {len(modalities)} modalities "
            f"{list(modalities)} were given; pass the dataset's modalities in the dataset's order"
        )
    return {m: present[:, i].bool() for i, m in enumerate(modalities)}


class MultimodalEncoder(nn.Module):
    """Base class: one branch per modality (``branches[m]``: ``[B, L, T] -> [B, D]``) and a mean fusion.

    Subclasses set the class attribute ``name``, call ``super().__init__``, store their
    hyperparameters in ``self._hparams`` (the keyword arguments of their ``__init__`` other than
    ``modality_shapes``, so that ``build_encoder(**enc.config())`` rebuilds them) and fill
    ``self.branches``.

    Attributes
    ----------
    modalities : tuple of modality names, in the order of ``modality_shapes``.
    input_shapes : ``{modality: (L, T)}``.
    embedding_dim : D.
    name : the registry name (see :data:`fm_bio.models.encoders.ENCODERS`).
    """

    name: ClassVar[str] = "base"

    def __init__(self, modality_shapes: Mapping[str, Sequence[int]], embedding_dim: int) -> None:
        super().__init__()
        self.input_shapes: dict[str, tuple[int, int]] = normalise_modality_shapes(modality_shapes)
        self.modalities: tuple[str, ...] = tuple(self.input_shapes)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self._hparams: dict[str, Any] = {}
        self.branches = nn.ModuleDict()

    # ------------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """JSON-able ``{"name", "modality_shapes", **hyperparameters}``; ``build_encoder(**config)``
        rebuilds an identical architecture (same state_dict keys and shapes)."""
        return {
            "name": self.name,
            "modality_shapes": {m: list(s) for m, s in self.input_shapes.items()},
            **dict(self._hparams),
        }

    def describe(self) -> str:
        """One line per branch with the sizes derived from its input shape."""
        lines = [f"{self.name} encoder, D={self.embedding_dim}, {count_parameters(self):,} parameters"]
        for m, branch in self.branches.items():
            extra = branch.describe() if hasattr(branch, "describe") else ""
            lines.append(f"  {m} {self.input_shapes[m]}: {extra} ({count_parameters(branch):,} parameters)")
        return "\n".join(lines)

    def _log_built(self) -> None:
        log.info("%s", self.describe())

    # ------------------------------------------------------------------------------------------

    def _check_input(self, m: str, x: Any, batch_size: int | None) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"input {m!r} is a {type(x).__name__}; expected a float tensor [B, L, T]")
        L, T = self.input_shapes[m]
        if x.ndim != 3 or tuple(x.shape[1:]) != (L, T):
            raise ValueError(
                f"input {m!r} has shape {tuple(x.shape)} but this encoder was built for [B, {L}, {T}] "
                f"(L epochs per context window, T samples per epoch); build the encoder with the "
                f"datamodule's modality_shapes (context_epochs and sampling must match)"
            )
        if batch_size is not None and x.shape[0] != batch_size:
            raise ValueError(
                f"input {m!r} has batch size {x.shape[0]} but other modalities have {batch_size}"
            )
        if not x.is_floating_point():
            x = x.float()
        return x

    def forward(
        self, inputs: Mapping[str, Tensor], modality_present: Mapping[str, Tensor] | None = None
    ) -> EncoderOutput:
        """Embed every modality of the encoder found in ``inputs`` and fuse them.

        Parameters
        ----------
        inputs : ``{modality: float [B, L, T]}``; any non-empty subset of ``self.modalities``; other
            keys are ignored (a whole batch dict may be passed).
        modality_present : optional ``{modality: bool [B]}``; a modality flagged False for a sample is
            left out of that sample's ``fused`` mean. Missing keys count as present. Build it from a
            batch's ``modality_present`` ``[B, M]`` with :func:`modality_present_dict`.

        Returns
        -------
        EncoderOutput with ``per_modality`` ``{m: [B, D]}`` and ``fused`` ``[B, D]``.
        """
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"inputs is a {type(inputs).__name__}; pass a dict {{modality: tensor [B, L, T]}} "
                f"(e.g. the batch dict)"
            )
        used = [m for m in self.modalities if m in inputs]
        if not used:
            raise ValueError(
                f"inputs hold none of this encoder's modalities {list(self.modalities)} "
                f"(keys: {sorted(map(str, inputs))}); pass at least one of them"
            )
        if modality_present is not None and not isinstance(modality_present, Mapping):
            raise TypeError(
                "modality_present must be a dict {modality: bool [B]}; convert a batch's [B, M] tensor "
                "with fm_bio.models.encoders.modality_present_dict(batch['modality_present'], modalities)"
            )
        batch_size: int | None = None
        per_modality: dict[str, Tensor] = {}
        for m in used:
            x = self._check_input(m, inputs[m], batch_size)
            batch_size = int(x.shape[0])
            per_modality[m] = self.branches[m](x)

        stacked = torch.stack([per_modality[m] for m in used], dim=1)  # [B, M, D]
        if modality_present is None or not any(m in modality_present for m in used):
            fused = stacked.mean(dim=1)
        else:
            weights = []
            for m in used:
                p = modality_present.get(m)
                if p is None:
                    weights.append(stacked.new_ones(batch_size))
                    continue
                if not isinstance(p, Tensor) or p.shape != (batch_size,):
                    shape = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
                    raise ValueError(
                        f"modality_present[{m!r}] is {shape}; expected a bool tensor [{batch_size}]"
                    )
                weights.append(p.to(device=stacked.device).bool().to(stacked.dtype))
            w = torch.stack(weights, dim=1)  # [B, M]
            fused = (stacked * w.unsqueeze(-1)).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1.0)
        return EncoderOutput(per_modality=per_modality, fused=fused)
