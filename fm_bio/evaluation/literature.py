"""Our numbers beside published ones: a report section with the 4-class predictions also scored as the
coarser problems the literature reports (wake / NREM / REM and wake / sleep).

Published values are quoted from the papers' abstracts (and, for the prototype, from its notebooks); each
row says what was measured, so the reader sees where a comparison is not like for like.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fm_bio.evaluation.metrics import compute_metrics

WAKE, LIGHT, DEEP, REM = 0, 1, 2, 3
COARSE = {
    "3-class (wake / NREM / REM)": np.array([0, 1, 1, 2]),
    "2-class (wake / sleep)": np.array([0, 1, 1, 1]),
}
"""4-class index -> coarse class index."""

PUBLISHED: list[dict[str, str]] = [
    {"source": "Walch et al. 2019, Sleep 42(12) zsz180", "data": "sleep-accel, 31 subjects (Apple Watch)",
     "inputs": "raw motion + PPG heart rate + clock proxy", "design": "population models, cross-validated over subjects",
     "task": "wake / NREM / REM", "result": "accuracy ~0.72 (all features, neural net)"},
    {"source": "Walch et al. 2019", "data": "sleep-accel, 31 subjects", "inputs": "motion + heart rate + clock proxy",
     "design": "as above", "task": "wake / sleep", "result": "accuracy 0.90; sleep sensitivity 0.93, wake specificity 0.596"},
    {"source": "Zhai et al. 2020, IMWUT 4(1)", "data": "MESA (ECG-derived heart rate, older adults)",
     "inputs": "heart rate only", "design": "LSTM, population model, held-out subjects",
     "task": "wake / light / deep / REM", "result": "accuracy 0.674"},
    {"source": "FMBIO prototype (notebooks)", "data": "5 held-out subjects as clients", "inputs": "heart rate + motion",
     "design": "per client, 70/15/15 splits of the client's data", "task": "wake / light / deep / REM",
     "result": "mean accuracy 0.751 (Base) / 0.722 (FM); mean macro-F1 0.542 / 0.499"},
]


def _coarse_metrics(y_true: np.ndarray, y_pred: np.ndarray, mapping: np.ndarray) -> dict[str, float]:
    t, p = mapping[y_true], mapping[y_pred]
    n_classes = int(mapping.max()) + 1
    out = {"accuracy": float(np.mean(t == p))}
    m = compute_metrics(t, p, n_classes=n_classes)
    out["kappa"] = float(m["kappa"])
    if n_classes == 2:  # wake = 0, sleep = 1
        out["sleep_sensitivity"] = float(np.mean(p[t == 1] == 1)) if (t == 1).any() else float("nan")
        out["wake_specificity"] = float(np.mean(p[t == 0] == 0)) if (t == 0).any() else float("nan")
    return out


def coarse_summary(jobs_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and coarse task: the mean over clients of accuracy, kappa (and the wake/sleep rates)."""
    import pandas as pd

    from fm_bio.evaluation.report import load_jobs, model_sort_key

    per: dict[str, dict[str, list[dict[str, float]]]] = {}
    for job in load_jobs(jobs_dir):
        path = job.dir / "predictions.csv"
        if not job.ok or not path.exists():
            continue
        preds = pd.read_csv(path)
        y_true, y_pred = preds["y_true"].to_numpy(int), preds["y_pred"].to_numpy(int)
        for task, mapping in COARSE.items():
            per.setdefault(job.model, {}).setdefault(task, []).append(_coarse_metrics(y_true, y_pred, mapping))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model in sorted(per, key=model_sort_key):
        out[model] = {task: {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} for task, rows in per[model].items()}
    return out


def literature_section(jobs_dir: Path) -> list[str]:
    """Markdown lines: our 4-class predictions scored as 3- and 2-class problems, then the published table."""
    summary = coarse_summary(jobs_dir)
    lines = ["## Beside published results", "",
             "Our 4-class predictions collapsed to the coarser problems the literature reports (mean over clients):", "",
             "| Model | Wake/NREM/REM accuracy | Wake/NREM/REM kappa | Wake/sleep accuracy | Sleep sensitivity | "
             "Wake specificity |", "|---|---|---|---|---|---|"]
    three, two = COARSE
    for model, tasks in summary.items():
        a, b = tasks[three], tasks[two]
        lines.append(f"| {model} | {a['accuracy']:.3f} | {a['kappa']:.3f} | {b['accuracy']:.3f} | "
                     f"{b['sleep_sensitivity']:.3f} | {b['wake_specificity']:.3f} |")
    lines += ["", "| Published | Data | Inputs | Design | Task | Result |", "|---|---|---|---|---|---|"]
    for row in PUBLISHED:
        lines.append("| " + " | ".join(row[k] for k in ("source", "data", "inputs", "design", "task", "result")) + " |")
    lines += ["", "Not like for like:",
              "- Walch et al. trained population models on up to 30 other subjects of the full 31-subject set; the "
              "closest rows here are `classic_population` and `fm_population` (trained on the other subject folds), "
              "not the per-client models, which learn from part of the client's own night.",
              "- Here the subjects are 11 of the 31 (the set in `../shared/data/sleep-accel`); activity is Walch et "
              "al.'s own count feature (derived from the motion files, which are not here) placed on our epochs, and "
              "epochs lacking heart rate for over 5 minutes or activity are left out (Walch et al. crop similarly).",
              "- Zhai et al. used MESA: ECG-derived heart rate of a large, older cohort, not wrist PPG; their number is "
              "4-class accuracy of a heart-rate-only model, so compare it with our heart-rate-only runs, if any, and "
              "expect PPG to be noisier.",
              "- The prototype split each client's data 70/15/15; split at random over 30-s epochs, that leaks "
              "neighbouring epochs into training. Our per-client splits are contiguous time blocks with a gap, a "
              "harder and honest test, scored on every epoch of the night once.",
              "- Accuracy depends on the class mix of each night; kappa and macro-F1 (tables above) are the fairer "
              "comparison, but few papers report them for these data.", ""]
    return lines
