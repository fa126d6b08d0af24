"""Subject adversary: a subject classifier behind a gradient-reversal layer (Ganin & Lempitsky 2015).

Minimising ``CE(classifier(grad_reverse(z, w)), subject)`` trains the classifier to recognise the
subject while the encoder that produced ``z`` receives ``-w`` times that gradient, i.e. it is pushed to
make the subject harder to decode from its embedding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as nnf

__all__ = ["SCHEDULES", "GradientReversal", "SubjectAdversary", "grad_reverse", "warmup_weight"]

SCHEDULES = ("dann", "linear", "constant")
"""Adversary weight schedules of :func:`warmup_weight`."""


class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``-weight`` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: float) -> Tensor:
        ctx.weight = float(weight)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return -ctx.weight * grad_output, None


def grad_reverse(x: Tensor, weight: float | Tensor = 1.0) -> Tensor:
    """``x`` unchanged forward; gradient ``-weight * upstream`` backward (``weight`` 0 blocks it)."""
    return GradientReversal.apply(x, float(weight))


def warmup_weight(progress: float, weight_max: float, schedule: str = "dann", warmup_fraction: float = 0.2) -> float:
    """Adversary weight at training progress ``p`` in [0, 1] (clipped).

    - ``dann``: ``weight_max * (2 / (1 + exp(-10 p)) - 1)`` (Ganin & Lempitsky): 0 at the start, about
      0.99993 * weight_max at the end; ``warmup_fraction`` is not used;
    - ``linear``: ``weight_max * min(1, p / warmup_fraction)`` (constant when ``warmup_fraction`` is 0);
    - ``constant``: ``weight_max``.
    """
    p = min(1.0, max(0.0, float(progress)))
    if schedule == "dann":
        return weight_max * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)
    if schedule == "linear":
        if warmup_fraction < 0:
            raise ValueError(f"warmup_fraction must be >= 0, got {warmup_fraction}")
        return weight_max * (1.0 if warmup_fraction == 0 else min(1.0, p / warmup_fraction))
    if schedule == "constant":
        return float(weight_max)
    raise ValueError(f"unknown adversary schedule {schedule!r}; options: {SCHEDULES}")


ADVERSARY_MODES = ("grl", "confusion")


class SubjectAdversary(nn.Module):
    """Subject classifier on embeddings, trained through a gradient-reversal layer.

    The classifier is ``Linear(D, hidden) -> ReLU -> Dropout -> Linear(hidden, n_subjects)`` with softmax
    cross-entropy over subject ids ``0 .. n_subjects - 1``. The reversal weight follows
    :func:`warmup_weight` over training progress.

    Parameters
    ----------
    embedding_dim : width D of the embeddings (e.g. the encoder's fused embedding).
    n_subjects : number of subject classes.
    hidden_dim : classifier hidden width (default 128).
    weight_max : final reversal weight (default 1.0).
    schedule : ``dann`` (default), ``linear`` or ``constant``.
    warmup_fraction : share of training over which ``linear`` ramps up (default 0.2).
    dropout : dropout of the hidden layer (default 0.1).
    input_norm : standardise the embeddings (BatchNorm without affine) before the classifier, so that it
        sees subject information in low-variance directions as a standardised linear probe does.
    mode : ``grl`` (default): the encoder receives the classifier's cross-entropy gradient reversed;
        ``confusion``: the classifier learns on detached embeddings while the encoder is pushed to make
        its (frozen) predictions uniform over subjects (Tzeng et al. 2015), a bounded min-max that cannot
        be won by merely relabelling subject clusters.
    """

    def __init__(
        self,
        embedding_dim: int,
        n_subjects: int,
        hidden_dim: int = 128,
        weight_max: float = 1.0,
        schedule: str = "dann",
        warmup_fraction: float = 0.2,
        dropout: float = 0.1,
        input_norm: bool = True,
        mode: str = "grl",
    ) -> None:
        super().__init__()
        if mode not in ADVERSARY_MODES:
            raise ValueError(f"unknown adversary mode {mode!r}; options: {ADVERSARY_MODES}")
        self.mode = mode
        if n_subjects < 2:
            raise ValueError(f"a subject adversary needs n_subjects >= 2, got {n_subjects}; turn the adversary off")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown adversary schedule {schedule!r}; options: {SCHEDULES}")
        self.n_subjects = int(n_subjects)
        self.weight_max = float(weight_max)
        self.schedule = schedule
        self.warmup_fraction = float(warmup_fraction)
        norm: list[nn.Module] = [nn.BatchNorm1d(embedding_dim, affine=False)] if input_norm else []
        self.classifier = nn.Sequential(
            *norm, nn.Linear(embedding_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, n_subjects)
        )

    def forward(self, embedding: Tensor, subject: Tensor, progress: float) -> dict[str, Tensor]:
        """Adversarial loss on ``embedding`` [B, D] with subject ids ``subject`` [B] at ``progress`` in [0, 1].

        Returns ``loss`` (cross-entropy; keeps the graph), ``accuracy`` (detached) and ``weight`` (the
        reversal weight used, a float tensor).
        """
        if embedding.dim() != 2 or subject.shape != embedding.shape[:1]:
            raise ValueError(
                f"expected embedding [B, D] and subject [B], got {tuple(embedding.shape)} and {tuple(subject.shape)}"
            )
        subject = subject.long()
        lo, hi = int(subject.min()), int(subject.max())
        if lo < 0 or hi >= self.n_subjects:
            raise ValueError(
                f"subject ids must lie in 0..{self.n_subjects - 1} (n_subjects), got {lo}..{hi}; "
                f"pass the DataModule's n_subjects"
            )
        w = warmup_weight(progress, self.weight_max, self.schedule, self.warmup_fraction)
        if self.mode == "grl":
            logits = self.classifier(grad_reverse(embedding, w))
            loss = nnf.cross_entropy(logits, subject)
        else:
            logits = self.classifier(embedding.detach())
            frozen = {name: p.detach() for name, p in self.classifier.named_parameters()}
            encoder_logits = functional_call(self.classifier, frozen, (embedding,))
            confusion = -nnf.log_softmax(encoder_logits, dim=-1).mean()  # cross-entropy to the uniform distribution
            loss = nnf.cross_entropy(logits, subject) + w * confusion
        accuracy = (logits.detach().argmax(dim=-1) == subject).float().mean()
        return {"loss": loss, "accuracy": accuracy, "weight": torch.tensor(w, dtype=torch.float32, device=embedding.device)}
