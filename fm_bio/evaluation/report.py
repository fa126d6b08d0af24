"""The per-client study report: read a sweep's jobs, tabulate Base vs FM per client, test, plot.

A sweep folder (e.g. a Hydra multirun folder ``outputs/finetune-multirun/<time>/``) holds one folder
per job, at any depth, each with ``metrics.json`` (and ``predictions.csv`` when the job succeeded):

- ``metrics.json``: ``study``, ``dataset``, ``client``, ``model``, ``seed``, ``split``
  (``{"scheme", "n_folds"}``), ``status`` (``"ok"``/``"failed"``), ``error``, ``metrics`` (whole-night,
  out-of-fold: ``accuracy``, ``macro_f1``, ``kappa``, ``f1_<class>``, ``n_epochs``, ``confusion``),
  ``folds`` and ``encoder_artifact``;
- ``predictions.csv``: ``epoch_index,y_true,y_pred,fold``, one row per predicted epoch.

:func:`build_report` writes into ``out_dir``: ``results.md``, ``results.csv`` and ``figures/*.png``,
regenerating all of them on each call. How numbers are aggregated:

- per client x model: the mean over seeds (``mean ± sd`` when several seeds);
- per model: mean ± sd over clients of those per-client values;
- pooled per model: metrics of all clients' epochs concatenated from ``predictions.csv``. When every
  client of the model has the same set of seeds, pooled metrics are computed per seed and averaged
  (± sd over seeds); otherwise each client contributes its lowest seed (every client counted once);
- paired tests: two-sided Wilcoxon signed-rank (``scipy.stats.wilcoxon(model, baseline)``) across the
  clients that have both models, on per-client macro-F1, kappa and accuracy; with fewer than 5 clients
  the test is reported but flagged as underpowered. p values are not corrected for multiple testing.
"""

from __future__ import annotations

import json
import logging
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fm_bio.data.cache import atomic_write_text
from fm_bio.data.labels import CLASS_NAMES
from fm_bio.evaluation import figures
from fm_bio.evaluation.metrics import SCALAR_KEYS, compute_metrics, confusion_matrix

log = logging.getLogger(__name__)

MODEL_ORDER: tuple[str, ...] = ("base", "fm_probe", "fm_finetune", "fm_population")
"""Models in report order; any other model follows, alphabetically."""

TEST_METRICS: tuple[str, ...] = ("macro_f1", "kappa", "accuracy")
"""Per-client metrics compared by the paired tests, in report order."""

METRIC_LABELS: dict[str, str] = {"accuracy": "Accuracy", "macro_f1": "F1", "kappa": "Kappa"}

MIN_CLIENTS_FOR_TEST = 5
"""Below this many paired clients the Wilcoxon test is reported but flagged as underpowered."""

CSV_COLUMNS: tuple[str, ...] = ("client", "model", "seed", "status", *SCALAR_KEYS, "n_epochs", "error", "job_dir")
FIGURE_PATTERNS: tuple[str, ...] = ("confusion_*.png", "hypnogram_*.png", "paired_*.png")


