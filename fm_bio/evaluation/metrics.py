"""Sleep-staging metrics: accuracy, macro-F1 over the classes present, Cohen's kappa, per-class F1.

Everything is derived from one 4x4 confusion matrix (rows = true class, columns = predicted class, in
the order of ``fm_bio.data.labels.CLASS_NAMES``); masked epochs (target ``-1``) never enter it.

Macro-F1 averages the per-class F1 over the classes present in the true labels *or* the predictions.
A class absent from both is left out: counting it as 1 (as some research code does) inflates the
score, counting it as 0 deflates it. A class present only in the predictions has F1 = 0 and counts.
This equals scikit-learn's ``f1_score(average="macro", labels=<present classes>)``.

Two front ends share one implementation (:func:`metrics_from_confusion_tensor`):

- :class:`SleepStageMetrics`, a stateful ``torchmetrics.Metric`` for LightningModules (its confusion
  matrix is summed across processes);
- :func:`confusion_matrix`, :func:`metrics_from_confusion` and :func:`compute_metrics` on numpy
  arrays, returning JSON-able values, for reports and ``metrics.json``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

from fm_bio.data.labels import CLASS_NAMES, MASKED

N_CLASSES = len(CLASS_NAMES)
"""Number of sleep-stage classes (4)."""

SCALAR_KEYS: tuple[str, ...] = ("accuracy", "macro_f1", "kappa", *(f"f1_{c}" for c in CLASS_NAMES))
"""Keys of the float metrics, in report order (``n_epochs`` and ``confusion`` come besides)."""


def _check_labels(values: Tensor, name: str, allow_masked: bool, n_classes: int) -> None:
    """Raise a ValueError naming the bad values when ``values`` hold anything but class indices."""
    if values.numel() == 0:
        return
    low = MASKED if allow_masked else 0
    bad = (values < low) | (values >= n_classes)
    if allow_masked:
        bad &= values != MASKED
    if bool(bad.any()):
        found = sorted(set(values[bad].tolist()))[:10]
        allowed = f"{MASKED} (masked) or 0..{n_classes - 1}" if allow_masked else f"0..{n_classes - 1}"
        raise ValueError(f"{name} holds values {found} outside {allowed}")


def _format_inputs(preds: Tensor, target: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Flatten ``preds``/``target``; class scores ``[..., C]`` become their argmax."""
    preds = torch.as_tensor(preds)
    target = torch.as_tensor(target)
    if preds.ndim == target.ndim + 1:
        if preds.shape[-1] != n_classes:
            raise ValueError(f"preds look like class scores {tuple(preds.shape)} but the last dimension "
                             f"is not the number of classes ({n_classes})")
        preds = preds.argmax(dim=-1)
    if preds.is_floating_point() or target.is_floating_point():
        raise ValueError(f"preds ({preds.dtype}) and target ({target.dtype}) must hold integer class indices; "
                         "pass argmax(logits, -1), or the logits themselves as preds [..., C]")
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape; "
                         "pass one prediction (or one row of class scores) per target epoch")
    return preds.reshape(-1).long(), target.reshape(-1).long()


