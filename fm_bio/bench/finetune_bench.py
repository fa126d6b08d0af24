"""Fine-tuning throughput benchmark: training samples/s and peak memory of the per-client classifier
(``ClassifierModule``: base / fm_probe / fm_finetune / fm_population) on this CPU, for Apple Watch inputs
(hr + activity) and MESA inputs (ecg + hr + activity), next to ``base`` (the in-run baseline) and one
self-supervised pretraining step on the same inputs.

Input shapes and the batch come from the real DataModules (``AppleWatchDataModule``, ``MesaDataModule``)
over a synthetic one-night cache written with the real cache writer; encoder weights are random (speed
does not depend on them). Each configuration runs in a fresh process so that its peak memory is its own.

    python -m fm_bio.bench.finetune_bench [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fm_bio.bench.common import process_peak_rss_mb, time_call, write_report

log = logging.getLogger(__name__)

NIGHT_EPOCHS = 960  # 8 h of 30-s epochs
SAMPLES_PER_EPOCH = {"ecg": 7680, "hr": 30, "activity": 1}
DATASETS = {  # name -> (DataModule class, modalities, subject id)
    "applewatch": ("AppleWatchDataModule", ("hr", "activity"), "1066528"),
    "mesa": ("MesaDataModule", ("ecg", "hr", "activity"), "0001"),
}
FM_MODALITIES = ("ecg", "hr", "activity")  # the foundation model is pretrained on MESA's three modalities
# (dataset, context_epochs, variants): the default context (0) and, for the watch, a 5-epoch window.
CONFIGS = [
    ("applewatch", 0, ("base", "fm_probe", "fm_finetune", "fm_population", "pretrain")),
    ("applewatch", 2, ("base", "fm_probe")),
    ("mesa", 0, ("base", "fm_probe", "fm_finetune", "fm_population", "pretrain")),
]


def write_night_cache(root: Path, dataset: str, n_epochs: int = NIGHT_EPOCHS, seed: int = 0) -> tuple[Path, str]:
    """One synthetic night of ``dataset`` in the cache format (real writer + manifest); returns (root, subject)."""
    from fm_bio.data import cache
    from fm_bio.data.labels import count_labels

    _, modalities, subject = DATASETS[dataset]
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, 4, n_epochs // 10 + 1), 10)[:n_epochs].astype(np.int8)
    arrays: dict[str, np.ndarray] = {"label": labels, "epoch_index": np.arange(n_epochs, dtype=np.int32),
                                     "t_start_s": np.arange(n_epochs) * 30.0}
    for m in modalities:
        arrays[cache.MODALITY_FILES[m]] = rng.standard_normal((n_epochs, SAMPLES_PER_EPOCH[m]), dtype=np.float32)
    arrays["hr_bpm"] = (60 + 8 * rng.standard_normal((n_epochs, 30))).astype(np.float32)
    arrays["activity_counts"] = np.abs(arrays["activity"])
    entry = {"subject": subject, "n_epochs": n_epochs, "n_night_epochs": n_epochs, "label_counts": count_labels(labels),
             "qc": {}, "config_hash": "bench", "modalities": list(modalities)}
    entries = [cache.write_subject(root, subject, arrays, entry)]
    cache.atomic_write_json(root / cache.MANIFEST_NAME, cache.manifest_from_entries(dataset, "bench", entries, {}))
    return root, subject


def client_datamodule(cache_root: Path, dataset: str, subject: str, context_epochs: int, batch_size: int = 256) -> Any:
    """The client's DataModule (blocked k-fold, fold 0), set up for fitting."""
    from fm_bio.data import datamodules

    cls_name, modalities, _ = DATASETS[dataset]
    dm = getattr(datamodules, cls_name)(cache_root=cache_root, modalities=list(modalities), context_epochs=context_epochs,
                                        batch_size=batch_size, client=subject,
                                        split={"scheme": "blocked_kfold", "n_folds": 5, "fold": 0})
    dm.setup("fit")
    return dm


def encoder_config() -> dict[str, Any]:
    """The default encoder config (``conf/encoder/deepsense.yaml``)."""
    import yaml

    from fm_bio.utils.config import conf_dir

    return yaml.safe_load((conf_dir() / "encoder" / "deepsense.yaml").read_text())


def write_fm_artifacts(work: Path, context_len: int, seed: int = 0) -> tuple[Path, Path]:
    """A randomly initialised 'foundation model' on MESA's modalities (``encoder.pt``) and a population
    artifact (encoder + head, ``population.pt``), in the formats the classifier reads."""
    import torch

    from fm_bio.models.encoders import build_encoder
    from fm_bio.training.artifacts import export_encoder
    from fm_bio.training.classifier_module import ClassificationHead

    torch.manual_seed(seed)
    enc = encoder_config()
    encoder = build_encoder(enc.pop("name"), {m: [context_len, SAMPLES_PER_EPOCH[m]] for m in FM_MODALITIES}, **enc)
    fm = export_encoder(encoder, work / "encoder.pt")
    head = ClassificationHead(encoder.embedding_dim)
    pop = export_encoder(encoder, work / "population.pt", extra={"head_state_dict": head.state_dict()})
    return fm, pop


