"""Torch datasets over the preprocessed cache: 30-s epochs with a context window of neighbours in time.

Item format (one sample; ``L = 2 * context_epochs + 1``, ALWAYS present, ``L = 1`` without context):

==================== ============= ===============================================================
key                  dtype / shape meaning
==================== ============= ===============================================================
``<modality>``       float32 [L,T] the window of epochs ``e - c .. e + c`` (``T`` = samples per epoch:
                                   ecg 7680, hr 30, activity 1); zeros where a neighbour is missing
``label``            int64 []      class of the centre epoch (-1 only when ``labelled_only=False``)
``label_context``    int64 [L]     class of every epoch in the window (-1: masked or missing)
``context_mask``     bool [L]      True where the epoch is present in the cache, False where it was
                                   zero-filled (dropped by quality control or outside the night)
``modality_present`` bool [M]      per modality (order of ``dataset.modalities``): False when the
                                   subject lacks it and ``missing_modality="zeros"`` filled zeros
``subject``          int64 []      index into ``dataset.subjects``
``epoch_index``      int64 []      the centre epoch's position in the night
``row``              int64 []      the centre epoch's row in the subject's cache arrays
==================== ============= ===============================================================

Neighbours are found by TIME (``epoch_index``), not by row: when quality control dropped epoch
``e + k`` the window slot is zero-filled and ``context_mask`` is False there, even though row
``r + k`` exists. The window may use any cached epoch of the subject (also masked ones and ones of
another split: a split's gap keeps test epochs out of training windows, see ``splits``).

Batches: :meth:`EpochDataset.__getitems__` returns an already-collated batch (one vectorised gather
per subject and modality from memory-mapped arrays); give the DataLoader
``collate_fn=collate_prebatched``. Arrays are memory-mapped lazily in each process (worker), never
held in memory as a whole and never pickled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from fm_bio.data import cache
from fm_bio.data.labels import CLASS_NAMES, MASKED

log = logging.getLogger(__name__)

__all__ = [
    "ConsecutiveEpochSampler",
    "EpochDataset",
    "MISSING_MODALITY_OPTIONS",
    "ModalityError",
    "collate_prebatched",
]

MISSING_MODALITY_OPTIONS = ("error", "zeros")
"""What :class:`EpochDataset` does when a subject lacks a requested modality."""

Selections = Sequence[tuple[str, Any]] | Mapping[str, Any]


class ModalityError(ValueError):
    """A requested modality is unknown or missing for a subject; the message names the fix."""


class _PrebatchedBatch(dict):
    """A batch dict made by ``__getitems__``; indexing it with an int explains the missing collate_fn."""

    def __missing__(self, key: Any) -> Any:
        if isinstance(key, int):
            raise TypeError(
                "this batch was already collated by EpochDataset.__getitems__; pass "
                "collate_fn=fm_bio.data.datasets.collate_prebatched to the DataLoader"
            )
        raise KeyError(key)


def collate_prebatched(batch: Any) -> Any:
    """DataLoader ``collate_fn`` for :class:`EpochDataset`: returns a prebatched dict unchanged
    (as a plain dict) and falls back to torch's ``default_collate`` for a list of samples."""
    if isinstance(batch, dict):
        return dict(batch)
    return default_collate(batch)


def _subject_modalities(entry: Mapping[str, Any]) -> list[str]:
    if "modalities" in entry:
        return [str(m) for m in entry["modalities"]]
    files = entry.get("files", {})
    return [m for m, stem in cache.MODALITY_FILES.items() if stem in files]


