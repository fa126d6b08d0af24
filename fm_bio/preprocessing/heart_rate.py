"""Heart rate: irregular samples -> 1 Hz grid with bounded gap interpolation, range checks, per-night
normalisation.

Normalisation options (``hr_normalisation``), all computed over one night's valid 1 Hz samples:

- ``night_scale`` (default): ``(hr - mean) / p90(|hr - mean|)``, the scaling of Walch et al. (2019)
  without their smoothing filter, so the within-epoch beat-to-beat detail stays in the signal.
- ``walch_dog``: the prototype's full recipe: the same scaling, then a difference-of-Gaussians filter
  (sigma 120 s minus 0.75 x sigma 600 s; Walch et al.) that keeps changes on the scale of minutes.
- ``zscore``: ``(hr - mean) / sd``.
- ``none``: beats per minute, unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

HR_NORMALISATIONS = ("night_scale", "walch_dog", "zscore", "none")


def to_1hz_grid(t_s: np.ndarray, hr_bpm: np.ndarray, n_seconds: int, max_gap_s: float) -> np.ndarray:
    """Heart rate on the grid ``t = 0.5, 1.5, ... n_seconds - 0.5`` (one value per second).

    Linear interpolation between samples; a grid point is NaN when the samples around it are more than
    ``max_gap_s`` apart (bounded gap interpolation) or it lies outside the sampled span by more than
    ``max_gap_s / 2``.
    """
    grid = np.arange(n_seconds, dtype=np.float64) + 0.5
    out = np.full(n_seconds, np.nan, dtype=np.float32)
    if len(t_s) == 0:
        return out
    t_s = np.asarray(t_s, dtype=np.float64)
    vals = np.asarray(hr_bpm, dtype=np.float64)
    out[:] = np.interp(grid, t_s, vals)
    after = np.searchsorted(t_s, grid)  # first sample at or after each grid point
    before = after - 1
    t_after = np.where(after < len(t_s), t_s[np.minimum(after, len(t_s) - 1)], np.inf)
    t_before = np.where(before >= 0, t_s[np.maximum(before, 0)], -np.inf)
    gap = t_after - t_before
    inside = np.isfinite(gap) & (gap <= max_gap_s)
    edge = (~np.isfinite(gap)) & (np.minimum(np.abs(grid - t_before), np.abs(t_after - grid)) <= max_gap_s / 2)
    out[~(inside | edge)] = np.nan
    return out


def regular_to_1hz(values: np.ndarray, sfreq_hz: float, n_seconds: int) -> np.ndarray:
    """Resample a regularly sampled heart-rate channel (e.g. MESA's 1 Hz ``HR``) to the 1 Hz grid."""
    values = np.asarray(values, dtype=np.float64)
    t = (np.arange(len(values)) + 0.5) / sfreq_hz
    grid = np.arange(n_seconds) + 0.5
    out = np.interp(grid, t, values).astype(np.float32)
    out[grid > t[-1] + 1.0 / sfreq_hz] = np.nan
    return out


def range_check(hr_bpm: np.ndarray, hr_min_bpm: float, hr_max_bpm: float) -> tuple[np.ndarray, int]:
    """Set samples outside the physiological range to NaN; return them and how many were removed."""
    hr = np.asarray(hr_bpm, dtype=np.float32).copy()
    bad = np.isfinite(hr) & ((hr < hr_min_bpm) | (hr > hr_max_bpm))
    hr[bad] = np.nan
    return hr, int(bad.sum())


def fill_short_gaps(x: np.ndarray, max_gap_s: float) -> np.ndarray:
    """Linearly interpolate runs of NaN no longer than ``max_gap_s`` samples (1 Hz); longer runs stay NaN."""
    x = np.asarray(x, dtype=np.float32).copy()
    nan = ~np.isfinite(x)
    if not nan.any() or nan.all():
        return x
    idx = np.arange(len(x))
    filled = np.interp(idx, idx[~nan], x[~nan]).astype(np.float32)
    # Length of each NaN run, and whether it is bounded by valid samples on both sides.
    edges = np.diff(np.concatenate([[0], nan.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for s, e in zip(starts, ends, strict=True):
        if e - s <= max_gap_s and s > 0 and e < len(x):
            x[s:e] = filled[s:e]
    return x


def normalise_night(hr_1hz: np.ndarray, method: str = "night_scale") -> np.ndarray:
    """Normalise one night's 1 Hz heart rate (NaNs stay NaN and are ignored in the statistics)."""
    if method not in HR_NORMALISATIONS:
        raise ValueError(f"unknown heart-rate normalisation {method!r}; options: {HR_NORMALISATIONS}")
    hr = np.asarray(hr_1hz, dtype=np.float64)
    valid = np.isfinite(hr)
    if method == "none" or not valid.any():
        return hr.astype(np.float32)
    mean = hr[valid].mean()
    if method == "zscore":
        sd = hr[valid].std()
        return ((hr - mean) / (sd if sd > 1e-6 else 1.0)).astype(np.float32)
    scale = np.percentile(np.abs(hr[valid] - mean), 90)
    out = (hr - mean) / (scale if scale > 1e-6 else 1.0)
    if method == "walch_dog":
        filled = np.where(valid, out, 0.0)
        dog = gaussian_filter1d(filled, 120.0, mode="reflect") - 0.75 * gaussian_filter1d(filled, 600.0, mode="reflect")
        out = np.where(valid, dog, np.nan)
    return out.astype(np.float32)
