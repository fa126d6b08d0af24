"""Pretraining throughput benchmark: training samples/s and peak memory of the default encoder
(``deepsense``), the ``transformer`` alternative and the prototype-sized ``deepsense_paper`` on this CPU,
each with the FOCAL objective + subject adversary on two augmented views (what one training step does).

Each configuration runs in its own process so that peak memory is its own.

    python -m fm_bio.bench.pretrain_bench [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import resource
import time
from pathlib import Path

from fm_bio.bench.common import write_report

log = logging.getLogger(__name__)
SHAPES = {"ecg": [1, 7680], "hr": [1, 30], "activity": [1, 1]}
CONFIGS = [("deepsense", 64), ("transformer", 64), ("deepsense_paper", 8)]


def _run(name: str, batch_size: int, steps: int, queue: mp.Queue) -> None:
    import torch
    import yaml

    from fm_bio.training.pretrain_module import PretrainModule
    from fm_bio.utils.config import conf_dir

    torch.manual_seed(0)
    enc = yaml.safe_load((conf_dir() / "encoder" / f"{name}.yaml").read_text())
    obj = yaml.safe_load((conf_dir() / "loss" / "focal.yaml").read_text())["objective"]
    adv = yaml.safe_load((conf_dir() / "loss" / "subject_adversary.yaml").read_text())["adversary"]
    aug = yaml.safe_load((conf_dir() / "augment" / "default.yaml").read_text())
    module = PretrainModule(SHAPES, enc, obj, adv, n_subjects=10, augment=aug)
    module._progress = lambda: 0.5  # no trainer here
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    batch = {m: torch.randn(batch_size, *s) for m, s in SHAPES.items()}
    batch["subject"] = torch.randint(0, 10, (batch_size,))
    module.log = lambda *a, **k: None
    module.log_dict = lambda *a, **k: None

    def step() -> None:
        opt.zero_grad()
        loss = module._step(batch, "train")
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    n_params = sum(p.numel() for p in module.encoder.parameters())
    queue.put({"encoder": name, "batch_size": batch_size, "encoder_parameters": n_params,
               "seconds_per_step": round(seconds, 4), "samples_per_s": round(batch_size / seconds, 1),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)})


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark and write ``experiments/bench/pretrain.{md,json}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ctx = mp.get_context("spawn")
    rows = []
    for name, bs in CONFIGS:
        queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(name, bs, args.steps if name != "deepsense_paper" else 2, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
        log.info("%s", json.dumps(rows[-1]))
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["throughput_vs_deepsense"] = round(r["samples_per_s"] / base, 3)
    notes = [
        "One training step = two augmented views of {ecg [1, 7680], hr [1, 30], activity [1, 1]} through the "
        "encoder, the FOCAL objective and the subject adversary, backward and an AdamW step; CPU, torch's default "
        "threads (2 cores), random inputs, mean over the timed steps after one warm-up step.",
        "Peak memory is the resident set of a fresh process per encoder (includes torch itself, ~300 MB).",
        "deepsense_paper is meant for a GPU; on this CPU it is timed with a batch of 8 and 2 steps.",
    ]
    path = write_report("pretrain", "Pretraining throughput on CPU", rows, notes, {})
    log.info("wrote %s", path)
    return path


if __name__ == "__main__":
    main()
