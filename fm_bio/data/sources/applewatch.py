"""Apple Watch reader for the PhysioNet sleep-accel layout (Walch et al. 2019).

Layout::

    heart_rate/<id>_heartrate.txt     "<t_s>,<bpm>"   irregular, may be unsorted/duplicated, starts days early
    labels/<id>_labeled_sleep.txt     "<t_s> <stage>" 30-s epochs from t = 0 (-1 unscored, 0-5)
    motion/<id>_acceleration.txt      "<t_s> <x> <y> <z>" acceleration in g (optional)
    steps/<id>_steps.txt              "<t_s>,<steps>" (optional)
    features/<id>_count_feature.out   Walch et al.'s per-epoch activity counts (optional; with
    features/<id>_time_feature.out    the time and label features that place them on the epoch grid)
    features/<id>_psg_labels.out

Times are seconds relative to the PSG start. Activity comes from ``motion/`` when the subject has it,
else (``activity_source=auto``) from Walch et al.'s precomputed count feature when ``features/`` has it,
else the subject loads with heart rate only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fm_bio.data.labels import MASKED, map_stage_codes
from fm_bio.data.records import EPOCH_S, DataError, IrregularSeries, NightRecord
from fm_bio.data.sources.base import Source

log = logging.getLogger(__name__)

_LABEL_RE = re.compile(r"^(\d+)_labeled_sleep\.txt$")
MOTION_GRAVITY_WINDOW_S = 5.0
"""Window of the running median that estimates gravity in the acceleration magnitude."""
ACTIVITY_SOURCES = ("auto", "motion", "features", "none")
FEATURE_LABEL_MATCH_MIN = 0.99
"""Fraction of Walch's per-row labels that must equal ours at the chosen offset to accept the alignment."""


def _read_table(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    """Read a headerless numeric text table; errors name the file and the offending line."""
    try:
        df = pd.read_csv(path, sep=sep, header=None, names=names, engine="c", dtype=str, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; re-download it or remove the subject") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: cannot parse ({err}); expected {len(names)} {sep!r}-separated columns "
                        f"{names} per line") from err
    if df.empty:
        raise DataError(f"{path}: the file is empty; re-download it or remove the subject")
    out = pd.DataFrame({c: pd.to_numeric(df[c].str.strip(), errors="coerce") for c in names})
    bad = out.isna().any(axis=1).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: line {i + 1} is not numeric ({' '.join(str(v) for v in df.iloc[i].tolist())!r}); "
                        f"expected {len(names)} numbers {names} separated by {sep!r}. {int(bad.sum())} bad lines in all.")
    return out


def read_labels(path: Path) -> tuple[np.ndarray, dict[str, int]]:
    """Raw stage code per 30-s epoch from a ``labeled_sleep`` file, placed by time.

    Epochs missing from the file (gaps in ``t``) are ``MASKED``; returns codes and counted issues.
    """
    df = _read_table(path, r"\s+", ["t_s", "stage"])
    t = df["t_s"].to_numpy()
    if (t < 0).any():
        raise DataError(f"{path}: negative epoch times; labels must start at t = 0 (PSG start)")
    idx = np.round(t / EPOCH_S).astype(np.int64)
    off_grid = np.abs(t - idx * EPOCH_S) > 1.0
    if off_grid.any():
        raise DataError(f"{path}: {int(off_grid.sum())} label times are not on the 30-s epoch grid "
                        f"(first: t={t[off_grid][0]}); expected t = 0, 30, 60, ...")
    if len(np.unique(idx)) != len(idx):
        raise DataError(f"{path}: the same epoch is labelled twice; remove duplicate lines")
    codes = np.full(int(idx.max()) + 1, MASKED, dtype=np.int64)
    codes[idx] = df["stage"].to_numpy().astype(np.int64)
    return codes, {"label_epochs_missing_from_file": int(len(codes) - len(idx))}


def read_heart_rate(path: Path, t_min_s: float, t_max_s: float) -> tuple[IrregularSeries, dict[str, int]]:
    """Heart-rate samples within ``[t_min_s, t_max_s]``: sorted, duplicate times averaged."""
    df = _read_table(path, ",", ["t_s", "bpm"])
    n_raw = len(df)
    df = df[(df["t_s"] >= t_min_s) & (df["t_s"] <= t_max_s)]
    n_unsorted = int(np.sum(np.diff(df["t_s"].to_numpy()) < 0))
    grouped = df.groupby("t_s", sort=True)["bpm"].mean()
    issues = {
        "hr_samples_in_file": n_raw,
        "hr_samples_unsorted": n_unsorted,
        "hr_samples_duplicate_time": int(len(df) - len(grouped)),
    }
    return IrregularSeries(t_s=grouped.index.to_numpy(np.float64), values=grouped.to_numpy(np.float32)), issues


