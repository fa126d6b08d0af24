"""Subject-level and per-client (within one night) splits. Pure numpy, deterministic by seed.

Two levels:

- :func:`split_subjects` partitions subjects into train / val / test for pretraining (a subject is in
  one split only) and keeps ``holdout`` subjects (the clients of personalisation) out of all three.
- :func:`client_split` splits ONE subject's cached rows (its night) into train / val / test row
  indices with one of the schemes in :data:`CLIENT_SPLITS`:

  ``blocked_kfold`` (default)
      the night cut into ``n_folds`` contiguous time blocks; one block is the test set; a gap of
      ``gap_epochs`` (default ``context_epochs``) epochs separates the test block from train/val.
  ``chronological``
      first 70 % train, next 15 % val, last 15 % test, with gaps between.
  ``random_epochs``
      the prototype's random 30-s epoch split. It LEAKS; use it only to compare with the prototype.

All per-client schemes work on two arrays of the subject's cache: ``epoch_index`` (the epoch's
position in the night, increasing, with holes where quality control dropped epochs) and ``label``
(class index, ``-1`` = masked). Only labelled rows (``label >= 0``) are placed in a split; masked rows
are never a train/val/test centre epoch (they still serve as context). Distances and gaps are
measured in ``epoch_index`` (time), never in row positions.

Gap semantics: a train/val epoch ``e`` is kept only when ``|e - t| > gap`` for every test epoch ``t``
(and a train epoch likewise against every val epoch). With ``gap = context_epochs = c`` the context
window ``[e - c, e + c]`` of a training sample never contains a test epoch. For input windows that are
fully disjoint (a train window and a test window share no epoch at all, not even an unlabelled
boundary epoch) pass ``gap_epochs = 2 * context_epochs``.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "CLIENT_SPLITS",
    "ClientSplit",
    "SplitError",
    "SubjectSplit",
    "blocked_kfold",
    "chronological",
    "client_split",
    "random_epochs",
    "scheme_parameters",
    "split_subjects",
]


class SplitError(ValueError):
    """A split cannot be made as asked (too few subjects/epochs, bad fractions); the message says why."""


# --------------------------------------------------------------------------------------------------
# Subject level
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectSplit:
    """Disjoint subject lists (each sorted). ``holdout`` subjects are in none of train/val/test."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    holdout: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        """Plain ``{split name: [subjects]}`` (for logging / JSON)."""
        return {
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
            "holdout": list(self.holdout),
        }


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise SplitError(f"{name}={value} is outside [0, 1); pass a fraction such as 0.15")
    return value


def split_subjects(
    subjects: Iterable[str],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    holdout: Iterable[str] = (),
) -> SubjectSplit:
    """Split subjects into disjoint train / val / test sets, deterministically by ``seed``.

    Parameters
    ----------
    subjects : subject ids (duplicates are an error). The input order does not matter.
    val_fraction, test_fraction : fractions of the non-holdout subjects; each non-zero fraction gets at
        least one subject, and at least one subject always remains for training.
    seed : the same seed and subjects give the same split.
    holdout : subjects kept out of train/val/test (e.g. personalisation clients). Ids not in
        ``subjects`` are ignored with a warning.

    Returns
    -------
    SubjectSplit with sorted tuples.
    """
    subjects = [str(s) for s in subjects]
    dupes = sorted(s for s, k in Counter(subjects).items() if k > 1)
    if dupes:
        raise SplitError(f"duplicate subject ids {dupes}; each subject must appear once")
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise SplitError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training subjects; "
            f"make their sum < 1"
        )
    holdout_set = {str(s) for s in holdout}
    unknown = sorted(holdout_set - set(subjects))
    if unknown:
        log.warning("holdout subjects %s are not among the %d subjects; ignored", unknown, len(subjects))
    pool = sorted(set(subjects) - holdout_set)
    n = len(pool)
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise SplitError(
            f"too few subjects: {n} (after removing {len(holdout_set & set(subjects))} holdout) cannot give "
            f"{n_val} val + {n_test} test + >= 1 train subject; add subjects, shrink holdout or set "
            f"val_fraction/test_fraction to 0"
        )
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [pool[i] for i in order]
    val = tuple(sorted(shuffled[:n_val]))
    test = tuple(sorted(shuffled[n_val : n_val + n_test]))
    train = tuple(sorted(shuffled[n_val + n_test :]))
    return SubjectSplit(train=train, val=val, test=test, holdout=tuple(sorted(holdout_set & set(subjects))))


# --------------------------------------------------------------------------------------------------
# Within one night
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSplit:
    """Row indices (int64, sorted) into one subject's cached arrays, one array per split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            object.__setattr__(self, name, np.sort(np.asarray(getattr(self, name), dtype=np.int64)))

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{"train": rows, "val": rows, "test": rows}``."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def sizes(self) -> dict[str, int]:
        """Number of rows per split."""
        return {k: int(len(v)) for k, v in self.as_dict().items()}


