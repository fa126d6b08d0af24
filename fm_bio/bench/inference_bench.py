"""Inference benchmark of a client's classifier: per-epoch latency when streaming (a batch of one 30-s epoch,
as on a watch) and for a whole 8-h night in one batch (per epoch, amortised), and its size on disk as a
Lightning checkpoint, a weights-only ``state_dict`` and the exported ``torch.export`` program
(:func:`fm_bio.training.export.export_classifier`). Baselines in the same run: the eager PyTorch model
(latency ratios are exported / eager) and the classical gradient-boosting model (``model=classic``).

The exported model is checked against the eager one on the whole night (argmax agreement, max |logit diff|).

    python -m fm_bio.bench.inference_bench [--stream-calls 200] [--night-calls 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from fm_bio.bench.common import time_call, write_report
from fm_bio.bench.finetune_bench import (
    NIGHT_EPOCHS,
    build_module,
    client_datamodule,
    write_fm_artifacts,
    write_night_cache,
)

log = logging.getLogger(__name__)
# (dataset, variant): base has only the client's modalities; an FM variant carries the FM's encoder, which
# on Apple Watch data includes the (unused) ECG branch of the MESA-pretrained model.
MODELS = [("applewatch", "base"), ("applewatch", "fm_finetune"), ("mesa", "base"), ("mesa", "fm_finetune")]


def _kb(path: Path) -> float:
    return round(path.stat().st_size / 1024.0, 1)


def lightning_checkpoint(module: Any, dm: Any, path: Path) -> Path:
    """A real Lightning checkpoint of ``module`` after one training step (what the study's ModelCheckpoint
    writes: weights, optimizer state, hyperparameters, loops)."""
    import pytorch_lightning as pl

    from fm_bio.training.trainer import quiet_known_warnings

    quiet_known_warnings()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         default_root_dir=str(path.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(path)
    return path


def night_batch(shapes: dict[str, list[int]], n_epochs: int, seed: int = 0) -> dict[str, Any]:
    """A whole night as one batch dict (random signals, every modality present)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    batch = {m: torch.randn(n_epochs, *s, generator=gen) for m, s in shapes.items()}
    batch["modality_present"] = torch.ones(n_epochs, len(shapes), dtype=torch.bool)
    return batch