def motion_activity_per_epoch(path: Path, n_epochs: int) -> np.ndarray:
    """Activity per epoch (milli-g) from raw acceleration: mean |‖a‖ - gravity| over the epoch.

    Gravity is a running median of the magnitude over ``MOTION_GRAVITY_WINDOW_S`` (works for any sampling
    rate, irregular too). Epochs without motion samples are NaN.
    """
    df = pd.read_csv(path, sep=r"\s+", header=None, names=["t_s", "x", "y", "z"], engine="c")
    df = df.apply(pd.to_numeric, errors="coerce").dropna()
    if df.empty:
        raise DataError(f"{path}: no numeric acceleration rows; expected '<t> <x> <y> <z>' per line")
    df = df[(df["t_s"] >= 0) & (df["t_s"] < n_epochs * EPOCH_S)].sort_values("t_s")
    out = np.full(n_epochs, np.nan, dtype=np.float32)
    if df.empty:
        return out
    t = df["t_s"].to_numpy()
    mag = np.sqrt(df["x"].to_numpy() ** 2 + df["y"].to_numpy() ** 2 + df["z"].to_numpy() ** 2)
    rate_hz = max(1.0, 1.0 / max(np.median(np.diff(t)), 1e-3)) if len(t) > 1 else 1.0
    window = max(1, int(round(MOTION_GRAVITY_WINDOW_S * rate_hz)) | 1)
    gravity = pd.Series(mag).rolling(window, center=True, min_periods=1).median().to_numpy()
    dyn = np.abs(mag - gravity) * 1000.0
    epoch = (t // EPOCH_S).astype(np.int64)
    sums = np.bincount(epoch, weights=dyn, minlength=n_epochs)[:n_epochs]
    counts = np.bincount(epoch, minlength=n_epochs)[:n_epochs]
    have = counts > 0
    out[have] = (sums[have] / counts[have]).astype(np.float32)
    return out


def steps_per_epoch(path: Path, n_epochs: int) -> np.ndarray:
    """Step counts spread evenly over the interval each ``steps`` row reports (NaN outside coverage)."""
    df = _read_table(path, ",", ["t_s", "steps"]).sort_values("t_s")
    t, steps = df["t_s"].to_numpy(), df["steps"].to_numpy()
    out = np.full(n_epochs, np.nan, dtype=np.float32)
    if len(t) < 2:
        return out
    # Cumulative steps at each timestamp; per-epoch steps = difference of the interpolated cumulative sum.
    cum = np.concatenate([[0.0], np.cumsum(steps[1:])])
    edges = np.arange(n_epochs + 1) * EPOCH_S
    cum_at = np.interp(edges, t, cum)
    covered = (edges[1:] > t[0]) & (edges[:-1] < t[-1])
    out[covered] = np.diff(cum_at)[covered]
    return out


def walch_count_activity(features_dir: Path, subject: str, stage_codes: np.ndarray) -> np.ndarray:
    """Activity per epoch from Walch et al.'s precomputed ``count_feature`` (derived from the motion files).

    Their rows are the valid, cropped epochs of the night, unscored ones dropped; ``time_feature`` gives each
    row's time (hours) since the first row and ``psg_labels`` its raw stage code. The rows are placed on our
    epoch grid at the offset where their labels equal ``stage_codes`` (at least ``FEATURE_LABEL_MATCH_MIN``
    of them, and better than any other offset); epochs without a row are NaN (``activity_missing`` in QC).
    """
    paths = {k: features_dir / f"{subject}_{k}_feature.out" if k != "psg" else features_dir / f"{subject}_psg_labels.out"
             for k in ("count", "time", "psg")}
    cols = {}
    for key, path in paths.items():
        try:
            cols[key] = np.loadtxt(path, dtype=np.float64, ndmin=1)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read Walch feature file ({err}); expected one number per line. "
                            f"Restore it, or set dataset.reader.activity_source=none") from None
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) != 1 or not lengths["count"]:
        raise DataError(f"{features_dir}: subject {subject}'s feature files have different or zero lengths "
                        f"{lengths}; they must have one line per epoch each")
    offsets = np.round(cols["time"] * 3600.0 / EPOCH_S).astype(np.int64)
    if (np.diff(offsets) <= 0).any() or offsets[0] != 0:
        raise DataError(f"{paths['time']}: times are not increasing from 0 in 30-s steps; not a Walch time feature")
    their = cols["psg"].astype(np.int64)
    n = len(stage_codes)
    scores = np.array([np.mean(stage_codes[e0 + offsets] == their) for e0 in range(max(0, n - int(offsets[-1])))])
    if not len(scores) or scores.max() < FEATURE_LABEL_MATCH_MIN or (scores >= scores.max()).sum() > 1:
        best = f"{scores.max():.3f}" if len(scores) else "n/a (more feature rows than label epochs)"
        raise DataError(f"{paths['psg']}: cannot place Walch's feature rows on subject {subject}'s label epochs "
                        f"(best label agreement {best}, need {FEATURE_LABEL_MATCH_MIN} at one offset); the "
                        f"features belong to another night or subject. Remove them or set "
                        f"dataset.reader.activity_source=motion")
    out = np.full(n, np.nan, dtype=np.float32)
    out[int(scores.argmax()) + offsets] = cols["count"].astype(np.float32)
    return out