def _validate_night(epoch_index: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    epoch_index = np.asarray(epoch_index, dtype=np.int64)
    label = np.asarray(label)
    if epoch_index.ndim != 1 or label.ndim != 1 or len(epoch_index) != len(label):
        raise SplitError(
            f"epoch_index {epoch_index.shape} and label {label.shape} must be 1-D arrays of one length "
            f"(one row per cached epoch)"
        )
    if len(epoch_index) > 1 and np.any(np.diff(epoch_index) <= 0):
        raise SplitError("epoch_index must be strictly increasing (the cache stores epochs in time order)")
    return epoch_index, label


def _resolve_gap(context_epochs: int, gap_epochs: int | None) -> int:
    if context_epochs < 0:
        raise SplitError(f"context_epochs={context_epochs} must be >= 0")
    gap = context_epochs if gap_epochs is None else int(gap_epochs)
    if gap < 0:
        raise SplitError(f"gap_epochs={gap_epochs} must be >= 0 (or None for gap = context_epochs)")
    return gap


def _far_from(epochs: np.ndarray, ref_sorted: np.ndarray, gap: int) -> np.ndarray:
    """Boolean: ``|e - r| > gap`` for every ``r`` in ``ref_sorted`` (True when ``ref_sorted`` is empty)."""
    if len(ref_sorted) == 0:
        return np.ones(len(epochs), dtype=bool)
    pos = np.searchsorted(ref_sorted, epochs)
    left = ref_sorted[np.clip(pos - 1, 0, len(ref_sorted) - 1)]
    right = ref_sorted[np.clip(pos, 0, len(ref_sorted) - 1)]
    dist = np.minimum(np.abs(epochs - left), np.abs(epochs - right))
    return dist > gap


def _n_from_fraction(fraction: float, m: int) -> int:
    return max(1, round(fraction * m)) if fraction > 0 else 0


def blocked_kfold(
    epoch_index: np.ndarray,
    label: np.ndarray,
    n_folds: int = 5,
    fold: int = 0,
    context_epochs: int = 0,
    gap_epochs: int | None = None,
    val_fraction: float = 0.15,
) -> ClientSplit:
    """Blocked k-fold over one night (the default per-client scheme).

    The labelled epochs, in time order, are cut into ``n_folds`` contiguous blocks of (nearly) equal
    size; block ``fold`` is the test set. Train/val epochs within ``gap`` epochs (``gap_epochs``, or
    ``context_epochs`` when None; measured in ``epoch_index``) of any test epoch are dropped. Validation
    is the contiguous run of ~``val_fraction`` of the labelled epochs that follows the test block
    (wrapping round to the start of the night), separated from train by the same gap. Over folds
    ``0 .. n_folds-1`` every labelled epoch is a test epoch exactly once.

    Parameters
    ----------
    epoch_index : int [n], strictly increasing epoch positions of the cached rows.
    label : int [n], class index or -1 (masked; never placed in a split).
    n_folds, fold : number of blocks and which one is the test set (``0 <= fold < n_folds``).
    context_epochs, gap_epochs : see the module docstring for the gap semantics.
    val_fraction : fraction of the labelled epochs used for validation (0 for no validation set).

    Returns
    -------
    ClientSplit of row indices.
    """
    epoch_index, label = _validate_night(epoch_index, label)
    gap = _resolve_gap(context_epochs, gap_epochs)
    n_folds, fold = int(n_folds), int(fold)
    if n_folds < 2:
        raise SplitError(f"n_folds={n_folds} must be >= 2")
    if not 0 <= fold < n_folds:
        raise SplitError(f"fold={fold} is out of range for n_folds={n_folds}; use 0 .. {n_folds - 1}")
    val_fraction = _check_fraction("val_fraction", val_fraction)
    rows = np.flatnonzero(label >= 0)
    m = len(rows)
    if m < n_folds:
        raise SplitError(
            f"only {m} labelled epochs in this night, fewer than n_folds={n_folds}; lower n_folds"
        )
    blocks = np.array_split(np.arange(m), n_folds)
    start, stop = int(blocks[fold][0]), int(blocks[fold][-1]) + 1
    test = rows[start:stop]
    test_e = epoch_index[test]
    # Candidates for train/val, in cyclic order starting right after the test block.
    after, before = rows[stop:], rows[:start]
    cyclic = np.concatenate([after, before])
    cyclic = cyclic[_far_from(epoch_index[cyclic], test_e, gap)]
    n_val = _n_from_fraction(val_fraction, m)
    val = cyclic[:n_val]
    rest = cyclic[n_val:]
    train = rest[_far_from(epoch_index[rest], np.sort(epoch_index[val]), gap)]
    if len(train) == 0:
        raise SplitError(
            f"blocked_kfold leaves no training epochs ({m} labelled epochs, n_folds={n_folds}, gap={gap}, "
            f"val_fraction={val_fraction}); lower n_folds, gap_epochs/context_epochs or val_fraction"
        )
    if val_fraction > 0 and len(val) == 0:
        raise SplitError(f"blocked_kfold leaves no validation epochs (gap={gap}); lower the gap or n_folds")
    return ClientSplit(train=train, val=val, test=test)


def chronological(
    epoch_index: np.ndarray,
    label: np.ndarray,
    train_fraction: float = 0.7,
    val_fraction: float = 0.15,
    context_epochs: int = 0,
    gap_epochs: int | None = None,
) -> ClientSplit:
    """Chronological split of one night: the first ``train_fraction`` of the labelled epochs train,
    the next ``val_fraction`` validate, the rest test.

    Gaps (``gap_epochs``, or ``context_epochs`` when None, in ``epoch_index``) are cut from the end of
    the earlier split: val epochs near the test block and train epochs near val/test are dropped; the
    test block stays whole. Note the class mix differs between the start and the end of a night (deep
    sleep early, REM late): prefer :func:`blocked_kfold` for evaluation.

    Returns
    -------
    ClientSplit of row indices.
    """
    epoch_index, label = _validate_night(epoch_index, label)
    gap = _resolve_gap(context_epochs, gap_epochs)
    train_fraction = _check_fraction("train_fraction", train_fraction)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    if train_fraction + val_fraction >= 1.0 or train_fraction <= 0:
        raise SplitError(
            f"train_fraction={train_fraction} + val_fraction={val_fraction} must be < 1 with train_fraction > 0 "
            f"(the rest is the test set)"
        )
    rows = np.flatnonzero(label >= 0)
    m = len(rows)
    n_train = round(train_fraction * m)
    n_val = _n_from_fraction(val_fraction, m)
    if m - n_train - n_val < 1 or n_train < 1:
        raise SplitError(f"only {m} labelled epochs: too few for a chronological split; lower the fractions")
    train, val, test = rows[:n_train], rows[n_train : n_train + n_val], rows[n_train + n_val :]
    test_e = epoch_index[test]
    val = val[_far_from(epoch_index[val], test_e, gap)]
    later = np.sort(np.concatenate([epoch_index[val], test_e]))
    train = train[_far_from(epoch_index[train], later, gap)]
    if len(train) == 0 or (val_fraction > 0 and len(val) == 0):
        raise SplitError(
            f"chronological split with gap={gap} leaves {len(train)} train and {len(val)} val epochs out of "
            f"{m}; lower gap_epochs/context_epochs"
        )
    return ClientSplit(train=train, val=val, test=test)


def random_epochs(
    label: np.ndarray,
    train_fraction: float = 0.7,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> ClientSplit:
    """The prototype's split: labelled 30-s epochs assigned to train/val/test at random.

    WARNING: this split LEAKS. Neighbouring epochs are nearly identical (slowly varying heart rate
    and activity), so a test epoch almost always has a copy-like neighbour in training, and with
    ``context_epochs > 0`` train and test context windows overlap outright (the model sees the test
    epochs' signals during training). Scores are inflated. It is offered ONLY to reproduce and compare
    with the prototype; use :func:`blocked_kfold` for any reported result.

    Returns
    -------
    ClientSplit of row indices.
    """
    label = np.asarray(label)
    train_fraction = _check_fraction("train_fraction", train_fraction)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    if train_fraction + val_fraction >= 1.0 or train_fraction <= 0:
        raise SplitError(
            f"train_fraction={train_fraction} + val_fraction={val_fraction} must be < 1, train > 0"
        )
    rows = np.flatnonzero(label >= 0)
    m = len(rows)
    n_train = round(train_fraction * m)
    n_val = _n_from_fraction(val_fraction, m)
    if m - n_train - n_val < 1 or n_train < 1:
        raise SplitError(f"only {m} labelled epochs: too few for a random split; lower the fractions")
    log.warning("random_epochs split: neighbouring epochs leak between train and test; compare-only scheme")
    perm = rows[np.random.default_rng(seed).permutation(m)]
    return ClientSplit(
        train=perm[:n_train], val=perm[n_train : n_train + n_val], test=perm[n_train + n_val :]
    )


CLIENT_SPLITS: Mapping[str, Callable[..., ClientSplit]] = {
    "blocked_kfold": blocked_kfold,
    "chronological": chronological,
    "random_epochs": random_epochs,
}
"""Per-client split schemes by name."""


def scheme_parameters(scheme: str) -> list[str]:
    """Keyword parameters a scheme accepts (beyond ``epoch_index`` and ``label``)."""
    fn = _get_scheme(scheme)
    return [p for p in inspect.signature(fn).parameters if p not in ("epoch_index", "label")]


def _get_scheme(scheme: str) -> Callable[..., ClientSplit]:
    try:
        return CLIENT_SPLITS[scheme]
    except KeyError:
        raise ValueError(f"unknown split scheme {scheme!r}; options: {sorted(CLIENT_SPLITS)}") from None


def client_split(scheme: str, epoch_index: np.ndarray, label: np.ndarray, **params) -> ClientSplit:
    """Split one subject's night with the named scheme (see :data:`CLIENT_SPLITS`).

    Parameters
    ----------
    scheme : ``"blocked_kfold"``, ``"chronological"`` or ``"random_epochs"``.
    epoch_index, label : the subject's cached ``epoch_index`` and ``label`` arrays.
    **params : the scheme's keyword parameters; an unknown one is an error listing the accepted ones.
    """
    fn = _get_scheme(scheme)
    accepted = scheme_parameters(scheme)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"split scheme {scheme!r} got unknown parameters {unknown}; it accepts {accepted}")
    if "epoch_index" in inspect.signature(fn).parameters:
        return fn(epoch_index, label, **params)
    return fn(label, **params)
