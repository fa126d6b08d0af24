"""Models: multimodal encoders (:mod:`fm_bio.models.encoders`)."""

from fm_bio.models.encoders import (
    ENCODERS,
    EncoderOutput,
    MultimodalEncoder,
    build_encoder,
)

__all__ = ["ENCODERS", "EncoderOutput", "MultimodalEncoder", "build_encoder"]