class AppleWatchSource(Source):
    """Reads subjects of a sleep-accel tree (PhysioNet layout).

    Parameters
    ----------
    root : folder holding ``heart_rate/`` and ``labels/`` (and optionally ``motion/``, ``steps/``).
    modalities : ``hr`` and/or ``activity``; activity comes from ``motion/`` when the subject has it.
    hr_margin_s : heart rate is read from ``-hr_margin_s`` to the end of the night + ``hr_margin_s`` (the
        files start days before the night).
    activity_source : ``auto`` (motion, else Walch's count feature, else none), ``motion``, ``features`` or
        ``none`` (heart rate only).
    """

    name = "applewatch"

    def __init__(self, root: str | Path, modalities: Sequence[str] = ("hr", "activity"), hr_margin_s: float = 600.0,
                 activity_source: str = "auto") -> None:
        super().__init__(root)
        if activity_source not in ACTIVITY_SOURCES:
            raise ValueError(f"applewatch: activity_source={activity_source!r}; options: {list(ACTIVITY_SOURCES)}")
        self.activity_source = activity_source
        unknown = set(modalities) - {"hr", "activity"}
        if unknown:
            raise ValueError(f"applewatch: unknown modalities {sorted(unknown)}; options: hr, activity (no ECG)")
        self.modalities = tuple(modalities)
        self.hr_margin_s = float(hr_margin_s)

    def settings(self) -> dict:
        changed = {"hr_margin_s": self.hr_margin_s, "activity_source": self.activity_source}
        return {k: v for k, v in changed.items() if v != {"hr_margin_s": 600.0, "activity_source": "auto"}[k]}

    def subjects(self) -> list[str]:
        folder = self.root / "labels"
        if not folder.is_dir():
            there = sorted(p.name for p in self.root.iterdir())
            raise DataError(f"applewatch: no labels/ folder in {self.root}; is dataset.root a sleep-accel "
                            f"download (holding heart_rate/ and labels/)? Found: {there}")
        return sorted(m.group(1) for p in folder.iterdir() if (m := _LABEL_RE.match(p.name)))

    def paths(self, subject: str) -> dict[str, Path]:
        return {
            "labels": self.root / "labels" / f"{subject}_labeled_sleep.txt",
            "heart_rate": self.root / "heart_rate" / f"{subject}_heartrate.txt",
            "motion": self.root / "motion" / f"{subject}_acceleration.txt",
            "steps": self.root / "steps" / f"{subject}_steps.txt",
            "count_feature": self.root / "features" / f"{subject}_count_feature.out",
        }

    def load(self, subject: str | int) -> NightRecord:
        sid = self.normalise_subject_id(subject)
        paths = self.paths(sid)
        if not paths["labels"].exists():
            self.check_subject(sid)
        codes, issues = read_labels(paths["labels"])
        labels, unknown = map_stage_codes(codes, "sleep_accel")
        n_epochs = len(codes)
        record = NightRecord(subject=sid, dataset=self.name, stage_codes=codes, labels=labels,
                             unknown_stage_codes=unknown, source_files={"labels": str(paths["labels"])})
        record.issues.update(issues)
        if "hr" in self.modalities:
            if not paths["heart_rate"].exists():
                raise DataError(f"applewatch: heart-rate file {paths['heart_rate']} is missing for subject {sid}; "
                                f"restore it or remove the subject's label file")
            record.hr, hr_issues = read_heart_rate(paths["heart_rate"], -self.hr_margin_s,
                                                   n_epochs * EPOCH_S + self.hr_margin_s)
            record.issues.update(hr_issues)
            record.source_files["heart_rate"] = str(paths["heart_rate"])
        if "activity" in self.modalities:
            use_motion = self.activity_source in ("auto", "motion") and paths["motion"].exists()
            if use_motion:
                record.activity_counts = motion_activity_per_epoch(paths["motion"], n_epochs)
                record.source_files["motion"] = str(paths["motion"])
            elif self.activity_source in ("auto", "features") and paths["count_feature"].exists():
                record.activity_counts = walch_count_activity(paths["count_feature"].parent, sid, codes)
                record.source_files["count_feature"] = str(paths["count_feature"])
                record.issues["activity_from_walch_features"] = 1
        if paths["steps"].exists():
            record.steps = steps_per_epoch(paths["steps"], n_epochs)
            record.source_files["steps"] = str(paths["steps"])
        return record
