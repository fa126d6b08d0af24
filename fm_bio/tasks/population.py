"""``task=population``: the population classifier for ``model=fm_population``.

Starting from the pretrained encoder, an encoder + head is trained on the labelled PUBLIC subjects, i.e.
the pretraining population with the clients held out (``split.subjects.holdout``), validated on held-out
population subjects, and exported as ``population.pt`` (the encoder artifact plus the head's weights).
Each client's ``fm_population`` classifier starts from it and is fine-tuned on the client's own blocks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from fm_bio.evaluation.metrics import compute_metrics
from fm_bio.tasks.finetune import build_classifier, fit_best, predict
from fm_bio.tasks.pretrain import ensure_cache
from fm_bio.training.artifacts import export_encoder
from fm_bio.training.trainer import quiet_known_warnings

log = logging.getLogger(__name__)


def population_task(cfg: DictConfig) -> dict[str, Any]:
    """Entry of ``task=population`` (an ``fm_finetune`` classifier from ``model.encoder_artifact``)."""
    quiet_known_warnings()
    pl.seed_everything(cfg.seed, workers=True)
    ensure_cache(cfg)
    out = Path(cfg.paths.output_dir)
    dm = hydra.utils.instantiate(cfg.dataset.datamodule, client=None, labelled_only=True)
    dm.setup("fit")
    holdout = set(dm.subject_split.holdout)
    log.info("population classifier on %d public subjects (clients held out: %s)", len(dm.subject_split.train), sorted(holdout))
    module = build_classifier(cfg, dm, variant="fm_finetune")
    module, best = fit_best(cfg, dm, module, out, "population")
    val = predict(module, dm.val_dataloader()) if dm.dataset("val") is not None else None
    val_metrics = compute_metrics(val["y_true"].to_numpy(), val["y_pred"].to_numpy()) if val is not None and len(val) else {}
    artifact = export_encoder(module.encoder, out / "population.pt", extra={
        "head_state_dict": {k: v.detach().cpu() for k, v in module.head.state_dict().items()},
        "head_hidden_dim": int(cfg.model.head_hidden_dim), "trained_on": list(dm.subject_split.train),
        "validated_on": list(dm.subject_split.val), "held_out": sorted(holdout),
        "encoder_artifact": cfg.model.encoder_artifact,
    })
    summary = {"population_artifact": str(artifact), "val_metrics_population_subjects": val_metrics,
               "n_train_subjects": len(dm.subject_split.train)}
    (out / "population_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log.info("population model %s; validation subjects: %s", artifact,
             {k: round(v, 3) for k, v in val_metrics.items() if k in ("accuracy", "macro_f1", "kappa")})
    return summary
