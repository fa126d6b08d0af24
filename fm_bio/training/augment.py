"""Per-modality augmentations of batches of signal windows, for the two contrastive views.

Signals are already normalised (``noise_std`` is in units of the normalised signal). Every transform is
drawn per sample and applied to the whole batch at once (no loop over samples), on the input's device,
with torch's global random generator (``torch.manual_seed`` makes it repeatable).

Default settings (:data:`DEFAULT_AUGMENT`, also ``conf/augment/default.yaml``):

========= ========= =========== ================== ================= ===
modality  noise_std scale       shift_max_fraction mask_max_fraction p
========= ========= =========== ================== ================= ===
ecg       0.05      0.8 - 1.2   0.1                0.1               0.8
hr        0.05      0.9 - 1.1   0.05               0.1               0.8
activity  0.02      0.9 - 1.1   0                  0                 0.8
========= ========= =========== ================== ================= ===
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_AUGMENT", "AugmentSettings", "Augmenter"]


@dataclass(frozen=True)
class AugmentSettings:
    """One modality's augmentation; a field left out is "off".

    Attributes
    ----------
    noise_std : standard deviation of additive Gaussian noise (normalised signal units).
    scale_min, scale_max : amplitude factor drawn uniformly per sample.
    shift_max_fraction : circular shift of every epoch of a sample by a whole number of samples drawn
        uniformly in ``[-f T, f T]`` (``T`` = samples per epoch; same shift for all epochs of the window).
    mask_max_fraction : zero one contiguous span of ``1 .. f * L * T`` samples of the flattened window.
    p : probability that each transform is applied to a sample (drawn independently per transform).
    """

    noise_std: float = 0.0
    scale_min: float = 1.0
    scale_max: float = 1.0
    shift_max_fraction: float = 0.0
    mask_max_fraction: float = 0.0
    p: float = 1.0

    def __post_init__(self) -> None:
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if not 0 <= self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 <= scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        for name in ("shift_max_fraction", "mask_max_fraction", "p"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")

    @classmethod
    def from_mapping(cls, modality: str, values: Mapping[str, Any]) -> AugmentSettings:
        """Settings from a config mapping; an unknown key is an error naming the options."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"augment settings of {modality!r} have unknown keys {unknown}; options: {names}")
        return cls(**{str(k): float(v) for k, v in values.items()})


DEFAULT_AUGMENT: dict[str, dict[str, float]] = {
    "ecg": asdict(AugmentSettings(0.05, 0.8, 1.2, 0.1, 0.1, 0.8)),
    "hr": asdict(AugmentSettings(0.05, 0.9, 1.1, 0.05, 0.1, 0.8)),
    "activity": asdict(AugmentSettings(0.02, 0.9, 1.1, 0.0, 0.0, 0.8)),
}
"""Default per-modality settings (see the module docstring)."""


class Augmenter(nn.Module):
    """Random per-sample augmentation of ``[B, L, T]`` windows, per modality.

    Order: amplitude scaling, Gaussian noise, circular shift, then the zeroed span (so masked samples
    are exactly 0). Keys without settings (other modalities, labels, masks) are passed through as they
    are; the result is a new dict and the input tensors are never modified. When the batch holds a
    ``context_mask`` [B, L] (False for zero-filled neighbours), those epochs stay zero.

    Parameters
    ----------
    settings : ``{modality: {noise_std, scale_min, scale_max, shift_max_fraction, mask_max_fraction,
        p}}``; ``{}`` augments nothing; None uses :data:`DEFAULT_AUGMENT`. A modality mapped to None is
        passed through.
    """

    def __init__(self, settings: Mapping[str, Mapping[str, float] | None] | None = None) -> None:
        super().__init__()
        if settings is None:
            settings = DEFAULT_AUGMENT
        if not isinstance(settings, Mapping):
            raise TypeError(f"augment settings must be a mapping of modality -> settings, got {type(settings).__name__}")
        self.settings: dict[str, AugmentSettings] = {
            str(m): AugmentSettings.from_mapping(str(m), s) for m, s in settings.items() if s is not None
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Augmenter:
        """Build from a (Hydra/OmegaConf or plain) mapping such as ``conf/augment/default.yaml``."""
        if config is None:
            return cls({})
        return cls({str(m): (None if s is None else {str(k): v for k, v in s.items()}) for m, s in config.items()})

    def extra_repr(self) -> str:
        return ", ".join(f"{m}={s}" for m, s in self.settings.items())

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """A new dict with each configured modality's ``[B, L, T]`` tensor augmented."""
        out = dict(batch)
        context = batch.get("context_mask")
        for m, s in self.settings.items():
            if m not in batch:
                continue
            x = batch[m]
            if not torch.is_tensor(x) or x.dim() != 3:
                shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
                raise ValueError(f"augment expects modality {m!r} as a [B, L, T] tensor, got {shape}")
            if not x.is_floating_point():
                raise TypeError(f"augment expects a floating-point tensor for {m!r}, got {x.dtype}")
            y = _augment(x, s)
            if y is not x and torch.is_tensor(context) and context.shape == x.shape[:2]:
                y = y * context.to(y.dtype)[:, :, None]
            out[m] = y
        return out


def _augment(x: Tensor, s: AugmentSettings) -> Tensor:
    """Apply the transforms of ``s`` to ``x`` [B, L, T]; returns ``x`` itself when nothing applies."""
    B, L, T = x.shape
    dev, dt = x.device, x.dtype
    if B == 0 or s.p == 0:
        return x

    def chosen() -> Tensor:
        return torch.rand(B, device=dev) < s.p

    y = x
    if s.scale_max > s.scale_min or s.scale_min != 1.0:
        factor = s.scale_min + (s.scale_max - s.scale_min) * torch.rand(B, device=dev, dtype=dt)
        factor = torch.where(chosen(), factor, torch.ones_like(factor))
        y = y * factor[:, None, None]
    if s.noise_std > 0:
        y = y + (s.noise_std * chosen().to(dt))[:, None, None] * torch.randn(B, L, T, device=dev, dtype=dt)
    shift_max = math.floor(s.shift_max_fraction * T)
    if shift_max >= 1:
        shift = torch.randint(-shift_max, shift_max + 1, (B,), device=dev) * chosen()
        idx = (torch.arange(T, device=dev)[None, :] - shift[:, None]) % T  # y'[t] = y[t - shift]
        y = torch.gather(y, 2, idx[:, None, :].expand(B, L, T))
    n = L * T
    span_max = math.floor(s.mask_max_fraction * n)
    if span_max >= 1:
        length = torch.randint(1, span_max + 1, (B,), device=dev) * chosen()
        start = (torch.rand(B, device=dev) * (n - length + 1)).long()
        pos = torch.arange(n, device=dev)[None, :]
        span = (pos >= start[:, None]) & (pos < (start + length)[:, None])
        y = y.reshape(B, n).masked_fill(span, 0.0).reshape(B, L, T)
    return y