def build_module(variant: str, shapes: dict[str, list[int]], fm: Path | None = None, pop: Path | None = None) -> Any:
    """A ``ClassifierModule`` of ``variant`` with the default encoder/model settings."""
    from fm_bio.training.classifier_module import ClassifierModule

    return ClassifierModule(variant, shapes, encoder=encoder_config(), encoder_artifact=str(fm) if fm else None,
                            population_artifact=str(pop) if pop else None, class_weights=[1.0, 1.0, 1.0, 1.0])


def _run(dataset: str, context_epochs: int, variant: str, steps: int, threads: int, queue: mp.Queue) -> None:
    """One configuration in a fresh process: median of ``steps`` timed training steps after one warm-up step."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="fm-bio-bench-ft-"))
    try:
        root, subject = write_night_cache(work / "cache", dataset)
        dm = client_datamodule(root, dataset, subject, context_epochs)
        shapes = {m: list(s) for m, s in dm.modality_shapes.items()}
        batch = next(iter(dm.train_dataloader()))
        batch_size = int(batch["label"].shape[0])
        rss_before_model_mb = process_peak_rss_mb()
        if variant == "pretrain":
            module, opt, step_fn = _pretrain_step(shapes, batch)
        else:
            fm, pop = write_fm_artifacts(work, 2 * context_epochs + 1)
            module = build_module(variant, shapes, fm, pop)
            module.log = lambda *a, **k: None  # no trainer here
            module.train()
            opt = module.configure_optimizers()

            def step_fn() -> None:
                opt.zero_grad()
                module.training_step(batch, 0).backward()
                opt.step()

        step_fn()  # warm-up
        seconds, _ = time_call(step_fn, steps)
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        queue.put({"dataset": dataset, "context_epochs": context_epochs,
                   "input_shapes": " ".join(f"{m}{shapes[m]}" for m in shapes).replace(" ", ""),
                   "variant": variant, "batch_size": batch_size, "trainable_parameters": int(trainable),
                   "seconds_per_step": round(seconds, 4), "samples_per_s": round(batch_size / seconds, 1),
                   "peak_rss_mb": round(process_peak_rss_mb()),
                   "peak_rss_before_model_mb": round(rss_before_model_mb)})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pretrain_step(shapes: dict[str, list[int]], batch: dict[str, Any]) -> tuple[Any, Any, Any]:
    """One self-supervised pretraining step (FOCAL + subject adversary, two augmented views) on ``batch``."""
    import torch
    import yaml

    from fm_bio.training.pretrain_module import PretrainModule
    from fm_bio.utils.config import conf_dir

    obj = yaml.safe_load((conf_dir() / "loss" / "focal.yaml").read_text())["objective"]
    adv = yaml.safe_load((conf_dir() / "loss" / "subject_adversary.yaml").read_text())["adversary"]
    aug = yaml.safe_load((conf_dir() / "augment" / "default.yaml").read_text())
    module = PretrainModule(shapes, encoder_config(), obj, adv, n_subjects=10, augment=aug)
    module._progress = lambda: 0.5  # no trainer here
    module.log = lambda *a, **k: None
    module.log_dict = lambda *a, **k: None
    batch = {**batch, "subject": torch.randint(0, 10, batch["label"].shape)}
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad()
        module._step(batch, "train").backward()
        opt.step()

    return module, opt, step


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark and write ``experiments/bench/finetune.{md,json}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    load = os.getloadavg()[0]
    ctx = mp.get_context("spawn")
    rows = []
    for dataset, context_epochs, variants in CONFIGS:
        for variant in variants:
            queue = ctx.Queue()
            proc = ctx.Process(target=_run, args=(dataset, context_epochs, variant, args.steps, args.threads, queue))
            proc.start()
            rows.append(queue.get())
            proc.join()
            log.info("%s", json.dumps(rows[-1]))
    for r in rows:
        base = next(b for b in rows if (b["dataset"], b["context_epochs"], b["variant"]) ==
                    (r["dataset"], r["context_epochs"], "base"))
        r["throughput_vs_base"] = round(r["samples_per_s"] / base["samples_per_s"], 3)
    notes = [
        "One training step = forward of a DataModule training batch (the default batch_size 256; blocked k-fold "
        "fold 0 of one synthetic 8-h night, 960 epochs) through the classifier, class-weighted cross-entropy, "
        "backward and the module's own AdamW step (fm_probe: head only; fm_finetune/fm_population: encoder at "
        f"0.1x lr). Default encoder (deepsense) and head; CPU, {args.threads} torch thread(s) per process; median of "
        f"{args.steps} timed steps after one warm-up step (the median resists interference from other jobs "
        f"on the machine; load average at the start: {load:.1f} on {os.cpu_count()} cores).",
        "'pretrain' = one self-supervised pretraining step (FOCAL + subject adversary, two augmented views) on the "
        "same batch and shapes: the cost of pretraining per sample next to fine-tuning.",
        "throughput_vs_base: samples/s relative to `base` on the same inputs, measured in the same run.",
        "Peak memory is the resident set of a fresh process per row (torch, Lightning, the cache and the batch "
        "included; peak_rss_before_model_mb is that process's peak before the model was built).",
        "Input shapes are what the DataModule serves: [L, T] per modality, L = 2 x context_epochs + 1 epochs, "
        "T samples per epoch (ecg 256 Hz, hr 1 Hz, activity one value per epoch).",
    ]
    path = write_report("finetune", "Per-client classifier fine-tuning throughput on CPU", rows, notes, {})
    log.info("wrote %s", path)
    return path


if __name__ == "__main__":
    main()
