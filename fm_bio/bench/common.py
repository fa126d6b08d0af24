"""Helpers shared by the benchmarks: timing, peak memory, machine description, report writing."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(os.environ.get("FM_BIO_BENCH_DIR", "experiments/bench"))


def time_call(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Median wall-clock seconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def write_report(name: str, title: str, rows: list[dict[str, Any]], notes: list[str], extra: dict[str, Any]) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` (a table of ``rows``) under ``BENCH_DIR``."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    data = {"title": title, "machine": machine(), "rows": rows, "notes": notes, **extra}
    (BENCH_DIR / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    cols = list(rows[0]) if rows else []
    lines = [f"# {title}", "", f"Measured {data['machine']['date']} on {data['machine']['cores']} cores, "
             f"torch {data['machine']['torch']}, numpy {data['machine']['numpy']}.", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    lines += [""] + [f"- {n}" for n in notes] + [""]
    path = BENCH_DIR / f"{name}.md"
    path.write_text("\n".join(lines))
    return path


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> float:
    """Reset this process's peak resident memory (Linux: ``/proc/self/clear_refs``) and return the current
    resident memory (MB); on other systems nothing is reset and the peak so far is returned."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return peak_rss_mb()
    return _proc_status_mb("VmRSS") or peak_rss_mb()


def process_peak_rss_mb() -> float:
    """Peak resident memory (MB) of this process since it started or since :func:`reset_peak_rss` (Linux
    ``VmHWM``). Use it in spawned benchmark processes: there ``ru_maxrss`` also counts the parent's resident
    memory at the fork. Falls back to :func:`peak_rss_mb` where ``/proc`` is unavailable."""
    return _proc_status_mb("VmHWM") or peak_rss_mb()
