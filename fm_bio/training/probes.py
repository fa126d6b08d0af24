"""Label-free monitoring of pretraining: linear probes on frozen embeddings, every few epochs.

- **stage probe**: a logistic regression fitted on embeddings of (a sample of) the training subjects'
  labelled epochs and scored on the validation subjects (unseen people): accuracy, Cohen's kappa and
  the majority-class rate of the validation epochs beside it. Labels are used only by the probe, never
  by the encoder.
- **subject probe**: a logistic regression that decodes subject identity among the training subjects,
  fitted on alternate blocks of (up to) 20 sampled epochs of each night and scored on the blocks in
  between; chance is 1 / number of subjects. With the subject adversary on, it should fall toward chance.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, cohen_kappa_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fm_bio.data.datasets import EpochDataset

log = logging.getLogger(__name__)
BLOCK_EPOCHS = 20


def sample_indices(dataset: EpochDataset, max_per_subject: int, labelled: bool = True) -> np.ndarray:
    """Evenly spaced sample indices, at most ``max_per_subject`` per subject (deterministic)."""
    subj, lab = dataset.sample_subject, dataset.sample_label
    out = []
    for s in np.unique(subj):
        idx = np.flatnonzero((subj == s) & ((lab >= 0) if labelled else True))
        if len(idx) > max_per_subject:
            idx = idx[np.linspace(0, len(idx) - 1, max_per_subject).round().astype(int)]
        out.append(idx)
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


@torch.no_grad()
def embed(module: pl.LightningModule, dataset: EpochDataset, indices: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Fused embeddings (eval mode, no augmentation) of ``dataset[indices]`` with labels, subjects, epochs."""
    was_training = module.training
    module.eval()
    chunks: dict[str, list[np.ndarray]] = {"z": [], "label": [], "subject": [], "epoch_index": []}
    try:
        for start in range(0, len(indices), batch_size):
            batch = dataset.__getitems__(indices[start:start + batch_size].tolist())
            batch = {k: v.to(module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            z = module.embed(batch)
            chunks["z"].append(z.float().cpu().numpy())
            for key in ("label", "subject", "epoch_index"):
                chunks[key].append(batch[key].cpu().numpy())
    finally:
        module.train(was_training)
    return {k: np.concatenate(v) for k, v in chunks.items()}


def _probe(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, seed: int) -> np.ndarray:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0, random_state=seed))
    clf.fit(x_fit, y_fit)
    return clf.predict(x_eval)


def stage_probe(train: dict[str, np.ndarray], val: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Fit on the training subjects' labelled embeddings, score on the validation subjects."""
    if len(np.unique(train["label"])) < 2 or len(val["label"]) == 0:
        return {}
    pred = _probe(train["z"], train["label"], val["z"], seed)
    majority = np.bincount(val["label"]).max() / len(val["label"])
    return {"stage_acc": float(accuracy_score(val["label"], pred)),
            "stage_kappa": float(cohen_kappa_score(val["label"], pred)),
            "stage_majority": float(majority)}


def subject_probe(train: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Decode subject identity: fit on even blocks of each subject's samples (in time order), score on the
    odd blocks; blocks of up to 20 samples, shorter for short nights so both halves exist."""
    subjects, counts = np.unique(train["subject"], return_counts=True)
    if len(subjects) < 2 or counts.min() < 2:
        return {}
    block = max(1, min(BLOCK_EPOCHS, int(counts.min()) // 4))
    order = np.lexsort((train["epoch_index"], train["subject"]))
    rank = np.empty(len(order), dtype=np.int64)
    for s in subjects:  # position of each sample within its subject, in time order
        members = order[train["subject"][order] == s]
        rank[members] = np.arange(len(members))
    fit = (rank // block) % 2 == 0
    pred = _probe(train["z"][fit], train["subject"][fit], train["z"][~fit], seed)
    return {"subject_acc": float(accuracy_score(train["subject"][~fit], pred)),
            "subject_chance": 1.0 / len(subjects)}


class EmbeddingProbes(pl.Callback):
    """Runs the stage and subject probes every ``every_n_epochs`` at the end of validation and logs
    ``probe/stage_acc``, ``probe/stage_kappa``, ``probe/stage_majority``, ``probe/subject_acc``,
    ``probe/subject_chance``."""

    def __init__(self, every_n_epochs: int = 1, max_per_subject: int = 200, seed: int = 0) -> None:
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.max_per_subject = int(max_per_subject)
        self.seed = seed
        self.history: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    def run(self, trainer: pl.Trainer, module: pl.LightningModule, datamodule: Any = None) -> dict[str, float]:
        """Compute the probes now (also used at the end of fitting; pass the DataModule there: after a
        ``ddp_spawn`` fit the trainer in the main process no longer holds it)."""
        dm = datamodule if datamodule is not None else trainer.datamodule
        train_ds, val_ds = dm.dataset("train"), dm.dataset("val")
        if train_ds is None:
            return {}
        train = embed(module, train_ds, sample_indices(train_ds, self.max_per_subject))
        metrics = subject_probe(train, self.seed)
        if val_ds is not None and len(val_ds):
            val = embed(module, val_ds, sample_indices(val_ds, self.max_per_subject))
            metrics.update(stage_probe(train, val, self.seed))
        return metrics

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        metrics = self.run(trainer, module)
        if metrics:
            module.log_dict({f"probe/{k}": v for k, v in metrics.items()}, sync_dist=True)
            self.history.append({"epoch": trainer.current_epoch, **metrics})
            log.info("epoch %d probes: %s", trainer.current_epoch,
                     ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