class EpochDataset(Dataset):
    """Samples = (subject, cached row) pairs; each item is a window of epochs around that row.

    Parameters
    ----------
    cache_root : the preprocessed cache (see :mod:`fm_bio.data.cache`).
    selections : ``[(subject, rows), ...]`` or ``{subject: rows}``; ``rows`` are row indices into the
        subject's cached arrays, or None for all rows.
    modalities : any of ``cache.MODALITY_FILES`` (``ecg``, ``hr``, ``activity``).
    context_epochs : ``c``; items hold ``2c + 1`` epochs centred on the sample.
    labelled_only : keep only rows whose label is >= 0 as centre samples (supervised use); False
        keeps every selected row (self-supervised pretraining).
    missing_modality : ``"error"`` (a subject lacking a requested modality is an error) or ``"zeros"``
        (zeros and ``modality_present`` False for that subject).
    subjects : optional ordered subject vocabulary; ``item["subject"]`` indexes it. Defaults to the
        subjects of ``selections`` in their order. Use one vocabulary for train/val/test datasets so
        the indices agree.
    """

    def __init__(
        self,
        cache_root: str | Path,
        selections: Selections,
        modalities: Sequence[str] = ("hr",),
        context_epochs: int = 0,
        labelled_only: bool = True,
        missing_modality: str = "error",
        subjects: Sequence[str] | None = None,
    ) -> None:
        self.cache_root = Path(cache_root)
        self.modalities = tuple(str(m) for m in modalities)
        self.context_epochs = int(context_epochs)
        self.labelled_only = bool(labelled_only)
        self.missing_modality = str(missing_modality)
        if self.context_epochs < 0:
            raise ValueError(f"context_epochs={context_epochs} must be >= 0")
        if not self.modalities:
            raise ModalityError(f"no modalities requested; pick from {sorted(cache.MODALITY_FILES)}")
        unknown = [m for m in self.modalities if m not in cache.MODALITY_FILES]
        if unknown or len(set(self.modalities)) != len(self.modalities):
            raise ModalityError(
                f"modalities {list(self.modalities)}: unknown or repeated {unknown or 'entries'}; "
                f"options: {sorted(cache.MODALITY_FILES)}"
            )
        if self.missing_modality not in MISSING_MODALITY_OPTIONS:
            raise ValueError(
                f"missing_modality={missing_modality!r}; options: {list(MISSING_MODALITY_OPTIONS)}"
            )

        items = list(selections.items()) if isinstance(selections, Mapping) else list(selections)
        sel_subjects = [str(s) for s, _ in items]
        if len(set(sel_subjects)) != len(sel_subjects):
            raise ValueError(f"a subject appears twice in selections {sel_subjects}; merge its rows")
        self.subjects: list[str] = list(subjects) if subjects is not None else sel_subjects
        vocab = {s: i for i, s in enumerate(self.subjects)}
        missing = [s for s in sel_subjects if s not in vocab]
        if missing:
            raise ValueError(
                f"selected subjects {missing} are not in the subjects vocabulary {self.subjects}"
            )

        # Per subject (by vocabulary index): in-memory label / epoch_index / epoch->row map.
        self._label: dict[int, np.ndarray] = {}
        self._epoch: dict[int, np.ndarray] = {}
        self._row_of_epoch: dict[int, np.ndarray] = {}
        self._has: dict[int, tuple[bool, ...]] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        sample_subject, sample_row, sample_epoch, sample_label = [], [], [], []
        for subject, rows in items:
            subject = str(subject)
            si = vocab[subject]
            meta = cache.read_subject_meta(self.cache_root, subject)
            if meta is None:
                raise cache.CacheError(
                    f"subject {subject!r} is not in the cache at {self.cache_root}; re-run task=preprocess"
                )
            has_list = _subject_modalities(meta)
            has = tuple(m in has_list for m in self.modalities)
            if not all(has) and self.missing_modality == "error":
                lacking = [m for m, h in zip(self.modalities, has, strict=True) if not h]
                raise ModalityError(
                    f"subject {subject!r} has no {lacking} data (it has {has_list}) in {self.cache_root}. "
                    f"Drop {lacking} from modalities, restrict the subjects to those that have it "
                    f"(holdout / client), or pass missing_modality='zeros' to fill zeros and flag them "
                    f"in modality_present"
                )
            for m, h in zip(self.modalities, has, strict=True):
                if not h:
                    continue
                info = meta.get("files", {}).get(cache.MODALITY_FILES[m])
                if info is None:
                    raise cache.CacheError(
                        f"subject {subject!r} lists modality {m!r} but has no {cache.MODALITY_FILES[m]}.npy "
                        f"in {self.cache_root / subject}; re-run task=preprocess"
                    )
                shape = tuple(int(x) for x in info["shape"][1:])
                if m in shapes and shapes[m] != shape:
                    raise cache.CacheError(
                        f"modality {m!r} has per-epoch shape {shape} for subject {subject!r} but {shapes[m]} "
                        f"for others in {self.cache_root}; rebuild the cache with one configuration"
                    )
                shapes[m] = shape
            idx_arrays = cache.open_subject(self.cache_root, subject, ["label", "epoch_index"], mmap=False)
            label = np.asarray(idx_arrays["label"], dtype=np.int8)
            epoch = np.asarray(idx_arrays["epoch_index"], dtype=np.int64)
            if len(epoch) > 1 and np.any(np.diff(epoch) <= 0):
                raise cache.CacheError(
                    f"subject {subject!r}: epoch_index is not strictly increasing in {self.cache_root}; "
                    f"rebuild the cache"
                )
            n = len(label)
            row_of_epoch = np.full(int(epoch[-1]) + 1 if n else 0, -1, dtype=np.int32)
            row_of_epoch[epoch] = np.arange(n, dtype=np.int32)
            self._label[si], self._epoch[si], self._row_of_epoch[si], self._has[si] = (
                label,
                epoch,
                row_of_epoch,
                has,
            )
            rows = (
                np.arange(n, dtype=np.int64) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
            )
            if len(rows) and (rows[0] < 0 or rows[-1] >= n):
                raise IndexError(f"subject {subject!r}: row indices outside 0..{n - 1} in the selection")
            if self.labelled_only:
                rows = rows[label[rows] >= 0]
            sample_subject.append(np.full(len(rows), si, dtype=np.int64))
            sample_row.append(rows)
            sample_epoch.append(epoch[rows])
            sample_label.append(label[rows].astype(np.int64))
        for m in self.modalities:
            if m not in shapes and items and self.missing_modality == "zeros":
                shape = self._shape_from_other_subjects(m)
                if shape is not None:
                    shapes[m] = shape
            if m not in shapes:
                raise ModalityError(
                    f"none of the selected subjects has modality {m!r}; drop it from modalities or select "
                    f"subjects that have it"
                )
        self._shapes = {m: shapes[m] for m in self.modalities}
        self._sample_subject = np.concatenate(sample_subject) if sample_subject else np.zeros(0, np.int64)
        self._sample_row = np.concatenate(sample_row) if sample_row else np.zeros(0, np.int64)
        self._sample_epoch = np.concatenate(sample_epoch) if sample_epoch else np.zeros(0, np.int64)
        self._sample_label = np.concatenate(sample_label) if sample_label else np.zeros(0, np.int64)
        self._offsets = np.arange(-self.context_epochs, self.context_epochs + 1, dtype=np.int64)
        self._arrays: dict[int, dict[str, np.ndarray]] = {}
        self._arrays_pid: int | None = None

    def _shape_from_other_subjects(self, modality: str) -> tuple[int, ...] | None:
        """Per-epoch shape of ``modality`` from any subject of the cache (for zero-filling a selection
        in which no subject has it)."""
        try:
            entries = cache.load_manifest(self.cache_root).get("subjects", {})
        except cache.CacheError:
            return None
        stem = cache.MODALITY_FILES[modality]
        for entry in entries.values():
            info = entry.get("files", {}).get(stem)
            if info is not None:
                return tuple(int(x) for x in info["shape"][1:])
        return None

    # ------------------------------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        """``L = 2 * context_epochs + 1``."""
        return 2 * self.context_epochs + 1

    @property
    def modality_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-item shape of each modality, e.g. ``{"hr": (L, 30)}``."""
        return {m: (self.context_length, *s) for m, s in self._shapes.items()}

    @property
    def sample_subject(self) -> np.ndarray:
        """int64 [N]: subject index (into ``subjects``) of every sample."""
        return self._sample_subject

    @property
    def sample_row(self) -> np.ndarray:
        """int64 [N]: cache row of every sample within its subject."""
        return self._sample_row

    @property
    def sample_epoch_index(self) -> np.ndarray:
        """int64 [N]: epoch_index of every sample."""
        return self._sample_epoch

    @property
    def sample_label(self) -> np.ndarray:
        """int64 [N]: centre label of every sample (-1 = masked)."""
        return self._sample_label

    def class_counts(self) -> np.ndarray:
        """int64 [n_classes]: number of samples per class (masked centres not counted)."""
        lab = self.sample_label
        return np.bincount(lab[lab >= 0], minlength=len(CLASS_NAMES)).astype(np.int64)

    def __len__(self) -> int:
        return int(len(self._sample_row))

    def __repr__(self) -> str:
        return (
            f"EpochDataset({len(self)} samples, {len(np.unique(self._sample_subject))} subjects, "
            f"modalities={list(self.modalities)}, context_epochs={self.context_epochs}, "
            f"labelled_only={self.labelled_only})"
        )

    # ------------------------------------------------------------------------------------------
    # Lazy memory maps (per process)
    # ------------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        state["_arrays_pid"] = None
        return state

    def _subject_arrays(self, si: int) -> dict[str, np.ndarray]:
        pid = os.getpid()
        if self._arrays_pid != pid:  # first use in this process (e.g. a fresh DataLoader worker)
            self._arrays = {}
            self._arrays_pid = pid
        arrays = self._arrays.get(si)
        if arrays is None:
            names = [
                cache.MODALITY_FILES[m] for m, h in zip(self.modalities, self._has[si], strict=True) if h
            ]
            opened = cache.open_subject(self.cache_root, self.subjects[si], names, mmap=True)
            arrays = {
                m: opened[cache.MODALITY_FILES[m]]
                for m, h in zip(self.modalities, self._has[si], strict=True)
                if h
            }
            self._arrays[si] = arrays
        return arrays

    # ------------------------------------------------------------------------------------------
    # Access
    # ------------------------------------------------------------------------------------------

    def _gather(self, indices: Any) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"sample index out of range for a dataset of {n} samples")
        idx = np.where(idx < 0, idx + n, idx)
        B, L = len(idx), self.context_length
        subj = self._sample_subject[idx]
        rows = self._sample_row[idx]
        out_sig = {m: np.zeros((B, L, *self._shapes[m]), dtype=np.float32) for m in self.modalities}
        label_ctx = np.full((B, L), MASKED, dtype=np.int64)
        ctx_mask = np.zeros((B, L), dtype=bool)
        present = np.ones((B, len(self.modalities)), dtype=bool)
        centre_epoch = np.empty(B, dtype=np.int64)
        centre_label = np.empty(B, dtype=np.int64)

        order = np.argsort(subj, kind="stable")
        uniq_subj, starts = np.unique(subj[order], return_index=True)
        bounds = np.append(starts, B)
        for k, si in enumerate(uniq_subj.tolist()):
            pos = order[bounds[k] : bounds[k + 1]]
            r = rows[pos]
            epoch, lab, row_of_epoch = self._epoch[si], self._label[si], self._row_of_epoch[si]
            e = epoch[r]
            centre_epoch[pos] = e
            centre_label[pos] = lab[r]
            if L == 1:
                nb = r[:, None]
            else:
                nbe = e[:, None] + self._offsets
                inside = (nbe >= 0) & (nbe < len(row_of_epoch))
                nb = np.full(nbe.shape, -1, dtype=np.int64)
                nb[inside] = row_of_epoch[nbe[inside]]
            valid = nb >= 0
            bi = np.broadcast_to(pos[:, None], nb.shape)[valid]
            li = np.broadcast_to(np.arange(L), nb.shape)[valid]
            flat = nb[valid]
            label_ctx[bi, li] = lab[flat]
            ctx_mask[bi, li] = True
            read_order = np.argsort(flat, kind="stable")  # read the memmap in file order
            flat, bi, li = flat[read_order], bi[read_order], li[read_order]
            arrays = self._subject_arrays(si)
            for mi, m in enumerate(self.modalities):
                arr = arrays.get(m)
                if arr is None:
                    present[pos, mi] = False
                    continue
                out_sig[m][bi, li] = arr[flat]

        batch = _PrebatchedBatch({m: torch.from_numpy(out_sig[m]) for m in self.modalities})
        batch["label"] = torch.from_numpy(centre_label)
        batch["label_context"] = torch.from_numpy(label_ctx)
        batch["context_mask"] = torch.from_numpy(ctx_mask)
        batch["modality_present"] = torch.from_numpy(present)
        batch["subject"] = torch.from_numpy(subj.copy())
        batch["epoch_index"] = torch.from_numpy(centre_epoch)
        batch["row"] = torch.from_numpy(rows.copy())
        return batch

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A collated batch (dict of tensors with a leading batch dimension) for ``indices``."""
        return self._gather(indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One sample (see the module docstring for the keys and shapes)."""
        batch = self._gather([int(index)])
        return {k: v[0] for k, v in batch.items()}


def _world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ConsecutiveEpochSampler(Sampler[list[int]]):
    """Batch sampler yielding runs of ``seq_len`` consecutive epochs (by ``epoch_index``) of one night.

    Each dataset subject's samples are cut into maximal runs of consecutive epoch indices (a run
    breaks where QC dropped an epoch or, with ``labelled_only``, at a masked epoch); every run is cut
    into windows of ``seq_len`` samples, starting every ``stride`` samples (default ``seq_len``: no
    overlap); shorter run ends are skipped. A batch is ``runs_per_batch`` windows, flattened
    window-major: reshape the batch to ``[runs_per_batch, seq_len, ...]``.

    Parameters
    ----------
    dataset : the :class:`EpochDataset` to sample from.
    seq_len : epochs per window (>= 1).
    runs_per_batch : windows per batch.
    shuffle, seed : shuffle the windows each epoch (seeded by ``seed`` + the epoch set by
        :meth:`set_epoch`, so the order is repeatable).
    stride : start-to-start distance of windows within a run.
    drop_last : drop a final batch with fewer than ``runs_per_batch`` windows.

    Under DDP (an initialised ``torch.distributed`` process group) each rank takes every ``world_size``-th
    window of the shuffled order, all ranks the same number (the remainder is left out that epoch), so
    ranks see disjoint data and take the same number of steps.
    """

    def __init__(
        self,
        dataset: EpochDataset,
        seq_len: int,
        runs_per_batch: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        stride: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if seq_len < 1 or runs_per_batch < 1:
            raise ValueError(f"seq_len={seq_len} and runs_per_batch={runs_per_batch} must be >= 1")
        self.seq_len, self.runs_per_batch = int(seq_len), int(runs_per_batch)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.stride = int(stride) if stride is not None else self.seq_len
        if self.stride < 1:
            raise ValueError(f"stride={stride} must be >= 1")
        self.epoch = 0
        subj = dataset.sample_subject
        ep = dataset.sample_epoch_index
        order = np.lexsort((ep, subj))
        s, e = subj[order], ep[order]
        brk = np.ones(len(order), dtype=bool)
        if len(order) > 1:
            brk[1:] = (s[1:] != s[:-1]) | (e[1:] != e[:-1] + 1)
        run_starts = np.flatnonzero(brk)
        run_ends = np.append(run_starts[1:], len(order))
        windows = [
            order[a + off : a + off + self.seq_len]
            for a, b in zip(run_starts.tolist(), run_ends.tolist(), strict=True)
            for off in range(0, b - a - self.seq_len + 1, self.stride)
        ]
        self.windows = np.stack(windows) if windows else np.zeros((0, self.seq_len), dtype=np.int64)
        if len(self.windows) == 0:
            log.warning(
                "ConsecutiveEpochSampler: no run of %d consecutive epochs in the dataset", self.seq_len
            )

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used to seed the shuffle."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.windows) // _world()[1]
        return n // self.runs_per_batch if self.drop_last else -(-n // self.runs_per_batch)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.windows)
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        )
        rank, world = _world()
        if world > 1:
            order = order[rank : (n // world) * world : world]
        for k in range(len(self)):
            sel = order[k * self.runs_per_batch : (k + 1) * self.runs_per_batch]
            yield self.windows[sel].reshape(-1).tolist()
