"""Classical baseline (``model=classic``): gradient-boosted trees on hand-crafted per-epoch features.

Features per 30-s epoch, from one night's cached arrays (heart rate in bpm, activity, epoch position):

- heart rate within the epoch: mean, SD, min, max, and the mean relative to the night's median;
- heart-rate level and variability over centred windows of +-2, +-5 and +-10 epochs: the mean and SD of
  the epoch means (missing epochs are skipped);
- activity (the night-normalised value when present): the epoch's value and the mean and max over the
  same windows (all 0 when the subject has no activity);
- time of night: hours since the recording start and the fraction of the night.

Windows reach ``FEATURE_WINDOW_EPOCHS`` epochs either side, so the per-client split must keep at least that
many epochs between training and test epochs (the finetune task enforces it).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

WINDOWS_EPOCHS = (2, 5, 10)
FEATURE_WINDOW_EPOCHS = max(WINDOWS_EPOCHS)


def _window_stats(values: np.ndarray, half_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred-window mean, SD and max of a per-epoch series with NaN gaps (NaN ignored)."""
    n = len(values)
    pad = np.full(half_width, np.nan)
    x = np.concatenate([pad, values, pad])
    windows = np.lib.stride_tricks.sliding_window_view(x, 2 * half_width + 1)[:n]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN (filled with 0 later)
        return np.nanmean(windows, 1), np.nanstd(windows, 1), np.nanmax(windows, 1)


def epoch_features(arrays: Mapping[str, np.ndarray], n_night_epochs: int) -> np.ndarray:
    """Feature matrix [n_cached_epochs, F] for one subject's cached arrays (rows in cache order)."""
    epoch = np.asarray(arrays["epoch_index"], dtype=np.int64)
    n_grid = max(int(n_night_epochs), int(epoch.max()) + 1)
    hr = np.asarray(arrays["hr_bpm"], dtype=np.float64)
    grid_hr = np.full(n_grid, np.nan)
    grid_hr[epoch] = hr.mean(1)
    median = np.nanmedian(grid_hr)
    cols = [hr.mean(1), hr.std(1), hr.min(1), hr.max(1), hr.mean(1) - median]
    for w in WINDOWS_EPOCHS:
        mean, sd, _ = _window_stats(grid_hr, w)
        cols += [mean[epoch] - median, sd[epoch]]
    if "activity" in arrays:
        act = np.asarray(arrays["activity"], dtype=np.float64)[:, 0]
        grid_act = np.full(n_grid, np.nan)
        grid_act[epoch] = act
        cols.append(act)
        for w in WINDOWS_EPOCHS:
            mean, _, mx = _window_stats(grid_act, w)
            cols += [mean[epoch], mx[epoch]]
    else:
        cols += [np.zeros(len(epoch))] * (1 + 2 * len(WINDOWS_EPOCHS))
    cols += [epoch * 30.0 / 3600.0, epoch / max(1, n_grid - 1)]
    return np.nan_to_num(np.column_stack(cols), nan=0.0).astype(np.float32)


def make_classifier(seed: int, class_weighted: bool = True, max_iter: int = 200,
                    learning_rate: float = 0.05) -> HistGradientBoostingClassifier:
    """The baseline model: histogram gradient boosting (scikit-learn), balanced class weights by default."""
    return HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate, random_state=seed,
                                          class_weight="balanced" if class_weighted else None,
                                          early_stopping=False)
