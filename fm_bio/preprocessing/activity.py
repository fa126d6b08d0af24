"""Activity per epoch: per-night normalisation of counts (actigraphy) or motion-derived activity."""

from __future__ import annotations

import numpy as np

ACTIVITY_NORMALISATIONS = ("log_p95", "none")


def normalise_activity(counts: np.ndarray, method: str = "log_p95") -> np.ndarray:
    """Normalise one night's activity.

    ``log_p95``: ``log1p(counts) / p95(log1p(counts))`` over the night's valid epochs (counts are heavy-
    tailed; the log tames bursts, the night's 95th percentile removes device and person gain);
    ``none``: unchanged. NaN stays NaN.
    """
    x = np.asarray(counts, dtype=np.float64)
    if method == "none":
        return x.astype(np.float32)
    if method != "log_p95":
        raise ValueError(f"unknown activity normalisation {method!r}; options: {ACTIVITY_NORMALISATIONS}")
    valid = np.isfinite(x)
    logx = np.log1p(np.clip(x, 0, None))
    if not valid.any():
        return logx.astype(np.float32)
    scale = np.percentile(logx[valid], 95)
    return (logx / (scale if scale > 1e-6 else 1.0)).astype(np.float32)