def _deep_rows(dataset: str, variant: str, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from fm_bio.training.export import example_inputs, export_classifier, load_exported

    root, subject = write_night_cache(work / f"cache-{dataset}", dataset)
    dm = client_datamodule(root, dataset, subject, context_epochs=0)
    shapes = {m: list(s) for m, s in dm.modality_shapes.items()}
    fm, pop = write_fm_artifacts(work, context_len=1)
    torch.manual_seed(0)
    module = build_module(variant, shapes, fm, pop)
    ckpt = lightning_checkpoint(module, dm, work / f"{dataset}-{variant}.ckpt")
    module.eval()
    weights = work / f"{dataset}-{variant}.state_dict.pt"
    torch.save(module.state_dict(), weights)
    night = night_batch(shapes, NIGHT_EPOCHS)
    t0 = time.perf_counter()
    exported_path = export_classifier(module, {k: v[:4] for k, v in night.items()}, work / f"{dataset}-{variant}.pt2")
    export_s = time.perf_counter() - t0
    exported, _ = load_exported(exported_path)
    module.eval()
    one = {k: v[:1] for k, v in night.items()}
    runners = {"eager (ClassifierModule)": (lambda b: module(b)),
               "exported (torch.export .pt2)": (lambda b: exported(*example_inputs(b, module.modalities)))}
    rows, timings = [], {}
    with torch.no_grad():
        want = module(night)
        got = exported(*example_inputs(night, module.modalities))
        for name, run in runners.items():
            run(one)  # warm-up
            stream_s, _ = time_call(lambda run=run: run(one), args.stream_calls)
            night_s, _ = time_call(lambda run=run: run(night), args.night_calls)
            timings[name] = (stream_s, night_s)
    agree = float((want.argmax(-1) == got.argmax(-1)).float().mean())
    diff = float((want - got).abs().max())
    eager_stream, eager_night = timings["eager (ClassifierModule)"]
    inputs = " ".join(f"{m}{shapes[m]}" for m in shapes).replace(" ", "")
    for name, (stream_s, night_s) in timings.items():
        eager = name.startswith("eager")
        rows.append({"dataset": dataset, "model": variant, "inputs": inputs, "runtime / file": name,
                     "size_kb": _kb(weights if eager else exported_path),
                     "stream_ms_per_epoch": round(stream_s * 1e3, 3),
                     "night_ms_per_epoch": round(night_s * 1e3 / NIGHT_EPOCHS, 4),
                     "night_s": round(night_s, 3),
                     "stream_vs_eager": round(stream_s / eager_stream, 3), "night_vs_eager": round(night_s / eager_night, 3),
                     "note": ("size: weights-only state_dict" if eager else
                              f"export {export_s:.1f} s; night argmax agreement {agree:.4f}, max |logit diff| {diff:.2g}")})
    rows.append({"dataset": dataset, "model": variant, "inputs": inputs,
                 "runtime / file": "Lightning checkpoint (.ckpt)", "size_kb": _kb(ckpt), "stream_ms_per_epoch": "",
                 "night_ms_per_epoch": "", "night_s": "", "stream_vs_eager": "", "night_vs_eager": "",
                 "note": "weights + AdamW state + hyperparameters + loop state; loads into the eager model"})
    return rows


def _classic_rows(dataset: str, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from fm_bio.data import cache
    from fm_bio.models.classic import epoch_features, make_classifier

    root, subject = write_night_cache(work / f"cache-{dataset}", dataset)
    names = ["label", "epoch_index", "hr_bpm", "activity"]
    arrays = cache.open_subject(root, subject, names, mmap=False)
    features_s, features = time_call(lambda: epoch_features(arrays, NIGHT_EPOCHS), args.night_calls)
    t0 = time.perf_counter()
    clf = make_classifier(seed=0).fit(features, arrays["label"])
    fit_s = time.perf_counter() - t0
    size_kb = round(len(pickle.dumps(clf)) / 1024.0, 1)
    one = features[:1]
    clf.predict(one)
    stream_s, _ = time_call(lambda: clf.predict(one), args.stream_calls)
    night_s, _ = time_call(lambda: clf.predict(features), args.night_calls)
    return [{"dataset": dataset, "model": "classic", "inputs": f"{features.shape[1]} features per epoch",
             "runtime / file": "scikit-learn HistGradientBoosting (pickle)", "size_kb": size_kb,
             "stream_ms_per_epoch": round(stream_s * 1e3, 3),
             "night_ms_per_epoch": round((night_s + features_s) * 1e3 / NIGHT_EPOCHS, 4),
             "night_s": round(night_s + features_s, 3), "stream_vs_eager": "", "night_vs_eager": "",
             "note": f"predict only when streaming (features need +-10 epochs: a 5-min delay); night = features "
                     f"{features_s * 1e3:.0f} ms + predict {night_s * 1e3:.0f} ms; fit {fit_s:.1f} s"}]


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark and write ``experiments/bench/inference.{md,json}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stream-calls", type=int, default=200, help="timed batch-of-1 calls (median)")
    parser.add_argument("--night-calls", type=int, default=5, help="timed whole-night calls (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: one core, as on a watch)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="fm-bio-bench-inf-"))
    rows: list[dict[str, Any]] = []
    try:
        for dataset, variant in MODELS:
            rows += _deep_rows(dataset, variant, work, args)
            log.info("%s %s done", dataset, variant)
        for dataset in ("applewatch", "mesa"):
            rows += _classic_rows(dataset, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = [
        f"CPU, {args.threads} torch thread(s), eval mode, no grad. Streaming: median of {args.stream_calls} calls "
        f"with a batch of one epoch; night: median of {args.night_calls} calls with all {NIGHT_EPOCHS} epochs of an "
        f"8-h night in one batch, divided by {NIGHT_EPOCHS}. Load average at the start: {load:.1f} on "
        f"{os.cpu_count()} cores (another job shared the machine; medians resist that).",
        "Default encoder (deepsense) and head, context_epochs=0, input shapes from the DataModule; random weights "
        "(latency does not depend on them). stream_vs_eager / night_vs_eager: exported latency / eager latency, "
        "same run.",
        "Sizes: weights-only state_dict (`torch.save(module.state_dict())`), the Lightning checkpoint after one "
        "training step (as ModelCheckpoint writes it during the study), the exported program (weights + graph). "
        "fm_finetune on Apple Watch carries the MESA-pretrained encoder's ECG branch in its checkpoint and state_dict "
        "although the watch has no ECG; the exported program keeps only the branches it uses.",
        "classic: gradient boosting (200 iterations x 4 classes) fitted on the same synthetic night; its size is "
        "the pickled fitted model.",
    ]
    path = write_report("inference", "Per-epoch inference latency and model size of a client's classifier", rows,
                        notes, {"night_epochs": NIGHT_EPOCHS})
    log.info("wrote %s", path)
    return path


if __name__ == "__main__":
    main()
