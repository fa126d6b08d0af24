"""Multimodal encoders (one branch per modality, mean fusion) and their registry.

``build_encoder(name, modality_shapes, **params)`` builds one by name; ``enc.config()`` returns the
keyword arguments that rebuild it (``build_encoder(**enc.config())``).

========================= ==================================================================
name                      design
========================= ==================================================================
``deepsense``             Conv1d + ReLU + BatchNorm stack -> GRU -> MLP, CPU-sized defaults
``deepsense_paper``       the same with the FMBIO prototype's sizes (512 ch, GRU 1024 x 4, D 1024)
``transformer``           patch Transformer (linear patches, learned positions, CLS, pre-norm)
========================= ==================================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from fm_bio.models.encoders.base import (
    EncoderOutput,
    MultimodalEncoder,
    count_parameters,
    modality_present_dict,
)
from fm_bio.models.encoders.deepsense import DeepSenseEncoder, DeepSensePaperEncoder
from fm_bio.models.encoders.transformer import TransformerEncoder

__all__ = [
    "ENCODERS",
    "DeepSenseEncoder",
    "DeepSensePaperEncoder",
    "EncoderOutput",
    "MultimodalEncoder",
    "TransformerEncoder",
    "build_encoder",
    "count_parameters",
    "encoder_parameters",
    "modality_present_dict",
]

ENCODERS: dict[str, type[MultimodalEncoder]] = {
    cls.name: cls for cls in (DeepSenseEncoder, DeepSensePaperEncoder, TransformerEncoder)
}
"""Registry: encoder name -> class."""


def encoder_parameters(name: str) -> dict[str, Any]:
    """The hyperparameters of encoder ``name`` with their defaults (everything but ``modality_shapes``)."""
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {k: p.default for k, p in sig.parameters.items() if k not in ("self", "modality_shapes")}


def _lookup(name: str) -> type[MultimodalEncoder]:
    try:
        return ENCODERS[str(name)]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; options: {sorted(ENCODERS)}") from None


def build_encoder(
    name: str, modality_shapes: Mapping[str, Sequence[int]], **params: Any
) -> MultimodalEncoder:
    """Build the encoder registered as ``name``.

    Parameters
    ----------
    name : a key of :data:`ENCODERS`.
    modality_shapes : ``{modality: (L, T)}``, e.g. a dataset's ``modality_shapes``.
    **params : hyperparameters of that encoder (see its class docstring); omitted ones take defaults.

    Raises
    ------
    ValueError : unknown ``name`` (the message lists the options) or an invalid value.
    TypeError : a parameter the encoder does not take (the message lists the accepted ones).
    """
    cls = _lookup(name)
    accepted = encoder_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(f"encoder {name!r} got unknown parameter(s) {unknown}; accepted: {sorted(accepted)}")
    return cls(modality_shapes, **params)
