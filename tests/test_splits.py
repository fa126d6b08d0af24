"""Subject-level and per-client splits: disjointness, coverage, gaps in time, determinism."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fm_bio.data import splits
from fm_bio.data.splits import (
    ClientSplit,
    SplitError,
    blocked_kfold,
    chronological,
    client_split,
    random_epochs,
    split_subjects,
)


def _night(rng: np.random.Generator, n_night: int, p_drop: float = 0.05, p_masked: float = 0.08):
    """epoch_index with random QC holes (single epochs and a longer run) and labels with masked epochs."""
    keep = rng.random(n_night) > p_drop
    if n_night > 40:
        a = int(rng.integers(0, n_night - 10))
        keep[a : a + int(rng.integers(2, 10))] = False
    epoch_index = np.flatnonzero(keep).astype(np.int32)
    label = rng.integers(0, 4, len(epoch_index)).astype(np.int8)
    label[rng.random(len(epoch_index)) < p_masked] = -1
    return epoch_index, label


def _min_dist(a: np.ndarray, b: np.ndarray) -> int:
    if len(a) == 0 or len(b) == 0:
        return np.iinfo(np.int64).max
    return int(np.min(np.abs(a.astype(np.int64)[:, None] - b.astype(np.int64)[None, :])))


def _windows(epochs: np.ndarray, c: int) -> set[int]:
    return {int(e) + k for e in epochs for k in range(-c, c + 1)}


# --------------------------------------------------------------------------------------------------
# Subject level
# --------------------------------------------------------------------------------------------------

SUBJECTS = [f"{i:04d}" for i in range(1, 41)]


def test_split_subjects_disjoint_complete_and_holdout():
    holdout = ["0003", "0017"]
    s = split_subjects(SUBJECTS, val_fraction=0.15, test_fraction=0.2, seed=1, holdout=holdout)
    train, val, test = set(s.train), set(s.val), set(s.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(SUBJECTS) - set(holdout)
    assert set(s.holdout) == set(holdout)
    assert not (set(holdout) & (train | val | test))
    assert len(val) == round(0.15 * 38) and len(test) == round(0.2 * 38)
    assert list(s.train) == sorted(s.train)


def test_split_subjects_deterministic_and_order_free():
    a = split_subjects(SUBJECTS, seed=7)
    b = split_subjects(list(reversed(SUBJECTS)), seed=7)
    assert a == b
    others = {split_subjects(SUBJECTS, seed=k).val for k in range(5)}
    assert len(others) > 1  # the seed matters


def test_split_subjects_small_counts():
    s = split_subjects(["a", "b", "c"], val_fraction=0.05, test_fraction=0.05, seed=0)
    assert len(s.val) == 1 and len(s.test) == 1 and len(s.train) == 1
    s = split_subjects(["a", "b"], val_fraction=0.2, test_fraction=0.0)
    assert len(s.val) == 1 and s.test == () and len(s.train) == 1
    with pytest.raises(SplitError, match="too few subjects"):
        split_subjects(["a", "b"], val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(SplitError, match="too few subjects"):
        split_subjects(["a", "b", "c"], holdout=["a", "b"], val_fraction=0.1, test_fraction=0.0)


def test_split_subjects_bad_input():
    with pytest.raises(SplitError, match="duplicate"):
        split_subjects(["a", "a", "b", "c"])
    with pytest.raises(SplitError, match="sum"):
        split_subjects(SUBJECTS, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(SplitError, match=r"\[0, 1\)"):
        split_subjects(SUBJECTS, val_fraction=-0.1)


def test_split_subjects_unknown_holdout_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="fm_bio.data.splits"):
        s = split_subjects(SUBJECTS, holdout=["nope"])
    assert "nope" in caplog.text and s.holdout == ()


# --------------------------------------------------------------------------------------------------
# blocked k-fold
# --------------------------------------------------------------------------------------------------


def _check_client_split(cs: ClientSplit, epoch_index: np.ndarray, label: np.ndarray, gap: int):
    tr, va, te = cs.train, cs.val, cs.test
    for rows in (tr, va, te):
        assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)
        assert np.all(label[rows] >= 0), "masked rows must never be in a split"
    assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))
    et, ev, ee = epoch_index[tr], epoch_index[va], epoch_index[te]
    assert _min_dist(et, ee) > gap and _min_dist(ev, ee) > gap and _min_dist(et, ev) > gap


def test_blocked_kfold_randomised_properties():
    rng = np.random.default_rng(123)
    n_ok = 0
    for _trial in range(60):
        epoch_index, label = _night(rng, int(rng.integers(80, 400)))
        n_folds = int(rng.integers(2, 8))
        c = int(rng.integers(0, 6))
        gap_epochs = None if rng.random() < 0.5 else int(rng.integers(0, 8))
        gap = c if gap_epochs is None else gap_epochs
        val_fraction = float(rng.choice([0.0, 0.1, 0.15]))
        labelled = np.flatnonzero(label >= 0)
        seen = np.zeros(len(label), dtype=int)
        sizes = []
        try:
            folds = [
                blocked_kfold(
                    epoch_index,
                    label,
                    n_folds,
                    f,
                    context_epochs=c,
                    gap_epochs=gap_epochs,
                    val_fraction=val_fraction,
                )
                for f in range(n_folds)
            ]
        except SplitError:
            continue
        n_ok += 1
        for cs in folds:
            _check_client_split(cs, epoch_index, label, gap)
            seen[cs.test] += 1
            sizes.append(len(cs.test))
            # test block is contiguous among the labelled rows
            pos = np.searchsorted(labelled, cs.test)
            assert np.all(np.diff(pos) == 1)
            # no training/validation context window contains a test epoch when gap >= c
            if gap >= c:
                ctx = _windows(epoch_index[np.concatenate([cs.train, cs.val])], c)
                assert not ctx & set(epoch_index[cs.test].tolist())
            if val_fraction > 0:
                assert 1 <= len(cs.val) <= max(1, round(val_fraction * len(labelled)))
            else:
                assert len(cs.val) == 0
        assert np.all(seen[labelled] == 1), "every labelled epoch is a test epoch exactly once over the folds"
        assert np.all(seen[label < 0] == 0)
        assert max(sizes) - min(sizes) <= 1
    assert n_ok >= 45, f"only {n_ok} of 60 random configurations could be split"


@pytest.mark.parametrize("c", [1, 3, 5])
def test_blocked_kfold_double_gap_gives_disjoint_windows(c):
    rng = np.random.default_rng(c)
    epoch_index, label = _night(rng, 300)
    for fold in range(4):
        cs = blocked_kfold(epoch_index, label, n_folds=4, fold=fold, context_epochs=c, gap_epochs=2 * c)
        test_windows = _windows(epoch_index[cs.test], c)
        for rows in (cs.train, cs.val):
            assert not _windows(epoch_index[rows], c) & test_windows


def test_blocked_kfold_gap_is_measured_in_time_not_rows():
    # Epochs 0..49, then a QC hole, then 100..149: rows 49 and 50 are adjacent but 51 epochs apart.
    epoch_index = np.concatenate([np.arange(50), np.arange(100, 150)]).astype(np.int32)
    label = np.zeros(100, dtype=np.int8)
    cs = blocked_kfold(epoch_index, label, n_folds=2, fold=0, context_epochs=3, val_fraction=0.1)
    assert cs.test.tolist() == list(range(50))
    assert 50 in cs.val  # epoch 100 is far from the test block in time: not dropped
    # without the hole, the 3 epochs after the test block are dropped
    cs2 = blocked_kfold(np.arange(100), label, n_folds=2, fold=0, context_epochs=3, val_fraction=0.1)
    assert cs2.val[0] == 53


def test_blocked_kfold_val_follows_test_and_wraps():
    epoch_index, label = np.arange(200), np.ones(200, dtype=np.int8)
    cs = blocked_kfold(epoch_index, label, n_folds=5, fold=1, context_epochs=2, val_fraction=0.1)
    assert cs.test[0] == 40 and cs.test[-1] == 79
    assert cs.val.tolist() == list(range(82, 102))  # right after the gap following the test block
    assert 102 not in cs.train and 103 not in cs.train and 104 in cs.train
    last = blocked_kfold(epoch_index, label, n_folds=5, fold=4, context_epochs=2, val_fraction=0.1)
    assert last.val.tolist() == list(range(0, 20))  # wraps round to the start of the night


def test_blocked_kfold_errors():
    ei, lab = np.arange(10), np.zeros(10, dtype=np.int8)
    with pytest.raises(SplitError, match="fold=5"):
        blocked_kfold(ei, lab, n_folds=5, fold=5)
    with pytest.raises(SplitError, match="n_folds"):
        blocked_kfold(ei[:3], lab[:3], n_folds=5)
    with pytest.raises(SplitError, match="no training epochs"):
        blocked_kfold(ei, lab, n_folds=2, context_epochs=8)
    with pytest.raises(SplitError, match="strictly increasing"):
        blocked_kfold(ei[::-1], lab)


# --------------------------------------------------------------------------------------------------
# chronological and random
# --------------------------------------------------------------------------------------------------


def test_chronological_order_and_gaps():
    rng = np.random.default_rng(5)
    for c in (0, 2, 4):
        epoch_index, label = _night(rng, 300)
        cs = chronological(epoch_index, label, context_epochs=c)
        _check_client_split(cs, epoch_index, label, c)
        assert epoch_index[cs.train].max() < epoch_index[cs.val].min() < epoch_index[cs.test].min()
        m = int(np.sum(label >= 0))
        assert abs(len(cs.test) - (m - round(0.7 * m) - round(0.15 * m))) == 0
        assert cs.test[-1] == np.flatnonzero(label >= 0)[-1]


def test_random_epochs_covers_labelled_and_is_seeded(caplog):
    rng = np.random.default_rng(0)
    _, label = _night(rng, 200)
    with caplog.at_level(logging.WARNING, logger="fm_bio.data.splits"):
        a = random_epochs(label, seed=3)
    assert "leak" in caplog.text
    b = random_epochs(label, seed=3)
    c = random_epochs(label, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.as_dict().values(), b.as_dict().values(), strict=True))
    assert not np.array_equal(a.test, c.test)
    allrows = np.concatenate([a.train, a.val, a.test])
    assert sorted(allrows.tolist()) == np.flatnonzero(label >= 0).tolist()
    assert "LEAKS" in random_epochs.__doc__


# --------------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------------


def test_client_split_dispatch():
    rng = np.random.default_rng(1)
    epoch_index, label = _night(rng, 200)
    a = client_split("blocked_kfold", epoch_index, label, fold=2, context_epochs=1)
    b = blocked_kfold(epoch_index, label, fold=2, context_epochs=1)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.train, b.train)
    c = client_split("random_epochs", epoch_index, label, seed=1)
    assert np.array_equal(c.test, random_epochs(label, seed=1).test)
    d = client_split("chronological", epoch_index, label, train_fraction=0.6)
    assert d.sizes()["train"] > 0
    with pytest.raises(ValueError, match=r"options: \['blocked_kfold', 'chronological', 'random_epochs'\]"):
        client_split("kfold", epoch_index, label)
    with pytest.raises(ValueError, match="accepts"):
        client_split("random_epochs", epoch_index, label, context_epochs=2)
    assert "context_epochs" in splits.scheme_parameters("blocked_kfold")
