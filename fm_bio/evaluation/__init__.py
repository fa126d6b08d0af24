"""Evaluation of the per-client study: sleep-staging metrics, the sweep report and its figures.

``fm_bio.evaluation.metrics`` is light (torch + torchmetrics) and imported eagerly;
:func:`build_report` and :func:`report_task` (pandas, scipy, matplotlib) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fm_bio.evaluation.metrics import (
    SleepStageMetrics,
    compute_metrics,
    confusion_matrix,
    metrics_from_confusion,
)

if TYPE_CHECKING:
    from fm_bio.evaluation.report import build_report, report_task

__all__ = [
    "SleepStageMetrics",
    "build_report",
    "compute_metrics",
    "confusion_matrix",
    "metrics_from_confusion",
    "report_task",
]


def __getattr__(name: str) -> Any:
    if name in ("build_report", "report_task"):
        from fm_bio.evaluation import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
