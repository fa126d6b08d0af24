"""Self-supervised pretraining of a multimodal encoder (LightningModule).

Each step: two augmented views of the batch -> encoder -> the objective (``focal`` or ``infonce``) on
the two views' outputs, plus, when configured, the subject adversary on the fused embeddings (a subject
classifier trained with softmax cross-entropy; the encoder receives its gradient reversed and weighted
by a warm-up schedule). AdamW with linear warm-up then cosine decay. No sleep-stage label is used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from fm_bio.models.encoders import build_encoder
from fm_bio.objectives import build_objective
from fm_bio.objectives.adversary import SubjectAdversary
from fm_bio.training.augment import Augmenter


def modality_inputs(batch: Mapping[str, Any], modalities: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """The encoder inputs of a batch and the per-modality presence flags (when the batch has them)."""
    inputs = {m: batch[m] for m in modalities if m in batch}
    present = None
    if "modality_present" in batch:
        flags = batch["modality_present"]
        present = {m: flags[:, i] for i, m in enumerate(modalities) if m in inputs}
    return inputs, present


class PretrainModule(pl.LightningModule):
    """Encoder + self-supervised objective (+ subject adversary).

    Parameters
    ----------
    modality_shapes : ``{modality: (L, T)}`` of the inputs (from the DataModule).
    encoder : encoder config (``name`` + hyperparameters; see ``conf/encoder``).
    objective : objective config (``name`` + parameters; see ``conf/loss``).
    adversary : subject-adversary config or None (off).
    n_subjects : size of the subject vocabulary (the DataModule's ``n_subjects``).
    augment : per-modality augmentation settings (``conf/augment``).
    lr, weight_decay, warmup_fraction : AdamW and the warm-up share of all steps before cosine decay.
    seq_len : runs of consecutive epochs per batch for the temporal term (None: off).
    """

    def __init__(self, modality_shapes: dict[str, list[int]], encoder: dict[str, Any], objective: dict[str, Any],
                 adversary: dict[str, Any] | None, n_subjects: int, augment: dict[str, Any], lr: float = 1e-3,
                 weight_decay: float = 0.05, warmup_fraction: float = 0.1, seq_len: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        enc = dict(encoder)
        self.encoder = build_encoder(enc.pop("name"), modality_shapes, **enc)
        self.modalities = tuple(self.encoder.modalities)
        obj = dict(objective)
        self.objective = build_objective(obj.pop("name"), self.modalities, self.encoder.embedding_dim, **obj)
        adv = dict(adversary or {})
        self.adversary_lr_multiplier = float(adv.pop("lr_multiplier", 1.0))
        self.adversary = SubjectAdversary(self.encoder.embedding_dim, n_subjects, **adv) if adversary else None
        self.augment = Augmenter(augment or {})

    def embed(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Fused embedding of an (unaugmented) batch."""
        inputs, present = modality_inputs(batch, self.modalities)
        return self.encoder(inputs, present).fused

    def _progress(self) -> float:
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        return min(1.0, self.global_step / total)

    def _step(self, batch: Mapping[str, Any], stage: str) -> torch.Tensor:
        inputs, present = modality_inputs(batch, self.modalities)
        out1 = self.encoder(self.augment(inputs), present)
        out2 = self.encoder(self.augment(inputs), present)
        seq_len = self.hparams.seq_len if stage == "train" else None
        terms = self.objective(out1, out2, seq_len=seq_len)
        loss = terms["loss"]
        logs = {f"{stage}/{k}": v.detach() for k, v in terms.items() if k != "loss"}
        logs[f"{stage}/ssl_loss"] = loss.detach()  # the objective alone (checkpoints are chosen on val/ssl_loss)
        if self.adversary is not None:
            fused = torch.cat([out1.fused, out2.fused])
            subject = batch["subject"].repeat(2)
            adv = self.adversary(fused, subject, self._progress())
            loss = loss + adv["loss"]
            logs.update({f"{stage}/adversary_ce": adv["loss"].detach(), f"{stage}/adversary_acc": adv["accuracy"],
                         f"{stage}/adversary_weight": torch.as_tensor(adv["weight"], dtype=torch.float32)})
        bs = len(batch["subject"])
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        self.log_dict(logs, batch_size=bs, sync_dist=stage != "train")
        return loss

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay, adversary = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("adversary."):
                adversary.append(p)
            else:
                (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.hparams.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if adversary:  # the adversary learns faster than the encoder so that it keeps up with it
            groups.append({"params": adversary, "weight_decay": 0.0,
                           "lr": self.hparams.lr * self.adversary_lr_multiplier})
        opt = torch.optim.AdamW(groups, lr=self.hparams.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(self.hparams.warmup_fraction * total))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