# ---------------------------------------------------------------------------------------------------
# reading the sweep
# ---------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One per-client job of a sweep, as read from its ``metrics.json``."""

    dir: Path
    client: str
    model: str
    seed: int | None
    status: str
    error: str | None = None
    study: str | None = None
    dataset: str | None = None
    split: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    encoder_artifact: str | None = None
    predictions_path: Path | None = None
    mtime: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the job finished and has metrics."""
        return self.status == "ok"

    @property
    def key(self) -> tuple[str, str, int | None]:
        """(client, model, seed)."""
        return self.client, self.model, self.seed


def model_sort_key(model: str) -> tuple[int, str]:
    """Sort key: the models of ``MODEL_ORDER`` first, in that order, then the others alphabetically."""
    return (MODEL_ORDER.index(model), "") if model in MODEL_ORDER else (len(MODEL_ORDER), model)


def client_sort_key(client: str) -> tuple[int, int, str]:
    """Sort key: numeric ids by value, then other ids alphabetically."""
    return (0, int(client), client) if client.isdigit() else (1, 0, client)


def _seed_key(seed: int | None) -> tuple[bool, int]:
    return seed is None, seed if seed is not None else 0


def _first_line(text: Any) -> str:
    lines = str(text).strip().splitlines() if text is not None else []
    return lines[0].strip() if lines else ""


def _read_job(path: Path, sweep_dir: Path) -> Job:
    """Read one ``metrics.json``; an unreadable or incomplete file becomes a failed job saying why."""
    job_dir = path.parent
    mtime = path.stat().st_mtime
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("the top level is not a JSON object")
    except (OSError, ValueError) as err:
        log.warning("unreadable job file %s: %s", path, err)
        return Job(dir=job_dir, client="?", model="?", seed=None, status="failed", mtime=mtime,
                   error=f"unreadable {path.relative_to(sweep_dir)}: {err}; rerun that job")
    missing = [k for k in ("client", "model") if raw.get(k) in (None, "")]
    seed = raw.get("seed")
    try:
        seed = int(seed) if seed is not None else None
    except (TypeError, ValueError):
        seed = None
    job = Job(
        dir=job_dir,
        client=str(raw.get("client", "?")),
        model=str(raw.get("model", "?")),
        seed=seed,
        status=str(raw.get("status") or "failed"),
        error=raw.get("error"),
        study=raw.get("study"),
        dataset=raw.get("dataset"),
        split=raw.get("split") if isinstance(raw.get("split"), dict) else {},
        metrics=raw.get("metrics") if isinstance(raw.get("metrics"), dict) else {},
        encoder_artifact=raw.get("encoder_artifact"),
        mtime=mtime,
    )
    pred = job_dir / "predictions.csv"
    job.predictions_path = pred if pred.is_file() else None
    if missing:
        job.status, job.error = "failed", f"{path.relative_to(sweep_dir)} lacks {missing}; rerun that job"
    elif job.ok and not all(isinstance(job.metrics.get(k), (int, float)) for k in ("accuracy", "kappa")):
        if job.predictions_path is not None:
            log.warning("%s: status ok but no metrics; computing them from predictions.csv", path)
            try:
                df = _load_predictions(job.predictions_path)
                job.metrics = compute_metrics(df["y_true"].to_numpy(), df["y_pred"].to_numpy())
            except (OSError, ValueError, pd.errors.ParserError) as err:
                job.status, job.error = "failed", f"no metrics in {path.relative_to(sweep_dir)} and {err}"
        else:
            job.status = "failed"
            job.error = f"{path.relative_to(sweep_dir)} says ok but holds no metrics and no predictions.csv"
    if not job.ok and not job.error:
        job.error = f"status {job.status!r} without an error message"
    return job


def load_jobs(sweep_dir: Path, study: str | None = None) -> list[Job]:
    """Every job under ``sweep_dir`` (found by ``metrics.json``, at any depth), one per (client, model, seed).

    Duplicates of a (client, model, seed) keep the successful one, then the newest. With ``study``, jobs of
    other studies are skipped. Raises FileNotFoundError when there is no job, ValueError when the sweep
    mixes studies and ``study`` is not given.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist; pass the multirun folder of the "
                                "per-client jobs (e.g. outputs/finetune-multirun/<time>) or 'latest'")
    files = sorted(p for p in sweep_dir.rglob("metrics.json") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no metrics.json under {sweep_dir}: it holds no per-client job (or none has "
                                "finished yet); run the sweep first or point sweep_dir at its folder")
    jobs = [_read_job(p, sweep_dir) for p in files]
    studies = sorted({j.study for j in jobs if j.study is not None})
    if study is not None:
        other = [j for j in jobs if j.study is not None and j.study != study]
        if other:
            log.warning("skipping %d jobs of other studies %s", len(other), sorted({j.study for j in other}))
        jobs = [j for j in jobs if j.study is None or j.study == study]
        if not jobs:
            raise FileNotFoundError(f"no job of study {study!r} under {sweep_dir}; studies there: {studies}")
    elif len(studies) > 1:
        raise ValueError(f"{sweep_dir} mixes studies {studies}; pass study=<one of them> (report.study=...)")
    best: dict[tuple[str, str, int | None], Job] = {}
    for job in jobs:
        prev = best.get(job.key)
        if prev is not None:
            keep = max((prev, job), key=lambda j: (j.ok, j.mtime))
            log.warning("duplicate job %s in %s and %s; keeping %s", job.key, prev.dir, job.dir, keep.dir)
            job = keep
        best[job.key] = job
    return sorted(best.values(), key=lambda j: (client_sort_key(j.client), model_sort_key(j.model),
                                                 _seed_key(j.seed)))


def _load_predictions(path: Path) -> pd.DataFrame:
    """``predictions.csv`` as a DataFrame with integer ``epoch_index, y_true, y_pred``."""
    df = pd.read_csv(path)
    missing = {"y_true", "y_pred"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}; expected epoch_index,y_true,y_pred,fold")
    if "epoch_index" not in df.columns:
        df["epoch_index"] = np.arange(len(df))
    return df.astype({"epoch_index": np.int64, "y_true": np.int64, "y_pred": np.int64})


class _Predictions:
    """Lazily loaded, cached predictions of the jobs; unreadable files are logged once and skipped."""

    def __init__(self) -> None:
        self._cache: dict[Path, pd.DataFrame | None] = {}

    def get(self, job: Job) -> pd.DataFrame | None:
        path = job.predictions_path
        if path is None:
            return None
        if path not in self._cache:
            try:
                df = _load_predictions(path)
            except (OSError, ValueError, pd.errors.ParserError) as err:
                log.warning("skipping unreadable %s: %s", path, err)
                df = None
            if df is not None and job.metrics.get("n_epochs") is not None:
                n = int((df["y_true"] >= 0).sum())
                if n != int(job.metrics["n_epochs"]):
                    log.warning("%s has %d labelled epochs but metrics.json says n_epochs=%s", path, n,
                                job.metrics["n_epochs"])
            self._cache[path] = df
        return self._cache[path]


# ---------------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------------


def _num(x: Any) -> float:
    """A float, NaN for None / non-numbers."""
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample sd (ddof=1; NaN for fewer than 2) and count of the finite values."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan, 0
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan, int(arr.size)


def _fmt(mean: float, sd: float = math.nan, digits: int = 3) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None and np.isfinite(sd) else f"{mean:.{digits}f}"


def _fmt_p(p: float | None) -> str:
    return "n/a" if p is None or not np.isfinite(p) else f"{p:.4g}"


def _clean(obj: Any) -> Any:
    """JSON-able copy: NaN -> None, numpy scalars -> Python, Paths -> str."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    return obj


def per_client_table(jobs: list[Job]) -> pd.DataFrame:
    """One row per (client, model) with any successful job: mean and sd over seeds of each metric."""
    rows = []
    for (client, model), group in _group(j for j in jobs if j.ok):
        row: dict[str, Any] = {"client": client, "model": model, "n_seeds": len(group),
                               "seeds": [j.seed for j in group]}
        for key in SCALAR_KEYS:
            mean, sd, _ = _mean_sd(_num(j.metrics.get(key)) for j in group)
            row[key], row[f"{key}_sd"] = mean, sd
        rows.append(row)
    return pd.DataFrame(rows)


def _group(jobs: Iterable[Job]) -> list[tuple[tuple[str, str], list[Job]]]:
    groups: dict[tuple[str, str], list[Job]] = {}
    for j in jobs:
        groups.setdefault((j.client, j.model), []).append(j)
    keys = sorted(groups, key=lambda k: (client_sort_key(k[0]), model_sort_key(k[1])))
    return [(k, sorted(groups[k], key=lambda j: _seed_key(j.seed))) for k in keys]


def pooled_metrics(jobs: list[Job], model: str, preds: _Predictions) -> dict[str, Any]:
    """Metrics of all clients' epochs of one model concatenated (see the module docstring for seeds)."""
    by_client: dict[str, dict[int | None, pd.DataFrame]] = {}
    for j in jobs:
        if j.ok and j.model == model and (df := preds.get(j)) is not None:
            by_client.setdefault(j.client, {})[j.seed] = df
    if not by_client:
        return {"n_clients": 0, "method": "no predictions.csv"}
    seed_sets = {frozenset(s) for s in by_client.values()}
    if len(seed_sets) == 1 and len(next(iter(seed_sets))) > 1:
        seeds = sorted(next(iter(seed_sets)), key=_seed_key)
        runs = [pd.concat([by_client[c][s] for c in by_client], ignore_index=True) for s in seeds]
        method = f"per seed ({len(seeds)} seeds), mean ± sd over seeds"
    else:
        first = [d[min(d, key=_seed_key)] for d in by_client.values()]
        runs = [pd.concat(first, ignore_index=True)]
        method = "each client's lowest seed"
    results = [compute_metrics(r["y_true"].to_numpy(), r["y_pred"].to_numpy()) for r in runs]
    out: dict[str, Any] = {"n_clients": len(by_client), "method": method, "n_seeds": len(runs)}
    for key in SCALAR_KEYS:
        out[key], out[f"{key}_sd"], _ = _mean_sd(_num(r[key]) for r in results)
    out["n_epochs"] = int(results[0]["n_epochs"])
    out["confusion"] = np.sum([np.asarray(r["confusion"]) for r in results], axis=0).tolist()
    y_true = runs[0]["y_true"].to_numpy()
    y_true = y_true[y_true >= 0]
    out["majority_rate"] = float(np.bincount(y_true).max() / y_true.size) if y_true.size else math.nan
    out["majority_class"] = CLASS_NAMES[int(np.bincount(y_true).argmax())] if y_true.size else None
    return out


def paired_test(baseline: Mapping[str, float], other: Mapping[str, float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of ``other - baseline`` over the clients with both (finite).

    Returns ``n``, ``median_diff``, ``n_better``, ``n_worse``, ``statistic``, ``p`` (None when not
    computable), ``underpowered`` (n < ``MIN_CLIENTS_FOR_TEST``) and a ``note``. Never raises.
    """
    clients = sorted((c for c in baseline if c in other and np.isfinite(baseline[c]) and np.isfinite(other[c])),
                     key=client_sort_key)
    x = np.asarray([other[c] for c in clients], dtype=float)
    y = np.asarray([baseline[c] for c in clients], dtype=float)
    d = x - y
    n = len(clients)
    out: dict[str, Any] = {"n": n, "clients": clients, "median_diff": float(np.median(d)) if n else math.nan,
                           "n_better": int((d > 0).sum()), "n_worse": int((d < 0).sum()),
                           "statistic": math.nan, "p": None, "underpowered": n < MIN_CLIENTS_FOR_TEST}
    notes = []
    if n == 0:
        out["note"] = "no client has both models"
        return out
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.wilcoxon(x, y, alternative="two-sided")
        out["statistic"], out["p"] = float(res.statistic), float(res.pvalue)
    except (ValueError, ZeroDivisionError) as err:
        notes.append(f"not computable: {err}")
    if n < MIN_CLIENTS_FOR_TEST:
        notes.append(f"underpowered: n < {MIN_CLIENTS_FOR_TEST} clients (smallest attainable p = {2 / 2**n:.3g})")
    if not np.any(d != 0):
        notes.append("all differences are zero")
    out["note"] = "; ".join(notes)
    return out


# ---------------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _split_text(jobs: list[Job]) -> str:
    kinds = []
    for j in jobs:
        if not j.split:
            continue
        text = str(j.split.get("scheme", "?"))
        if j.split.get("n_folds") is not None:
            text += f" ({j.split['n_folds']} folds)"
        if text not in kinds:
            kinds.append(text)
    return ", ".join(kinds) if kinds else "unknown"


def _jobs_frame(jobs: list[Job], sweep_dir: Path) -> pd.DataFrame:
    rows = []
    for j in jobs:
        row: dict[str, Any] = {"client": j.client, "model": j.model, "seed": j.seed, "status": j.status}
        for key in SCALAR_KEYS:
            row[key] = _num(j.metrics.get(key)) if j.ok else math.nan
        row["n_epochs"] = j.metrics.get("n_epochs") if j.ok else None
        row["error"] = _first_line(j.error) if not j.ok else ""
        row["job_dir"] = str(j.dir.relative_to(sweep_dir)) if j.dir != sweep_dir else "."
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    df["seed"] = df["seed"].astype("Int64")
    df["n_epochs"] = df["n_epochs"].astype("Int64")
    return df


def _clear_figures(fig_dir: Path) -> None:
    for pattern in FIGURE_PATTERNS:
        for old in fig_dir.glob(pattern):
            old.unlink()


def _draw_figures(jobs: list[Job], models: list[str], clients: list[str], preds: _Predictions,
                  pooled: Mapping[str, Mapping[str, Any]], tests: Mapping[str, Any], baseline: str,
                  per_client: pd.DataFrame, fig_dir: Path) -> dict[str, Any]:
    """Draw every figure; returns {"clients": {client: {"hypnogram": rel, "confusion": {model: rel}}}, ...}."""
    index: dict[str, Any] = {"clients": {}, "pooled_confusion": {}, "paired": None}
    first_ok: dict[tuple[str, str], Job] = {}
    for (client, model), group in _group(j for j in jobs if j.ok):
        first_ok[(client, model)] = group[0]
    for client in clients:
        entry: dict[str, Any] = {"hypnogram": None, "confusion": {}}
        traces: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
        truth: pd.DataFrame | None = None
        for model in models:
            job = first_ok.get((client, model))
            if job is None:
                continue
            df = preds.get(job)
            cm = job.metrics.get("confusion")
            cm = np.asarray(cm) if cm is not None else None
            if (cm is None or cm.shape != (len(CLASS_NAMES), len(CLASS_NAMES))) and df is not None:
                cm = confusion_matrix(df["y_true"].to_numpy(), df["y_pred"].to_numpy())
            m = job.metrics
            subtitle = (f"seed {job.seed}, acc {_fmt(_num(m.get('accuracy')))}, F1 {_fmt(_num(m.get('macro_f1')))}, "
                        f"kappa {_fmt(_num(m.get('kappa')))}")
            if cm is not None and cm.shape == (len(CLASS_NAMES), len(CLASS_NAMES)):
                name = f"confusion_{_safe(client)}_{_safe(model)}.png"
                figures.plot_confusion(cm, fig_dir / name, title=f"client {client}, {model}\n{subtitle}")
                entry["confusion"][model] = f"figures/{name}"
            if df is not None:
                traces[model] = (df["epoch_index"].to_numpy(), df["y_pred"].to_numpy(), subtitle)
                truth = df if truth is None else truth
        if truth is not None:
            name = f"hypnogram_{_safe(client)}.png"
            figures.plot_hypnogram(truth["epoch_index"].to_numpy(), truth["y_true"].to_numpy(), traces,
                                   fig_dir / name, title=f"client {client}: true vs predicted stages (first seed)")
            entry["hypnogram"] = f"figures/{name}"
        index["clients"][client] = entry
    for model in models:
        p = pooled.get(model, {})
        if p.get("n_clients"):
            name = f"confusion_pooled_{_safe(model)}.png"
            figures.plot_confusion(np.asarray(p["confusion"]), fig_dir / name,
                                   title=f"{model}, all clients pooled ({p['n_clients']} clients)\n{p['method']}")
            index["pooled_confusion"][model] = f"figures/{name}"
    pairs = {}
    if not per_client.empty:
        f1 = {(r.client, r.model): r.macro_f1 for r in per_client.itertuples()}
        for model, by_metric in tests.items():
            clients_both = by_metric["macro_f1"]["clients"]
            if clients_both:
                pairs[model] = ([f1[(c, baseline)] for c in clients_both], [f1[(c, model)] for c in clients_both])
    if pairs:
        figures.plot_paired(pairs, fig_dir / "paired_macro_f1.png", baseline=baseline)
        index["paired"] = "figures/paired_macro_f1.png"
    return index


def build_report(sweep_dir: Path, out_dir: Path, study: str | None = None, baseline: str = "base",
                 make_figures: bool = True, extra_sections: list[str] | None = None) -> dict[str, Any]:
    """Read every job of a per-client sweep and write ``results.md``, ``results.csv`` and figures.

    Parameters
    ----------
    sweep_dir : folder holding the jobs (their ``metrics.json`` at any depth).
    out_dir : where the report goes (e.g. ``experiments/<study>``); its report files are overwritten.
    study : keep only jobs of this study (needed when the sweep mixes studies).
    baseline : the model every other model is compared with (paired Wilcoxon tests).
    make_figures : draw the PNG figures (a few per client).
    extra_sections : markdown lines a study adds (e.g. its design), placed before the failed-jobs section.

    Returns
    -------
    JSON-able summary: study, dataset, counts, per-model summary (mean ± sd over clients and pooled
    metrics), paired tests, failed and missing jobs, paths written.
    """
    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    jobs = load_jobs(sweep_dir, study=study)
    preds = _Predictions()
    ok_jobs = [j for j in jobs if j.ok]
    failed = [j for j in jobs if not j.ok]
    clients = sorted({j.client for j in jobs if j.client != "?"}, key=client_sort_key)
    models = sorted({j.model for j in jobs if j.model != "?"}, key=model_sort_key)
    seeds = sorted({j.seed for j in jobs if j.seed is not None})
    studies = sorted({j.study for j in jobs if j.study})
    study_name = study or (studies[0] if studies else sweep_dir.name)
    datasets = sorted({j.dataset for j in jobs if j.dataset})
    have = {(j.client, j.model) for j in jobs}
    missing = [(c, m) for c in clients for m in models if (c, m) not in have]
    if not ok_jobs:
        log.warning("no successful job under %s (%d failed)", sweep_dir, len(failed))

    per_client = per_client_table(jobs)
    summary_models: dict[str, Any] = {}
    for model in models:
        sub = per_client[per_client["model"] == model] if not per_client.empty else per_client
        entry: dict[str, Any] = {"n_clients": int(len(sub))}
        for key in TEST_METRICS:
            mean, sd, _ = _mean_sd(sub[key]) if len(sub) else (math.nan, math.nan, 0)
            entry[key] = {"mean": mean, "sd": sd}
        entry["pooled"] = pooled_metrics(jobs, model, preds)
        summary_models[model] = entry

    def values(model: str, key: str) -> dict[str, float]:
        if per_client.empty:
            return {}
        rows = per_client[per_client["model"] == model]
        return dict(zip(rows["client"], rows[key], strict=True))

    tests: dict[str, dict[str, Any]] = {}
    if baseline in models:
        for model in models:
            if model != baseline:
                tests[model] = {key: paired_test(values(baseline, key), values(model, key)) for key in TEST_METRICS}
    else:
        log.warning("baseline model %r is not in the sweep (models: %s): no paired tests", baseline, models)

    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    _clear_figures(fig_dir)
    fig_index: dict[str, Any] = {"clients": {}, "pooled_confusion": {}, "paired": None}
    if make_figures:
        fig_index = _draw_figures(jobs, models, clients, preds, {m: e["pooled"] for m, e in summary_models.items()},
                                  tests, baseline, per_client, fig_dir)

    jobs_df = _jobs_frame(jobs, sweep_dir)
    atomic_write_text(out_dir / "results.csv", jobs_df.to_csv(index=False, float_format="%.6g"))

    info = {
        "study": study_name, "datasets": datasets, "split": _split_text(jobs), "sweep_dir": sweep_dir,
        "clients": clients, "models": models, "seeds": seeds, "jobs": jobs, "failed": failed,
        "missing": missing, "baseline": baseline, "per_client": per_client, "summary": summary_models,
        "tests": tests, "figures": fig_index, "extra_sections": list(extra_sections or []),
    }
    md = _markdown(info)
    atomic_write_text(out_dir / "results.md", md)
    log.info("report of %d jobs (%d clients, models %s) written to %s", len(jobs), len(clients), models,
             out_dir / "results.md")

    n_seeds = per_client["n_seeds"] if not per_client.empty else pd.Series(dtype=int)
    return _clean({
        "study": study_name,
        "datasets": datasets,
        "split": info["split"],
        "sweep_dir": sweep_dir,
        "out_dir": out_dir,
        "results_md": out_dir / "results.md",
        "results_csv": out_dir / "results.csv",
        "baseline": baseline,
        "n_clients": len(clients),
        "clients": clients,
        "models": models,
        "seeds": seeds,
        "seeds_per_client_model": [int(n_seeds.min()), int(n_seeds.max())] if len(n_seeds) else None,
        "n_jobs": len(jobs),
        "n_ok": len(ok_jobs),
        "n_failed": len(failed),
        "per_client": per_client.drop(columns=["seeds"]).to_dict(orient="records") if not per_client.empty else [],
        "models_summary": summary_models,
        "paired_tests": tests,
        "failed": [{"client": j.client, "model": j.model, "seed": j.seed, "error": _first_line(j.error),
                    "job_dir": str(j.dir)} for j in failed],
        "missing": [{"client": c, "model": m} for c, m in missing],
        "figures": fig_index,
    })


def _display_path(path: str) -> str:
    """A path as the report shows it: relative to the folder the run started in when inside it (so reports
    made on different machines from the same commands read the same), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _markdown(info: dict[str, Any]) -> str:
    """The text of ``results.md``."""
    jobs: list[Job] = info["jobs"]
    per_client: pd.DataFrame = info["per_client"]
    models: list[str] = info["models"]
    baseline: str = info["baseline"]
    seeds = info["seeds"]
    n_seeds = per_client["n_seeds"] if not per_client.empty else pd.Series(dtype=int)
    seeds_text = ", ".join(map(str, seeds)) if seeds else "none recorded"
    if len(n_seeds):
        lo, hi = int(n_seeds.min()), int(n_seeds.max())
        seeds_text += f" ({lo} per client x model)" if lo == hi else f" ({lo}-{hi} per client x model)"
    lines = [
        f"# Per-client sleep staging: {info['study']}",
        "",
        f"- Study: `{info['study']}`; dataset: {', '.join(info['datasets']) or 'unknown'}",
        f"- Split: {info['split']}; metrics are over each client's whole night, every labelled epoch predicted "
        "once, out of fold",
        f"- Clients: {len(info['clients'])}; models: {', '.join(models) or 'none'}; seeds: {seeds_text}",
        f"- Jobs: {len(jobs)} ({len(jobs) - len(info['failed'])} ok, {len(info['failed'])} failed); "
        f"missing client x model combinations: {len(info['missing'])}",
        f"- Sweep folder: `{info['sweep_dir'].name}`; report generated "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d')} (UTC)",
    ]
    artifacts = sorted({j.encoder_artifact for j in jobs if j.encoder_artifact and j.model.startswith("fm_")})  # used
    if artifacts:
        lines.append("- Encoder artifact(s): " + ", ".join(f"`{_display_path(a)}`" for a in artifacts))
    lines += ["", "Classes: wake, light (N1+N2), deep (N3+N4), REM. F1 = macro-F1 over the classes present in the "
              "true labels or the predictions. Accuracy alone flatters (light sleep is the majority class, about half "
              "of all epochs on MESA): read kappa and macro-F1.", ""]

    # per-client table
    lines += ["## Per client", ""]
    multi = len(n_seeds) and int(n_seeds.max()) > 1
    lines.append("Values are the mean over seeds" + (" (mean ± sd where a client has several seeds)." if multi else "."))
    lines += ["", "| Client | Model | Accuracy | F1 | Kappa |", "|---|---|---|---|---|"]
    ok_keys = set(zip(per_client["client"], per_client["model"], strict=True)) if not per_client.empty else set()
    rows = {(r["client"], r["model"]): r for r in per_client.to_dict(orient="records")} if ok_keys else {}
    for client in info["clients"]:
        for model in models:
            if (client, model) in rows:
                r = rows[(client, model)]
                cells = [_fmt(r[k], r[f"{k}_sd"]) for k in ("accuracy", "macro_f1", "kappa")]
            elif any(j.client == client and j.model == model for j in jobs):
                cells = ["failed"] * 3
            else:
                continue
            lines.append(f"| {_cell(client)} | {_cell(model)} | " + " | ".join(cells) + " |")
    lines.append("")

    # per-model summary
    lines += ["## Per model", "",
              "Mean ± sd over clients of the per-client values; pooled = the metrics of every client's epochs "
              "concatenated (from predictions.csv).", "",
              "| Model | Clients | Accuracy | F1 | Kappa | Pooled accuracy | Pooled F1 | Pooled kappa | Pooled epochs |",
              "|---|---|---|---|---|---|---|---|---|"]
    methods = []
    for model in models:
        s = info["summary"][model]
        p = s["pooled"]
        cells = [_fmt(s[k]["mean"], s[k]["sd"]) for k in ("accuracy", "macro_f1", "kappa")]
        if p.get("n_clients"):
            cells += [_fmt(p[k], p[f"{k}_sd"]) for k in ("accuracy", "macro_f1", "kappa")]
            cells.append(f"{p['n_epochs']} ({p['n_clients']} clients)")
            methods.append(f"{model}: {p['method']}")
        else:
            cells += ["n/a"] * 4
        lines.append(f"| {_cell(model)} | {s['n_clients']} | " + " | ".join(cells) + " |")
    lines.append("")
    if methods:
        lines.append("Pooled over seeds: " + "; ".join(methods) + ".")
        pooled_any = next(info["summary"][m]["pooled"] for m in models if info["summary"][m]["pooled"].get("n_clients"))
        if pooled_any.get("majority_class"):
            lines.append(f"Chance reference: always predicting the most common class ({pooled_any['majority_class']}) "
                         f"gives pooled accuracy {_fmt(pooled_any['majority_rate'])} and kappa 0.")
        lines.append("")

    # paired tests
    lines += [f"## Paired tests vs `{baseline}`", ""]
    if baseline not in models:
        lines += [f"The baseline model `{baseline}` is not in this sweep (models: {', '.join(models)}): no paired tests.",
                  ""]
    elif not info["tests"]:
        lines += ["No other model to compare with the baseline.", ""]
    else:
        lines += ["Two-sided Wilcoxon signed-rank test (`scipy.stats.wilcoxon`) across the clients that have both "
                  "models, on the per-client values (mean over seeds); difference = model - baseline. p values "
                  "are not corrected for multiple comparisons.", "",
                  "| Model | Metric | n | Median difference | Better / worse | W | p | Note |",
                  "|---|---|---|---|---|---|---|---|"]
        for model, by_metric in info["tests"].items():
            for key in TEST_METRICS:
                t = by_metric[key]
                stat = f"{t['statistic']:.4g}" if np.isfinite(t["statistic"]) else "n/a"
                median = f"{t['median_diff']:+.3f}" if np.isfinite(t["median_diff"]) else "n/a"
                lines.append(f"| {_cell(model)} vs {_cell(baseline)} | {METRIC_LABELS[key]} | n={t['n']} | {median} | "
                             f"{t['n_better']} / {t['n_worse']} | {stat} | p={_fmt_p(t['p'])} | {_cell(t['note'])} |")
        lines.append("")
        if any(t["underpowered"] and t["n"] for bm in info["tests"].values() for t in bm.values()):
            lines += [f"Underpowered: with fewer than {MIN_CLIENTS_FOR_TEST} paired clients the exact two-sided "
                      "p value can never fall below 2/2^n (0.125 for n = 4), so such a test cannot show a difference; "
                      "the p value is given for completeness only.", ""]

    lines += info.get("extra_sections", [])

    # failures and gaps
    lines += ["## Failed and missing jobs", ""]
    if info["failed"]:
        lines += ["| Client | Model | Seed | Error | Job folder |", "|---|---|---|---|---|"]
        for j in info["failed"]:
            rel = j.dir.relative_to(info["sweep_dir"]) if j.dir != info["sweep_dir"] else Path(".")
            lines.append(f"| {_cell(j.client)} | {_cell(j.model)} | {j.seed if j.seed is not None else '-'} | "
                         f"{_cell(_first_line(j.error))} | `{rel}` |")
        lines.append("")
    else:
        lines += ["No failed job.", ""]
    if info["missing"]:
        lines.append("Missing client x model combinations (no job at all): "
                     + ", ".join(f"{c}/{m}" for c, m in info["missing"]) + ".")
    else:
        lines.append("No missing client x model combination.")
    lines.append("")

    # figures
    fig = info["figures"]
    lines += ["## Figures", ""]
    n_before = len(lines)
    if fig["paired"]:
        lines.append(f"- Per-client macro-F1 vs `{baseline}`: [{Path(fig['paired']).name}]({fig['paired']})")
    for model, rel in fig["pooled_confusion"].items():
        lines.append(f"- Pooled confusion matrix, {model}: [{Path(rel).name}]({rel})")
    for client, entry in fig["clients"].items():
        parts = []
        if entry["hypnogram"]:
            parts.append(f"[hypnogram]({entry['hypnogram']})")
        parts += [f"[confusion {m}]({rel})" for m, rel in entry["confusion"].items()]
        if parts:
            lines.append(f"- Client {client}: " + ", ".join(parts))
    if len(lines) == n_before:
        lines.append("No figures were drawn.")
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Hydra entry
# ---------------------------------------------------------------------------------------------------


def latest_sweep(log_dir: Path, task: str = "finetune", study: str | None = None) -> Path:
    """The newest sweep folder under ``<log_dir>/<task>-multirun/<study>/`` (study sweeps, see
    ``conf/experiment/study_mesa.yaml``) or else under ``<log_dir>/<task>-multirun/``."""
    root = Path(log_dir) / f"{task}-multirun"
    if study and (root / study).is_dir():
        root = root / study
    runs = sorted((p for p in root.glob("*") if p.is_dir()), key=lambda p: (p.stat().st_mtime, p.name)) \
        if root.is_dir() else []
    if not runs:
        raise FileNotFoundError(f"no sweep under {root}; run the per-client sweep first or set "
                                "report.sweep_dir=<path to its multirun folder>")
    return runs[-1]


def report_task(cfg: Any) -> dict[str, Any]:
    """Entry of ``task=report``: build the report of ``cfg.report.sweep_dir`` into ``cfg.report.out_dir``.

    Keys read: ``report.sweep_dir`` (a path or ``latest``: the newest folder under
    ``${paths.log_dir}/finetune-multirun/``), ``report.out_dir`` (default ``experiments/<study>`` under
    ``paths.root_dir``), ``report.study`` (default: the sweep's), ``report.baseline`` (default ``base``),
    ``report.figures`` (default true).
    """
    from omegaconf import OmegaConf

    def get(key: str, default: Any = None) -> Any:
        value = OmegaConf.select(cfg, key, default=default)
        return default if value is None else value

    root = Path(get("paths.root_dir", "."))
    sweep = get("report.sweep_dir", "latest")
    if str(sweep) == "latest":
        sweep_dir = latest_sweep(Path(get("paths.log_dir", root / "outputs")), study=get("report.study"))
        log.info("report.sweep_dir=latest: %s", sweep_dir)
    else:
        sweep_dir = Path(sweep)
        sweep_dir = sweep_dir if sweep_dir.is_absolute() else root / sweep_dir
    study = get("report.study")
    out = get("report.out_dir")
    if out is None:
        if study is None:
            found = sorted({j.study for j in load_jobs(sweep_dir) if j.study})
            study_dir = found[0] if len(found) == 1 else sweep_dir.name
        else:
            study_dir = study
        out_dir = root / "experiments" / _safe(str(study_dir))
    else:
        out_dir = Path(out) if Path(out).is_absolute() else root / out
    summary = build_report(sweep_dir, out_dir, study=study, baseline=str(get("report.baseline", "base")),
                           make_figures=bool(get("report.figures", True)))
    log.info("results: %s", summary["results_md"])
    return summary
