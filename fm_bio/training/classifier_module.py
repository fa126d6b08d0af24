"""Per-client sleep-stage classifier (LightningModule) in four variants (``model=``):

- ``base``: the encoder from random initialisation, trained with its head on the client's data only;
- ``fm_probe``: the foundation-model encoder frozen (eval mode), only the head is trained;
- ``fm_finetune``: the FM encoder fine-tuned with a smaller learning rate than the head;
- ``fm_population``: the FM encoder plus a head first trained on the labelled public subjects (never the
  client; ``task=population``), then both fine-tuned on the client's training blocks.

With ``time_of_night`` the head also sees the epoch's time since the recording start (hours, a "clock
proxy" as in Walch et al. 2019; the classical baseline has it among its features).

Loss: cross-entropy (optionally class-weighted), masked epochs ignored. Validation logs Cohen's kappa
(``val/kappa``) for early stopping and checkpoint selection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as nnf

from fm_bio.data.labels import CLASS_NAMES, MASKED
from fm_bio.data.records import EPOCH_S
from fm_bio.evaluation.metrics import SleepStageMetrics
from fm_bio.models.encoders import build_encoder
from fm_bio.training.artifacts import load_encoder, read_artifact
from fm_bio.training.pretrain_module import modality_inputs

VARIANTS = ("base", "fm_probe", "fm_finetune", "fm_population")


class ClassificationHead(nn.Module):
    """MLP from the fused embedding to the 4 class logits; the embedding is standardised first
    (BatchNorm), so a frozen encoder's embedding scale does not matter."""

    def __init__(self, embedding_dim: int, hidden_dim: int = 64, n_classes: int = len(CLASS_NAMES), dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm1d(embedding_dim), nn.Linear(embedding_dim, hidden_dim), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden_dim, n_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ClassifierModule(pl.LightningModule):
    """Encoder + head for 4-class sleep staging.

    Parameters
    ----------
    variant : one of ``VARIANTS``.
    modality_shapes : ``{modality: (L, T)}`` of the client's inputs.
    encoder : encoder config for ``base`` (``name`` + hyperparameters); ignored by the FM variants.
    encoder_artifact : path of the pretrained encoder (``encoder.pt``) for ``fm_probe``/``fm_finetune``.
    population_artifact : path of the population model (``population.pt``) for ``fm_population``.
    lr, encoder_lr_factor, weight_decay : AdamW; the encoder's learning rate is ``lr * encoder_lr_factor``
        when fine-tuning a pretrained encoder (1 for ``base``).
    class_weights : per-class loss weights (None: unweighted).
    time_of_night : append the hours since the recording start (from ``batch["epoch_index"]``) to the
        embedding the head sees.
    """

    def __init__(self, variant: str, modality_shapes: Mapping[str, Sequence[int]], encoder: dict[str, Any] | None = None,
                 encoder_artifact: str | None = None, population_artifact: str | None = None, lr: float = 1e-3,
                 encoder_lr_factor: float = 0.1, weight_decay: float = 1e-4, head_hidden_dim: int = 64,
                 head_dropout: float = 0.2, class_weights: list[float] | None = None,
                 time_of_night: bool = False) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown model variant {variant!r}; options: {VARIANTS}")
        self.save_hyperparameters()
        self.variant = variant
        if variant == "base":
            if not encoder:
                raise ValueError("model=base needs an encoder config (the `encoder` group)")
            enc = dict(encoder)
            self.encoder = build_encoder(enc.pop("name"), {m: list(s) for m, s in modality_shapes.items()}, **enc)
        elif variant in ("fm_probe", "fm_finetune"):
            if not encoder_artifact:
                raise ValueError(f"model={variant} needs model.encoder_artifact=<pretraining run>/encoder.pt")
            self.encoder = load_encoder(encoder_artifact)
        else:
            if not population_artifact:
                raise ValueError("model=fm_population needs model.population_artifact=<population run>/population.pt "
                                 "(python -m fm_bio.run task=population ...)")
            population = read_artifact(population_artifact)
            self.encoder = build_encoder(**population["encoder_config"])
            self.encoder.load_state_dict(population["state_dict"])
        self.modalities = tuple(m for m in self.encoder.modalities if m in modality_shapes)
        missing = sorted(set(modality_shapes) - set(self.encoder.modalities))
        if missing:
            raise ValueError(f"the encoder was built for {list(self.encoder.modalities)}; the data also has {missing}: "
                             f"drop them with dataset.datamodule.modalities")
        self.time_of_night = bool(time_of_night)
        head_in = self.encoder.embedding_dim + int(self.time_of_night)
        self.head = ClassificationHead(head_in, head_hidden_dim, dropout=head_dropout)
        if variant == "fm_population":
            state = population["extra"]["head_state_dict"]
            trained_in = state["net.0.weight"].shape[0]
            if trained_in != head_in:
                raise ValueError(f"{population_artifact}: its head takes {trained_in} inputs, this model {head_in} "
                                 f"(time_of_night={self.time_of_night}); re-run task=population with the same "
                                 f"model.time_of_night")
            self.head.load_state_dict(state)
        if variant == "fm_probe":
            self.encoder.requires_grad_(False)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_metrics = SleepStageMetrics()

    def train(self, mode: bool = True) -> ClassifierModule:
        super().train(mode)
        if self.variant == "fm_probe":
            self.encoder.eval()  # a frozen encoder keeps its BatchNorm statistics
        return self

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Class logits [B, 4]."""
        inputs, present = modality_inputs(batch, self.modalities)
        z = self.encoder(inputs, present).fused
        if self.time_of_night:
            hours = batch["epoch_index"].to(z.dtype) * (EPOCH_S / 3600.0)
            z = torch.cat([z, hours[:, None]], dim=1)
        return self.head(z)

    def _loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return nnf.cross_entropy(logits, label, weight=self.class_weights, ignore_index=MASKED)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = self._loss(logits, batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        logits = self(batch)
        self.log("val/loss", self._loss(logits, batch["label"]), batch_size=len(logits), sync_dist=True)
        self.val_metrics.update(logits.argmax(-1), batch["label"])

    def on_validation_epoch_end(self) -> None:
        m = self.val_metrics.compute()
        self.log_dict({"val/kappa": float(m["kappa"]), "val/accuracy": float(m["accuracy"]),
                       "val/macro_f1": float(m["macro_f1"])}, prog_bar=True)
        self.val_metrics.reset()

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"pred": self(batch).argmax(-1), "label": batch["label"], "epoch_index": batch["epoch_index"]}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [{"params": self.head.parameters(), "lr": self.hparams.lr}]
        if self.variant != "fm_probe":
            factor = 1.0 if self.variant == "base" else self.hparams.encoder_lr_factor
            groups.append({"params": self.encoder.parameters(), "lr": self.hparams.lr * factor})
        return torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)