def metrics_from_confusion_tensor(cm: Tensor) -> dict[str, Tensor]:
    """All sleep-staging metrics of one confusion matrix (rows true, columns predicted).

    Parameters
    ----------
    cm : ``[C, C]`` tensor of counts.

    Returns
    -------
    dict of float64 CPU tensors: ``accuracy``, ``macro_f1``, ``kappa``, ``f1_<class>`` (NaN when the
    class is absent from both true labels and predictions), ``n_epochs`` (int64) and ``confusion``
    (the int64 matrix). With no epochs every metric is NaN; kappa is NaN when undefined (both raters
    use a single, identical class), as in scikit-learn.
    """
    counts = cm.detach().to("cpu", torch.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix must be square [C, C], got shape {tuple(counts.shape)}")
    n_classes = counts.shape[0]
    names = CLASS_NAMES if n_classes == N_CLASSES else tuple(str(i) for i in range(n_classes))
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    n = counts.sum()
    tp = counts.diagonal()
    true_n = counts.sum(dim=1)
    pred_n = counts.sum(dim=0)
    present = (true_n + pred_n) > 0
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (n_true + n_pred)
    f1 = torch.where(present, 2 * tp / (true_n + pred_n).clamp_min(1), nan)
    macro_f1 = f1[present].mean() if bool(present.any()) else nan
    if n > 0:
        accuracy = tp.sum() / n
        expected = (true_n * pred_n).sum() / n**2
        kappa = (accuracy - expected) / (1 - expected) if float(expected) < 1 else nan
    else:
        accuracy = kappa = nan
    out: dict[str, Tensor] = {"accuracy": accuracy, "macro_f1": macro_f1, "kappa": kappa}
    out.update({f"f1_{name}": f1[i] for i, name in enumerate(names)})
    out["n_epochs"] = n.round().long()
    out["confusion"] = counts.round().long()
    return out


class SleepStageMetrics(Metric):
    """Accuracy, macro-F1 (over present classes), Cohen's kappa and per-class F1 of sleep staging.

    Accumulates a ``[n_classes, n_classes]`` confusion matrix (rows true, columns predicted), summed
    across processes; targets equal to ``-1`` (masked epochs) are ignored.

    Parameters
    ----------
    n_classes : number of classes (4: wake, light, deep, REM).
    validate_args : check that targets are ``-1`` or class indices and predictions class indices
        (one device-to-host sync per ``update``; turn off in tight GPU loops once the data is trusted).

    Examples
    --------
    >>> m = SleepStageMetrics()
    >>> m.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, -1]))
    >>> float(m.compute()["accuracy"])
    1.0

    ``compute()`` returns the dict of :func:`metrics_from_confusion_tensor` (CPU tensors). Log the
    scalars with ``self.log_dict({k: v for k, v in out.items() if k != "confusion"})``; NaN per-class
    F1 means the class was absent from both targets and predictions.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confmat: Tensor

    def __init__(self, n_classes: int = N_CLASSES, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_classes = int(n_classes)
        self.validate_args = validate_args
        self.add_state("confmat", default=torch.zeros(self.n_classes, self.n_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Parameters
        ----------
        preds : ``[N]`` (or any shape equal to ``target``) predicted class indices, or class scores
            ``[..., n_classes]`` (their argmax is taken).
        target : true class indices, ``-1`` for masked epochs (ignored).
        """
        preds, target = _format_inputs(preds, target, self.n_classes)
        if self.validate_args:
            _check_labels(target, "target", allow_masked=True, n_classes=self.n_classes)
            _check_labels(preds, "preds", allow_masked=False, n_classes=self.n_classes)
        if target.numel() == 0:
            return
        self.confmat += multiclass_confusion_matrix(preds, target, num_classes=self.n_classes,
                                                    ignore_index=MASKED, validate_args=False)

    def compute(self) -> dict[str, Tensor]:
        """The metrics of everything seen since the last ``reset()``."""
        return metrics_from_confusion_tensor(self.confmat)


# ---------------------------------------------------------------------------------------------------
# numpy front end (reports, metrics.json)
# ---------------------------------------------------------------------------------------------------


def _as_int_labels(values: np.ndarray, name: str) -> np.ndarray:
    """int64 copy of a label array; floats are accepted only when they are whole numbers."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} holds non-integer or NaN labels; pass class indices (-1 for masked epochs)")
    elif arr.size and arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """Confusion matrix ``[n_classes, n_classes]`` (int64; rows true, columns predicted).

    Epochs whose ``y_true`` is ``-1`` (masked) are left out. Raises ValueError on labels outside the
    class range or arrays of different lengths.
    """
    t = torch.as_tensor(_as_int_labels(y_true, "y_true"))
    p = torch.as_tensor(_as_int_labels(y_pred, "y_pred"))
    p, t = _format_inputs(p, t, n_classes)
    _check_labels(t, "y_true", allow_masked=True, n_classes=n_classes)
    keep = t != MASKED
    _check_labels(p[keep], "y_pred", allow_masked=False, n_classes=n_classes)
    if not bool(keep.any()):
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    cm = multiclass_confusion_matrix(p[keep], t[keep], num_classes=n_classes, validate_args=False)
    return cm.numpy().astype(np.int64)


def _json_float(x: Tensor) -> float | None:
    v = float(x)
    return None if math.isnan(v) else v


def metrics_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """Metrics of a confusion matrix as JSON-able values.

    Returns
    -------
    dict with ``accuracy``, ``macro_f1``, ``kappa``, ``f1_<class>`` (floats; ``None`` where undefined:
    a class absent from both true labels and predictions, kappa of a single shared class, or no epochs),
    ``n_epochs`` (int) and ``confusion`` (list of lists of ints, rows true, columns predicted).
    """
    arr = np.asarray(cm)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"a confusion matrix must be square [C, C], got shape {arr.shape}")
    res = metrics_from_confusion_tensor(torch.as_tensor(arr.astype(np.float64)))
    out: dict[str, Any] = {k: _json_float(v) for k, v in res.items() if k not in ("n_epochs", "confusion")}
    out["n_epochs"] = int(res["n_epochs"])
    out["confusion"] = res["confusion"].tolist()
    return out


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES) -> dict[str, Any]:
    """:func:`metrics_from_confusion` of :func:`confusion_matrix` (masked ``y_true == -1`` ignored)."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, n_classes=n_classes))
