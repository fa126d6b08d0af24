"""Report figures: confusion matrices, hypnograms, per-client paired scores (PNG, matplotlib Agg).

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global backend
switch, safe headless) and saved atomically (temporary file + rename).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fm_bio.data.labels import CLASS_NAMES, MASKED, SleepStage

DPI = 120
EPOCH_S = 30.0
"""Length of one scored epoch (s): ``epoch_index * EPOCH_S`` is the time into the night."""

DISPLAY_NAMES: dict[str, str] = {"wake": "Wake", "light": "Light", "deep": "Deep", "rem": "REM"}

HYPNOGRAM_LEVEL: dict[int, int] = {SleepStage.DEEP: 0, SleepStage.LIGHT: 1, SleepStage.REM: 2, SleepStage.WAKE: 3}
"""Stage -> y level, so that the axis reads wake, REM, light, deep from top to bottom (clinical order)."""


def save_figure(fig: Figure, path: Path) -> Path:
    """Save ``fig`` as PNG at ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp.png")
    FigureCanvasAgg(fig)
    try:
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def plot_confusion(cm: np.ndarray, path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows true, columns predicted) annotated with the counts."""
    cm = np.asarray(cm, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    names = [DISPLAY_NAMES.get(c, c) for c in CLASS_NAMES][: cm.shape[0]]
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.add_subplot()
    im = ax.imshow(frac, vmin=0.0, vmax=1.0, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            colour = "white" if frac[i, j] > 0.6 else "black"
            text = f"{frac[i, j]:.2f}\n({cm[i, j]})" if rows[i, 0] > 0 else "-"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true row")
    fig.tight_layout()
    return save_figure(fig, path)


def _hypnogram_trace(epoch_index: np.ndarray, stages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hours and stage levels on the full epoch grid; missing/masked epochs are NaN (line breaks)."""
    epoch_index = np.asarray(epoch_index, dtype=np.int64)
    stages = np.asarray(stages, dtype=np.int64)
    if epoch_index.size == 0:
        return np.zeros(0), np.zeros(0)
    start, stop = int(epoch_index.min()), int(epoch_index.max())
    level = np.full(stop - start + 2, np.nan)  # one extra epoch so the last step has a width
    lut = np.full(len(CLASS_NAMES), np.nan)
    for stage, y in HYPNOGRAM_LEVEL.items():
        lut[stage] = y
    valid = (stages != MASKED) & (stages >= 0) & (stages < len(CLASS_NAMES))
    level[epoch_index[valid] - start] = lut[stages[valid]]
    # the extra epoch repeats the last value so that steps-post draws the final epoch
    level[-1] = level[-2]
    hours = (np.arange(start, stop + 2) * EPOCH_S) / 3600.0
    return hours, level


def plot_hypnogram(epoch_index: np.ndarray, y_true: np.ndarray,
                   predictions: Mapping[str, tuple[np.ndarray, np.ndarray, str]],
                   path: Path, title: str = "") -> Path:
    """True stages and each model's predicted stages over the night, one panel each.

    Parameters
    ----------
    epoch_index, y_true : position in the night (30-s epochs) and true class (``-1`` masked).
    predictions : model -> (epoch_index, y_pred, panel subtitle); the true trace is drawn faintly
        behind each model's prediction.
    path : PNG to write.
    """
    n_panels = 1 + len(predictions)
    fig = Figure(figsize=(8.0, 1.35 * n_panels + 0.6))
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    t_hours, t_level = _hypnogram_trace(epoch_index, y_true)
    axes[0].step(t_hours, t_level, where="post", color="black", lw=0.9)
    axes[0].set_title("true stages", fontsize=8, loc="left")
    for ax, (model, (idx, pred, subtitle)) in zip(axes[1:], predictions.items(), strict=True):
        p_hours, p_level = _hypnogram_trace(idx, pred)
        ax.step(t_hours, t_level, where="post", color="0.75", lw=0.8, label="true")
        ax.step(p_hours, p_level, where="post", color="tab:blue", lw=0.9, label=model)
        ax.set_title(f"{model}: {subtitle}" if subtitle else model, fontsize=8, loc="left")
    order = sorted(HYPNOGRAM_LEVEL.items(), key=lambda kv: kv[1])
    for ax in axes:
        ax.set_yticks([y for _, y in order], [DISPLAY_NAMES[CLASS_NAMES[s]] for s, _ in order], fontsize=7)
        ax.set_ylim(-0.5, 3.5)
        ax.grid(axis="y", color="0.9", lw=0.5)
    axes[-1].set_xlabel("hours into the night (epoch_index x 30 s)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_paired(pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path,
                baseline: str = "base", metric: str = "macro-F1") -> Path:
    """Per-client score of each model (y) against the baseline's (x); above the diagonal = better.

    ``pairs`` maps a model to (baseline scores, model scores) over the clients that have both.
    """
    fig = Figure(figsize=(4.4, 4.2))
    ax = fig.add_subplot()
    markers = "osD^v<>P*X"
    lo, hi = np.inf, -np.inf
    for k, (model, (xs, ys)) in enumerate(pairs.items()):
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if np.isfinite(xs).any() and np.isfinite(ys).any():
            lo = min(lo, np.nanmin(xs), np.nanmin(ys))
            hi = max(hi, np.nanmax(xs), np.nanmax(ys))
        ax.scatter(xs, ys, s=22, marker=markers[k % len(markers)], label=f"{model} (n={xs.size})", alpha=0.8)
    lo, hi = (0.0, 1.0) if not np.isfinite([lo, hi]).all() else (max(-1.0, lo - 0.05), min(1.0, hi + 0.05))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"{baseline} {metric}")
    ax.set_ylabel(f"model {metric}")
    ax.set_title(f"per-client {metric}: each model vs {baseline}", fontsize=9)
    if pairs:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)
