"""Loader benchmark: shuffled-batch throughput (samples/s) from the per-subject memory-mapped cache versus
the prototype's layout (one ``.npz`` file per 30-s segment, same content), in the same run.

    python -m fm_bio.bench.loader_bench [--subjects 8] [--epochs-per-subject 900] [--batches 20]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fm_bio.bench.common import peak_rss_mb, write_report
from fm_bio.data import cache
from fm_bio.data.datasets import EpochDataset, collate_prebatched

log = logging.getLogger(__name__)
WIDTHS = {"ecg": 7680, "hr": 30, "activity": 1}


class NpzSegmentDataset(Dataset):
    """The prototype's layout: one ``.npz`` per 30-s segment, loaded one by one."""

    def __init__(self, files: list[Path], modalities: tuple[str, ...]) -> None:
        self.files, self.modalities = files, modalities

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        with np.load(self.files[i]) as z:
            item = {m: torch.from_numpy(z[m][None]) for m in self.modalities}
            item["label"] = torch.tensor(int(z["label"]))
        return item


def build_layouts(work: Path, n_subjects: int, n_epochs: int, seed: int = 0) -> tuple[Path, list[Path]]:
    """Write the same random content as a cache and as one .npz per segment."""
    rng = np.random.default_rng(seed)
    cache_root, npz_root = work / "cache", work / "npz"
    npz_root.mkdir(parents=True)
    files, entries = [], []
    for s in range(n_subjects):
        sid = f"{s + 1:04d}"
        arrays = {m: rng.standard_normal((n_epochs, w), dtype=np.float32) for m, w in WIDTHS.items()}
        arrays["label"] = rng.integers(0, 4, n_epochs).astype(np.int8)
        arrays["epoch_index"] = np.arange(n_epochs, dtype=np.int32)
        arrays["t_start_s"] = np.arange(n_epochs) * 30.0
        entry = {"subject": sid, "n_epochs": n_epochs, "modalities": sorted(WIDTHS), "config_hash": "bench"}
        entries.append(cache.write_subject(cache_root, sid, arrays, entry))
        for i in range(n_epochs):
            path = npz_root / f"{sid}_{i:05d}.npz"
            np.savez(path, **{m: arrays[m][i] for m in WIDTHS}, label=arrays["label"][i])
            files.append(path)
    manifest = cache.manifest_from_entries("bench", "bench", entries, {})
    cache.atomic_write_json(cache_root / cache.MANIFEST_NAME, manifest)
    return cache_root, files


def throughput(loader: DataLoader, n_batches: int) -> float:
    """Samples per second over ``n_batches`` shuffled batches (after one warm-up batch)."""
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(n_batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        n += len(batch["label"])
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark and write ``experiments/bench/loader.{md,json}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--epochs-per-subject", type=int, default=900)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(tempfile.mkdtemp(prefix="fm-bio-loader-"))
    try:
        log.info("writing %d subjects x %d epochs in both layouts under %s", args.subjects, args.epochs_per_subject, work)
        cache_root, files = build_layouts(work, args.subjects, args.epochs_per_subject)
        subjects = [f"{s + 1:04d}" for s in range(args.subjects)]
        rows = []
        for modalities in (("ecg", "hr", "activity"), ("hr", "activity")):
            for workers in (0, 2):
                g = torch.Generator().manual_seed(0)
                npz = DataLoader(NpzSegmentDataset(files, modalities), batch_size=args.batch_size, shuffle=True,
                                 num_workers=workers, generator=g)
                ds = EpochDataset(cache_root, [(s, None) for s in subjects], modalities=modalities)
                mm = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                collate_fn=collate_prebatched, generator=torch.Generator().manual_seed(0))
                for loader in (npz, mm):  # warm the page cache for both layouts
                    throughput(loader, 2)
                npz_rate, mm_rate = throughput(npz, args.batches), throughput(mm, args.batches)
                rows.append({"modalities": "+".join(modalities), "num_workers": workers,
                             "npz_per_segment_samples_per_s": round(npz_rate), "cache_memmap_samples_per_s": round(mm_rate),
                             "speed-up": round(mm_rate / npz_rate, 1)})
                log.info("%s", rows[-1])
        notes = [
            f"{args.subjects} subjects x {args.epochs_per_subject} epochs, shuffled batches of {args.batch_size}, "
            f"{args.batches} batches per measurement after warm-up; warm page cache; same content in both layouts.",
            "npz: torch default collate of per-item np.load; cache: EpochDataset.__getitems__ (one sorted "
            "fancy-index gather per subject and modality) with collate_prebatched.",
            f"Peak resident memory of the benchmark process: {peak_rss_mb():.0f} MB.",
        ]
        path = write_report("loader", "Loader throughput: memory-mapped cache vs one .npz per segment", rows, notes, {})
        log.info("wrote %s", path)
        return path
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
