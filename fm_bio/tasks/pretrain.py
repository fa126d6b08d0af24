"""``task=pretrain``: self-supervised pretraining of a multimodal encoder on a dataset's cache.

Writes into the run folder: ``checkpoints/last.ckpt`` and ``checkpoints/best-*.ckpt`` (by validation
self-supervised loss, without the adversary term), ``encoder.pt`` (the artifact downstream tasks load by path: weights of the best checkpoint +
the encoder config), ``csv/metrics.csv`` (and a wandb run when ``logger=wandb``), ``pretrain_summary.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from fm_bio.data import cache
from fm_bio.training.artifacts import export_encoder
from fm_bio.training.loggers import build_loggers, finish_loggers
from fm_bio.training.pretrain_module import PretrainModule
from fm_bio.training.probes import EmbeddingProbes
from fm_bio.training.trainer import RngStateCheckpoint, build_trainer, process_rank, quiet_known_warnings
from fm_bio.utils.config import to_plain

log = logging.getLogger(__name__)


def ensure_cache(cfg: DictConfig, wait_s: float = 3600.0) -> None:
    """Preprocess the dataset first when its cache has no manifest yet. A DDP rank other than 0 (started
    by a launcher such as SLURM beside rank 0) waits up to ``wait_s`` for rank 0's manifest instead."""
    manifest = Path(cfg.dataset.cache_root) / cache.MANIFEST_NAME
    if not manifest.exists() and process_rank() > 0:
        import time

        log.info("rank %d: waiting for rank 0 to preprocess %s", process_rank(), cfg.dataset.cache_root)
        deadline = time.monotonic() + wait_s
        while not manifest.exists() and time.monotonic() < deadline:
            time.sleep(5.0)
        if not manifest.exists():
            raise TimeoutError(f"rank {process_rank()}: no cache manifest at {manifest} after {wait_s:.0f} s; "
                               "preprocess first (task=preprocess) and start the run again")
        return
    if not manifest.exists():
        from fm_bio.tasks.preprocess import preprocess_task

        log.info("no cache at %s yet: preprocessing %s first", cfg.dataset.cache_root, cfg.dataset.name)
        preprocess_task(cfg)


def build_pretrain_module(cfg: DictConfig, dm: pl.LightningDataModule) -> PretrainModule:
    """The PretrainModule of a config, sized from the DataModule."""
    loss = to_plain(cfg.loss)
    return PretrainModule(
        modality_shapes={m: list(s) for m, s in dm.modality_shapes.items()},
        encoder=to_plain(cfg.encoder),
        objective=loss["objective"],
        adversary=loss.get("adversary"),
        n_subjects=dm.n_subjects,
        augment=to_plain(cfg.augment),
        lr=cfg.model.lr,
        weight_decay=cfg.model.weight_decay,
        warmup_fraction=cfg.model.warmup_fraction,
        seq_len=cfg.dataset.datamodule.get("seq_len"),
    )


def pretrain_task(cfg: DictConfig) -> dict[str, Any]:
    """Entry of ``task=pretrain``."""
    quiet_known_warnings()
    pl.seed_everything(cfg.seed, workers=True)
    ensure_cache(cfg)
    out = Path(cfg.paths.output_dir)
    dm = hydra.utils.instantiate(cfg.dataset.datamodule, labelled_only=False)
    dm.setup("fit")
    log.info("pretraining on %s: %s", cfg.dataset.name, json.dumps(dm.split_summary(), default=str))
    module = build_pretrain_module(cfg, dm)
    n_params = sum(p.numel() for p in module.encoder.parameters())
    log.info("encoder %s: %d parameters; objective %s; adversary %s", cfg.encoder.name, n_params,
             cfg.loss.objective.name, "on" if module.adversary is not None else "off")

    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="best-{epoch:03d}", monitor="val/ssl_loss", mode="min",
                           auto_insert_metric_name=False)
    # The state after every epoch, for resumption. Not ``save_last=True`` on the monitored checkpoint: in this
    # Lightning version that rewrites last.ckpt only in epochs where the best one improved.
    last = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    probes = EmbeddingProbes(every_n_epochs=cfg.model.probe_every_n_epochs,
                             max_per_subject=cfg.model.probe_max_per_subject, seed=cfg.seed)
    callbacks = [ckpt, last, probes, LearningRateMonitor(logging_interval="epoch"), RngStateCheckpoint()]
    tags = [f"encoder:{cfg.encoder.name}", f"objective:{cfg.loss.objective.name}",
            f"adversary:{'on' if module.adversary is not None else 'off'}", f"seed:{cfg.seed}"]
    loggers = build_loggers(cfg, run_name=f"pretrain-{cfg.dataset.name}-{out.name}", tags=tags)
    try:
        trainer = build_trainer(cfg, out, loggers, callbacks)
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path == "last":  # this run folder's last.ckpt (resolved here, not by Lightning's own search)
            ckpt_path = str(out / "checkpoints" / "last.ckpt") if (out / "checkpoints" / "last.ckpt").exists() else None
            log.info("ckpt_path=last: %s", f"resuming from {ckpt_path}" if ckpt_path else "no last.ckpt yet, starting afresh")
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        best = ckpt.best_model_path
        if not trainer.is_global_zero:  # DDP ranks > 0: rank 0 writes the artifacts and the summary
            return {"rank": trainer.global_rank}
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        artifact = export_encoder(module.encoder, out / "encoder.pt", extra={
            "dataset": cfg.dataset.name, "modalities": list(module.modalities),
            "context_epochs": int(cfg.dataset.datamodule.context_epochs),
            "preprocess_hash": cache.load_manifest(cfg.dataset.cache_root).get("config_hash"),
            "checkpoint": Path(best).name if best else "last", "seed": int(cfg.seed),
        })
        final_probes = probes.run(trainer, module, dm)
    finally:
        finish_loggers(loggers)
    summary = {
        "encoder_artifact": str(artifact),
        "best_checkpoint": best,
        "last_checkpoint": str(out / "checkpoints" / "last.ckpt"),
        "best_val_loss": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
        "encoder_parameters": n_params,
        "adversary": module.adversary is not None,
        "final_probes_best_checkpoint": final_probes,
        "probe_history": probes.history,
        "subjects": dm.split_summary(),
    }
    (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log.info("encoder artifact: %s; probes (best checkpoint): %s", artifact,
             ", ".join(f"{k}={v:.3f}" for k, v in final_probes.items()))
    return summary
