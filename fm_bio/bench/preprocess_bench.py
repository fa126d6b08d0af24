"""Preprocessing benchmark: seconds per 8-hour MESA-format night, EDF -> cache, and its parts, next to
the R-peak detectors alone (same night, same run).

    python -m fm_bio.bench.preprocess_bench [--hours 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fm_bio.bench.common import peak_rss_mb, time_call, write_report
from fm_bio.data import cache
from fm_bio.data.sources import MesaSource
from fm_bio.preprocessing import ecg as ecg_ops
from fm_bio.preprocessing.pipeline import PreprocessConfig, preprocess_night

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark and write ``experiments/bench/preprocess.{md,json}``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=8.0, help="night length in hours")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from fm_bio.demo.generate import generate_mesa_demo

    work = Path(tempfile.mkdtemp(prefix="fm-bio-bench-"))
    try:
        raw = work / "mesa"
        log.info("generating one %.1f-h MESA-format night in %s", args.hours, raw)
        generate_mesa_demo(raw, n_subjects=1, seed=123, night_hours=(args.hours, args.hours))
        source = MesaSource(raw)
        sid = source.subjects()[0]
        record = source.load(sid)
        hours = record.n_epochs * 30 / 3600
        ecg = record.ecg.data
        rows = []

        def add(stage: str, seconds: float, note: str = "") -> None:
            rows.append({"stage": stage, "seconds_per_night": round(seconds / hours * 8, 4), "note": note})

        t_read, _ = time_call(lambda: MesaSource(raw).load(sid), args.repeats)
        add("read EDF (EKG+HR) + XML + actigraphy", t_read)
        t_se, peaks = time_call(lambda: ecg_ops.detect_rpeaks(ecg, 256.0, "sleepecg"), args.repeats)
        add("R-peaks alone: sleepecg", t_se, f"{len(peaks)} beats")
        t_nk, peaks_nk = time_call(lambda: ecg_ops.detect_rpeaks(ecg, 256.0, "neurokit"), args.repeats)
        add("R-peaks alone: neurokit2 (clean + peaks)", t_nk, f"{len(peaks_nk)} beats")
        t_bp, _ = time_call(lambda: ecg_ops.bandpass(ecg, 256.0), args.repeats)
        add("ECG band-pass (whole night)", t_bp)
        cfg = PreprocessConfig()
        t_pre, night = time_call(lambda: preprocess_night(record, cfg), args.repeats)
        add("preprocess_night (sleepecg)", t_pre)
        t_pre_nk, _ = time_call(lambda: preprocess_night(record, PreprocessConfig(rpeak_detector="neurokit")), args.repeats)
        add("preprocess_night (neurokit2)", t_pre_nk)
        root = work / "cache"
        t_write, _ = time_call(lambda: cache.write_subject(root, sid, night.arrays, night.entry), args.repeats)
        add("write subject to cache (atomic, hashed)", t_write)

        def whole() -> None:
            rec = MesaSource(raw).load(sid)
            out = preprocess_night(rec, cfg)
            cache.write_subject(work / "cache2", sid, out.arrays, out.entry)

        t_whole, _ = time_call(whole, args.repeats)
        add("whole EDF -> cache path (default settings)", t_whole)
        same = int(np.sum(np.min(np.abs(peaks_nk[:, None] - peaks[None, :]), axis=1) <= 10)) if len(peaks) else 0
        notes = [
            f"One generated MESA-format night of {hours:.2f} h (seconds scaled to an 8-h night), median of "
            f"{args.repeats} runs, one core.",
            f"Whole path / sleepecg R-peak detection alone: {t_whole / t_se:.1f}x; neurokit2 / sleepecg detection: "
            f"{t_nk / t_se:.1f}x; {same} of {len(peaks_nk)} neurokit2 beats within 40 ms of a sleepecg beat.",
            f"Peak resident memory of the benchmark process: {peak_rss_mb():.0f} MB.",
        ]
        path = write_report("preprocess", "Preprocessing: seconds per 8-hour MESA-format night", rows, notes,
                            {"night_hours": hours})
        log.info("wrote %s", path)
        for r in rows:
            log.info("%-45s %8.3f s  %s", r["stage"], r["seconds_per_night"], r["note"])
        return path
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
