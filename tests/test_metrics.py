"""Sleep-staging metrics against scikit-learn, and the torchmetrics Metric against the numpy functions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from fm_bio.data.labels import CLASS_NAMES, MASKED
from fm_bio.evaluation.metrics import (
    SleepStageMetrics,
    compute_metrics,
    confusion_matrix,
    metrics_from_confusion,
)

LABELS = list(range(len(CLASS_NAMES)))


def sklearn_reference(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """The expected metrics, computed with scikit-learn on the unmasked epochs."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    keep = y_true != MASKED
    t, p = y_true[keep], y_pred[keep]
    present = sorted(set(t.tolist()) | set(p.tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_class = skm.f1_score(t, p, labels=LABELS, average=None, zero_division=0)
        ref = {
            "accuracy": skm.accuracy_score(t, p),
            "macro_f1": skm.f1_score(t, p, labels=present, average="macro", zero_division=0),
            "kappa": skm.cohen_kappa_score(t, p),
            "confusion": skm.confusion_matrix(t, p, labels=LABELS).tolist(),
            "n_epochs": int(keep.sum()),
        }
    for c, name in enumerate(CLASS_NAMES):
        ref[f"f1_{name}"] = float(per_class[c]) if c in present else None
    return ref


def assert_matches(got: dict, ref: dict) -> None:
    assert got["confusion"] == ref["confusion"]
    assert got["n_epochs"] == ref["n_epochs"]
    for key in ("accuracy", "macro_f1", *(f"f1_{c}" for c in CLASS_NAMES)):
        if ref[key] is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    if math.isnan(ref["kappa"]):
        assert got["kappa"] is None
    else:
        assert got["kappa"] == pytest.approx(ref["kappa"], abs=1e-12)


FIXED = {
    "mixed": ([0, 1, 1, 2, 3, 3, 1, 0, 2, 1], [0, 1, 2, 2, 3, 1, 1, 1, 2, 1]),
    # deep (2) absent from both: left out of macro-F1, f1_deep None
    "class_absent_from_both": ([0, 1, 1, 3, 3, 1, 0], [0, 1, 3, 3, 1, 1, 0]),
    # deep (2) only predicted: counted with F1 = 0
    "class_only_in_predictions": ([0, 1, 1, 3, 3, 1, 0], [0, 2, 1, 3, 3, 1, 0]),
    "perfect": ([0, 1, 2, 3, 1, 1, 2], [0, 1, 2, 3, 1, 1, 2]),
    "all_one_class_perfect": ([1, 1, 1, 1], [1, 1, 1, 1]),
    "all_one_class_true_only": ([1, 1, 1, 1, 1], [1, 0, 1, 3, 1]),
    "all_one_class_pred_only": ([0, 1, 2, 3, 1], [1, 1, 1, 1, 1]),
    "masked_targets": ([-1, 0, 1, -1, 2, 3, 3, -1], [3, 0, 1, 2, 2, 3, 0, 1]),
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_examples_match_sklearn(name):
    y_true, y_pred = (np.array(a) for a in FIXED[name])
    assert_matches(compute_metrics(y_true, y_pred), sklearn_reference(y_true, y_pred))


@pytest.mark.parametrize("seed", range(8))
def test_random_examples_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    probs = rng.dirichlet(np.ones(4))
    y_true = rng.choice(4, size=n, p=probs)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, 4, n))
    if seed % 2:  # knock out a class from both, and mask a few epochs
        y_pred[y_pred == 2] = 1
        y_true[y_true == 2] = 1
        y_true[rng.random(n) < 0.1] = MASKED
    assert_matches(compute_metrics(y_true, y_pred), sklearn_reference(y_true, y_pred))


def test_absent_class_is_left_out_not_counted_as_one_or_zero():
    y_true = np.array([0, 0, 1, 1, 3, 3])
    y_pred = np.array([0, 1, 1, 1, 3, 3])
    m = compute_metrics(y_true, y_pred)
    f1 = [m["f1_wake"], m["f1_light"], m["f1_rem"]]
    assert m["f1_deep"] is None
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["macro_f1"] != pytest.approx(np.mean([*f1, 1.0]))
    assert m["macro_f1"] != pytest.approx(np.mean([*f1, 0.0]))


def test_class_only_predicted_counts_with_zero():
    m = compute_metrics(np.array([0, 1, 1, 1]), np.array([0, 1, 1, 2]))
    assert m["f1_deep"] == 0.0
    assert m["macro_f1"] == pytest.approx(np.mean([1.0, m["f1_light"], 0.0]))


def test_masked_targets_are_ignored_whatever_the_prediction():
    with_masked = compute_metrics(np.array([0, -1, 1, -1, 3]), np.array([0, 2, 1, 3, 3]))
    without = compute_metrics(np.array([0, 1, 3]), np.array([0, 1, 3]))
    assert with_masked == without
    assert with_masked["n_epochs"] == 3


def test_empty_and_all_masked_give_none_not_errors():
    for y_true in (np.array([], dtype=int), np.array([-1, -1])):
        m = compute_metrics(y_true, np.zeros_like(y_true))
        assert m["n_epochs"] == 0
        assert all(m[k] is None for k in ("accuracy", "macro_f1", "kappa", "f1_wake"))


def test_confusion_matrix_and_metrics_from_confusion():
    y_true = np.array([0, 1, 2, 3, 3, -1])
    y_pred = np.array([0, 1, 1, 3, 0, 2])
    cm = confusion_matrix(y_true, y_pred)
    assert cm.dtype == np.int64 and cm.shape == (4, 4)
    assert cm.tolist() == skm.confusion_matrix(y_true[:5], y_pred[:5], labels=LABELS).tolist()
    assert metrics_from_confusion(cm) == compute_metrics(y_true, y_pred)


def test_bad_labels_raise_clear_errors():
    with pytest.raises(ValueError, match="y_true holds values \\[7\\]"):
        compute_metrics(np.array([0, 7]), np.array([0, 1]))
    with pytest.raises(ValueError, match="y_pred holds values \\[4\\]"):
        compute_metrics(np.array([0, 1]), np.array([0, 4]))
    with pytest.raises(ValueError, match="differ in shape"):
        compute_metrics(np.array([0, 1, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="square"):
        metrics_from_confusion(np.zeros((4, 3)))


def test_torchmetrics_metric_equals_numpy_over_several_updates():
    rng = np.random.default_rng(3)
    metric = SleepStageMetrics()
    all_true, all_pred = [], []
    for _ in range(5):
        n = int(rng.integers(1, 60))
        y_true = rng.integers(-1, 4, n)
        y_pred = np.where(rng.random(n) < 0.5, np.clip(y_true, 0, 3), rng.integers(0, 4, n))
        metric.update(torch.as_tensor(y_pred), torch.as_tensor(y_true))
        all_true.append(y_true)
        all_pred.append(y_pred)
    out = metric.compute()
    ref = compute_metrics(np.concatenate(all_true), np.concatenate(all_pred))
    assert out["confusion"].tolist() == ref["confusion"]
    assert int(out["n_epochs"]) == ref["n_epochs"]
    for key in ("accuracy", "macro_f1", "kappa", *(f"f1_{c}" for c in CLASS_NAMES)):
        if ref[key] is None:
            assert math.isnan(float(out[key])), key
        else:
            assert float(out[key]) == pytest.approx(ref[key], abs=1e-12), key
    metric.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # compute() before update() warns
        assert int(metric.compute()["n_epochs"]) == 0


def test_metric_takes_class_scores_and_sequences():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 4)  # [batch, sequence, classes]
    target = torch.randint(-1, 4, (3, 7))
    a, b = SleepStageMetrics(), SleepStageMetrics()
    a.update(logits, target)
    b.update(logits.argmax(-1).reshape(-1), target.reshape(-1))
    assert torch.equal(a.compute()["confusion"], b.compute()["confusion"])
    assert a.compute()["confusion"].sum() == int((target != MASKED).sum())


def test_metric_ignores_masked_and_rejects_bad_targets():
    metric = SleepStageMetrics()
    metric.update(torch.tensor([0, 1, 3]), torch.tensor([0, -1, 3]))
    assert int(metric.compute()["n_epochs"]) == 2
    with pytest.raises(ValueError, match="target holds values \\[5\\]"):
        metric.update(torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match="integer class indices"):
        metric.update(torch.tensor([0.0]), torch.tensor([0]))


def test_metric_state_sums_like_a_distributed_merge():
    """Two metrics merged (what the cross-process "sum" reduction does) equal one over all batches."""
    rng = np.random.default_rng(7)
    t1, p1, t2, p2 = (torch.as_tensor(rng.integers(0, 4, 50)) for _ in range(4))
    a, b, both = SleepStageMetrics(), SleepStageMetrics(), SleepStageMetrics()
    a.update(p1, t1)
    b.update(p2, t2)
    both.update(torch.cat([p1, p2]), torch.cat([t1, t2]))
    a.merge_state(b)
    assert torch.equal(a.compute()["confusion"], both.compute()["confusion"])
