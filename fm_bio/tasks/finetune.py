"""``task=finetune``: one client's sleep-stage classifier (one variant, one seed), over every fold.

With the default blocked k-fold split each fold trains on the other blocks (minus the context gap),
stops early on validation kappa, and scores its test block ONCE with that fold's best checkpoint, so
every labelled epoch of the night gets exactly one out-of-fold prediction. The job writes
``metrics.json`` (whole-night metrics, per-fold metrics, status) and ``predictions.csv`` into its run
folder (read by ``task=report``), a CSV log per fold and, when ``logger=wandb``, one wandb run for the
job (grouped per sweep, tagged with client, model and seed) with the confusion matrix and per-class F1.
"""

from __future__ import annotations

import logging
import traceback
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from fm_bio.data.cache import atomic_write_json, atomic_write_text
from fm_bio.data.labels import CLASS_NAMES
from fm_bio.evaluation.metrics import compute_metrics
from fm_bio.tasks.pretrain import ensure_cache
from fm_bio.training.classifier_module import ClassifierModule
from fm_bio.training.trainer import build_trainer, quiet_known_warnings
from fm_bio.utils.config import settings_hash, to_plain

log = logging.getLogger(__name__)


def class_weights_from_counts(counts: np.ndarray) -> list[float]:
    """Inverse-frequency class weights normalised to mean 1 (absent classes get weight 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = counts[present].sum() / (present.sum() * counts[present])
    return w.tolist()


def folds_of(split: dict[str, Any]) -> list[int]:
    """The folds a job runs: all k for blocked k-fold, the single split otherwise."""
    return list(range(int(split["n_folds"]))) if split["scheme"] == "blocked_kfold" else [0]


def build_classifier(cfg: DictConfig, dm: pl.LightningDataModule, variant: str | None = None) -> ClassifierModule:
    """The classifier of ``cfg.model`` (or of ``variant``) sized from the DataModule."""
    m = cfg.model
    weights = class_weights_from_counts(dm.class_counts("train")) if m.class_weighted_loss else None
    return ClassifierModule(
        variant=variant or m.name, modality_shapes={k: list(v) for k, v in dm.modality_shapes.items()},
        encoder=to_plain(cfg.encoder), encoder_artifact=m.get("encoder_artifact"),
        population_artifact=m.get("population_artifact"), lr=m.lr, encoder_lr_factor=m.encoder_lr_factor,
        weight_decay=m.weight_decay, head_hidden_dim=m.head_hidden_dim, head_dropout=m.head_dropout,
        class_weights=weights, time_of_night=bool(m.get("time_of_night", False)),
    )


def fit_best(cfg: DictConfig, dm: pl.LightningDataModule, module: ClassifierModule, out: Path,
                    name: str) -> tuple[ClassifierModule, str]:
    """Train with early stopping on validation kappa; reload the best checkpoint (weights only) and return
    the module and that checkpoint's path."""
    has_val = bool(dm.dataset("val") is not None and len(dm.dataset("val")))
    monitor = "val/kappa" if has_val else "train/loss"
    mode = "max" if has_val else "min"
    ckpt = ModelCheckpoint(dirpath=out / name, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                           save_last=False, enable_version_counter=False)
    callbacks: list[pl.Callback] = [ckpt]
    if has_val:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=int(cfg.model.patience)))
    csv = CSVLogger(save_dir=str(out / "csv"), name=name, version="")
    trainer = build_trainer(cfg, out, [csv], callbacks, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    best = ckpt.best_model_path
    if best:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    return module, best


@torch.no_grad()
def predict(module: ClassifierModule, loader: Any) -> pd.DataFrame:
    """Predictions (eval mode) for every batch of ``loader``: epoch_index, y_true, y_pred."""
    module.eval()
    rows = []
    for batch in loader:
        pred = module(batch).argmax(-1)
        rows.append(pd.DataFrame({"epoch_index": batch["epoch_index"].numpy(), "y_true": batch["label"].numpy(),
                                  "y_pred": pred.numpy()}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["epoch_index", "y_true", "y_pred"])


def finetune_task(cfg: DictConfig) -> dict[str, Any]:
    """Entry of ``task=finetune`` (needs ``client=<id>``)."""
    quiet_known_warnings()
    if cfg.get("client") is None:
        raise SystemExit("task=finetune needs client=<subject id> (or a sweep over clients: see experiment=study_mesa)")
    out = Path(cfg.paths.output_dir)
    metrics_path = out / "metrics.json"
    job_hash = settings_hash(cfg, files=(cfg.model.get("encoder_artifact"), cfg.model.get("population_artifact")))
    if cfg.get("skip_finished", True):
        done = finished_record(metrics_path, job_hash)
        if done is not None:
            log.info("client %s %s seed %s already finished: skipped (%s; skip_finished=false reruns it)",
                     cfg.client, cfg.model.name, cfg.seed, metrics_path)
            return done
    ensure_cache(cfg)
    split = to_plain(cfg.split.client)
    record: dict[str, Any] = {
        "study": cfg.get("study", {}).get("name") if cfg.get("study") else None, "dataset": cfg.dataset.name,
        "client": str(cfg.client), "model": cfg.model.name, "seed": int(cfg.seed),
        "split": {"scheme": split["scheme"], "n_folds": len(folds_of(split))},
        "context_epochs": int(cfg.dataset.datamodule.context_epochs),
        "encoder_artifact": cfg.model.get("encoder_artifact"), "status": "ok", "error": None,
        "settings_hash": job_hash,
    }
    preds, folds = [], []
    classic = cfg.model.get("family") == "classic"
    classic_inputs: dict[str, Any] = {}  # the client's features do not depend on the fold: computed once
    if classic:  # feature windows reach FEATURE_WINDOW_EPOCHS either side: keep them out of the test block
        from fm_bio.models.classic import FEATURE_WINDOW_EPOCHS

        if split["scheme"] != "random_epochs":
            gap = split.get("gap_epochs")
            split["gap_epochs"] = max(int(gap if gap is not None else cfg.dataset.datamodule.context_epochs),
                                      FEATURE_WINDOW_EPOCHS)
        record["split"]["gap_epochs"] = split.get("gap_epochs")
    try:
        for fold in folds_of(split):
            pl.seed_everything(int(cfg.seed) + fold, workers=True)
            dm = hydra.utils.instantiate(cfg.dataset.datamodule, client=cfg.client, split={**split, "fold": fold})
            dm.setup("fit")
            record["client"] = dm.client_subject
            if classic:
                fold_preds, best = fit_predict_classic(cfg, dm, classic_inputs), None
            else:
                module = build_classifier(cfg, dm)
                module, best = fit_best(cfg, dm, module, out, f"fold{fold}")
                fold_preds = predict(module, dm.test_dataloader())
            fold_preds["fold"] = fold
            preds.append(fold_preds)
            m = compute_metrics(fold_preds["y_true"].to_numpy(), fold_preds["y_pred"].to_numpy())
            folds.append({"fold": fold, "n_test": int(len(fold_preds)), "best_checkpoint": Path(best).name if best else None,
                          **{k: m[k] for k in ("accuracy", "macro_f1", "kappa")}})
            log.info("client %s %s fold %d: n=%d accuracy=%.3f macro_f1=%.3f kappa=%.3f", record["client"],
                     cfg.model.name, fold, len(fold_preds), m["accuracy"], m["macro_f1"], m["kappa"])
    except Exception as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        log.error("client %s model %s seed %s failed:\n%s", cfg.client, cfg.model.name, cfg.seed, traceback.format_exc())
        atomic_write_json(metrics_path, record)
        if cfg.get("strict"):
            raise
        return record
    from fm_bio.training.trainer import process_rank

    if process_rank() > 0:  # DDP: rank 0 writes the job's results
        return record
    all_preds = pd.concat(preds, ignore_index=True).sort_values("epoch_index")
    record["metrics"] = compute_metrics(all_preds["y_true"].to_numpy(), all_preds["y_pred"].to_numpy())
    record["folds"] = folds
    atomic_write_text(out / "predictions.csv", all_preds.to_csv(index=False))
    atomic_write_json(metrics_path, record)
    log_job_to_wandb(cfg, record)
    m = record["metrics"]
    log.info("client %s %s seed %s (all %d folds, %d epochs): accuracy=%.3f macro_f1=%.3f kappa=%.3f -> %s",
             record["client"], cfg.model.name, cfg.seed, len(folds), m["n_epochs"], m["accuracy"], m["macro_f1"],
             m["kappa"], metrics_path)
    return record


def finished_record(metrics_path: Path, job_hash: str) -> dict[str, Any] | None:
    """The record of a job that already finished successfully with the same settings, else None."""
    import json

    try:
        record = json.loads(metrics_path.read_text())
    except (OSError, ValueError):
        return None
    ok = record.get("status") == "ok" and record.get("settings_hash") == job_hash
    return record if ok and (metrics_path.parent / "predictions.csv").exists() else None


def fit_predict_classic(cfg: DictConfig, dm: pl.LightningDataModule, inputs: dict[str, Any]) -> pd.DataFrame:
    """``model=classic`` / ``classic_population``: gradient boosting on hand-crafted features, scored on the
    client's test block of the same split as the deep models.

    ``model.train_on=client`` trains on the client's training + validation blocks (no early stopping needed);
    ``population`` trains on every labelled epoch of the non-client subjects (the cache's subjects minus
    ``split.subjects.holdout``), never on the client. ``inputs`` memoises arrays and features across folds.
    """
    from fm_bio.data import cache
    from fm_bio.models.classic import make_classifier

    if not inputs:
        inputs["manifest"] = cache.load_manifest(dm.cache_root)["subjects"]
        inputs["client"] = _classic_inputs(dm.cache_root, dm.client_subject, inputs["manifest"][dm.client_subject])
    arrays, features = inputs["client"]
    test_rows = dm.dataset("test").sample_row
    train_on = str(cfg.model.get("train_on", "client"))
    new_classifier = partial(make_classifier, int(cfg.seed), bool(cfg.model.class_weighted_loss),
                             int(cfg.model.max_iter), float(cfg.model.learning_rate))
    if train_on == "population":
        if "model" not in inputs:
            manifest = inputs["manifest"]
            holdout = {str(h) for h in (cfg.split.subjects.get("holdout") or [])} | {dm.client_subject}
            population = sorted(s for s in manifest if s not in holdout)
            if not population:
                raise ValueError(f"model={cfg.model.name}: no population subjects left in {dm.cache_root} after "
                                 f"holding out {sorted(holdout)}")
            xs, ys = [], []
            for subject in population:
                sub_arrays, sub_features = _classic_inputs(dm.cache_root, subject, manifest[subject])
                labelled = sub_arrays["label"] >= 0
                xs.append(sub_features[labelled])
                ys.append(sub_arrays["label"][labelled])
            inputs["model"] = new_classifier().fit(np.concatenate(xs), np.concatenate(ys))
            log.info("classic population model trained on %d subjects (%d epochs), clients held out: %s",
                     len(population), sum(len(y) for y in ys), sorted(holdout))
        clf = inputs["model"]
    elif train_on == "client":
        fit_rows = np.concatenate([dm.dataset(s).sample_row for s in ("train", "val") if dm.dataset(s) is not None])
        clf = new_classifier().fit(features[fit_rows], arrays["label"][fit_rows])
    else:
        raise ValueError(f"model.train_on={train_on!r}; options: client, population")
    return pd.DataFrame({"epoch_index": arrays["epoch_index"][test_rows].astype(np.int64),
                         "y_true": arrays["label"][test_rows].astype(np.int64),
                         "y_pred": clf.predict(features[test_rows]).astype(np.int64)})


def _classic_inputs(cache_root: Path, subject: str, entry: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One subject's cached arrays (label, epoch_index, hr_bpm, activity) and its feature matrix; ``entry`` is
    the subject's manifest entry."""
    from fm_bio.data import cache
    from fm_bio.models.classic import epoch_features

    names = ["label", "epoch_index", "hr_bpm"] + (["activity"] if "activity" in entry["modalities"] else [])
    arrays = cache.open_subject(cache_root, subject, names, mmap=False)
    return arrays, epoch_features(arrays, entry["n_night_epochs"])


def log_job_to_wandb(cfg: DictConfig, record: dict[str, Any]) -> None:
    """One wandb run per job (offline unless WANDB_MODE=online), grouped per sweep; always finished."""
    wcfg = (cfg.get("logger") or {}).get("wandb")
    if not wcfg or "project" not in wcfg:  # logger=csv (an experiment may still set wandb.group)
        return
    import wandb

    from fm_bio.training.loggers import plain_config, subject_label

    w = to_plain(wcfg)
    Path(w["save_dir"]).mkdir(parents=True, exist_ok=True)
    client = subject_label(record["client"], cfg)
    tags = [f"client:{client}", f"model:{record['model']}", f"seed:{record['seed']}"]
    run = wandb.init(project=w["project"], mode=w["mode"], dir=w["save_dir"], group=w.get("group"),
                     job_type="finetune", tags=[*(w.get("tags") or []), *tags], config=plain_config(cfg),
                     name=f"{client}-{record['model']}-s{record['seed']}", reinit="finish_previous")
    try:
        m = record["metrics"]
        run.summary.update({k: m[k] for k in ("accuracy", "macro_f1", "kappa", "n_epochs")})
        run.summary.update({f"f1_{c}": m.get(f"f1_{c}") for c in CLASS_NAMES})
        table = wandb.Table(columns=["true \\ predicted", *CLASS_NAMES],
                            data=[[CLASS_NAMES[i], *row] for i, row in enumerate(m["confusion"])])
        fold_table = wandb.Table(columns=list(record["folds"][0]), data=[list(f.values()) for f in record["folds"]])
        run.log({"confusion_matrix": table, "folds": fold_table})
    finally:
        run.finish()
