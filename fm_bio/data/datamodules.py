"""Lightning DataModules over the preprocessed cache.

Two modes:

- ``client=None`` (pretraining / population models): the cache's subjects are split into disjoint
  train / val / test subjects (:func:`fm_bio.data.splits.split_subjects`, parameters in ``subjects``:
  ``val_fraction``, ``test_fraction``, ``holdout``); ``holdout`` subjects (future clients) are left out.
- ``client=<id>`` (personalisation): only that subject's night, split in time by a per-client scheme
  (``split``: ``{"scheme": "blocked_kfold", "n_folds": 5, "fold": 0, ...}``, see
  :func:`fm_bio.data.splits.client_split`). ``context_epochs`` is passed to the scheme unless
  ``split`` sets it, so the gap between test and train/val is at least the context half-width.

Constructor arguments are plain types (lists, dicts; OmegaConf containers are converted), so
``hydra.utils.instantiate`` with ``_target_: fm_bio.data.datamodules.MesaDataModule`` works.

Batches come from :class:`fm_bio.data.datasets.EpochDataset` (see its module docstring for the keys
and shapes); loaders use ``collate_prebatched``, a seeded generator (shuffles repeat by ``seed``),
seeded workers and ``persistent_workers`` when ``num_workers > 0``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from fm_bio.data import cache
from fm_bio.data.datasets import ConsecutiveEpochSampler, EpochDataset, ModalityError, collate_prebatched
from fm_bio.data.labels import CLASS_NAMES
from fm_bio.data.splits import SubjectSplit, client_split, scheme_parameters, split_subjects
from fm_bio.utils.config import to_plain

log = logging.getLogger(__name__)

__all__ = ["AppleWatchDataModule", "MesaDataModule", "SleepDataModule", "seed_worker"]

SPLITS = ("train", "val", "test")
MISSING_MODALITY_MODES = ("error", "zeros", "skip")
DEFAULT_SPLIT: Mapping[str, Any] = {"scheme": "blocked_kfold", "n_folds": 5, "fold": 0}
DEFAULT_SUBJECTS: Mapping[str, Any] = {"val_fraction": 0.15, "test_fraction": 0.15, "holdout": []}


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed (which the
    loader's seeded generator determines), so any randomness in workers repeats by seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _short_list(items: Sequence[str], limit: int = 20) -> str:
    items = list(items)
    if len(items) <= limit:
        return str(items)
    return f"{items[:limit]} ... ({len(items)} in all)"


class SleepDataModule(pl.LightningDataModule):
    """DataModule over one dataset's cache (see the module docstring for the two modes).

    Parameters
    ----------
    cache_root : the cache folder holding ``manifest.json``.
    modalities : any of ``ecg``, ``hr``, ``activity``; None -> the dataset's default.
    context_epochs : ``c``: each sample is a window of ``2c + 1`` epochs.
    batch_size, eval_batch_size : training / evaluation batch sizes (eval defaults to batch_size).
    num_workers, pin_memory, persistent_workers : DataLoader settings (persistent only with workers).
    seed : seeds the subject split, ``random_epochs`` and the training shuffle.
    client : None for the subject-level split, or a subject id (int or str, normalised with
        :meth:`normalise_subject_id`) for a per-client split of that subject's night.
    split : per-client scheme and its parameters, e.g. ``{"scheme": "blocked_kfold", "fold": 2}``.
    subjects : subject-level split parameters ``val_fraction``, ``test_fraction``, ``holdout``.
    labelled_only : only labelled epochs are samples (False for self-supervised pretraining; applies
        to the subject-level mode, a per-client split only holds labelled epochs).
    missing_modality : when a subject lacks a requested modality: ``"error"`` (default), ``"zeros"``
        (zero-filled, ``modality_present`` False) or ``"skip"`` (leave such subjects out).
    seq_len : when set, training batches are runs of ``seq_len`` consecutive epochs
        (:class:`ConsecutiveEpochSampler`, ``batch_size // seq_len`` runs per batch).
    drop_last : drop the last incomplete training batch.
    """

    dataset_name: ClassVar[str] = "generic"
    default_modalities: ClassVar[tuple[str, ...]] = ("hr",)

    def __init__(
        self,
        cache_root: str | Path,
        modalities: Sequence[str] | None = None,
        context_epochs: int = 0,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        seed: int = 0,
        client: int | str | None = None,
        split: Mapping[str, Any] | None = None,
        subjects: Mapping[str, Any] | None = None,
        labelled_only: bool = True,
        missing_modality: str = "error",
        seq_len: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.cache_root = Path(cache_root)
        modalities = to_plain(modalities)
        self.modalities = tuple(modalities) if modalities is not None else tuple(self.default_modalities)
        self.context_epochs = int(context_epochs)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size) if eval_batch_size is not None else self.batch_size
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.seed = int(seed)
        self.client = client
        split = dict(to_plain(split) or {})
        self.split_params = split if "scheme" in split else {**DEFAULT_SPLIT, **split}
        self.subject_params = {**DEFAULT_SUBJECTS, **(to_plain(subjects) or {})}
        unknown = sorted(set(self.subject_params) - set(DEFAULT_SUBJECTS))
        if unknown:
            raise ValueError(f"subjects: unknown keys {unknown}; accepted: {sorted(DEFAULT_SUBJECTS)}")
        self.labelled_only = bool(labelled_only)
        if missing_modality not in MISSING_MODALITY_MODES:
            raise ValueError(
                f"missing_modality={missing_modality!r}; options: {list(MISSING_MODALITY_MODES)}"
            )
        self.missing_modality = missing_modality
        self.seq_len = int(seq_len) if seq_len is not None else None
        self.drop_last = bool(drop_last)
        self._datasets: dict[str, EpochDataset | None] = {}
        self._subjects: list[str] = []
        self._client_subject: str | None = None
        self._subject_split: SubjectSplit | None = None

    # ------------------------------------------------------------------------------------------
    # Subject ids
    # ------------------------------------------------------------------------------------------

    @classmethod
    def normalise_subject_id(cls, subject: int | str) -> str:
        """The cache's spelling of a subject id (dataset-specific; the base class uses ``str``)."""
        return str(subject).strip()

    @classmethod
    def resolve_subject(cls, subject: int | str, available: Sequence[str]) -> str:
        """Map a user-given id to one of ``available``: its normalised spelling, or else the one
        numeric id of equal value (``7`` matches ``"0007"``). Unknown ids are an error listing options."""
        name = cls.normalise_subject_id(subject)
        if name in available:
            return name
        if name.isdigit():
            same = [s for s in available if s.isdigit() and int(s) == int(name)]
            if len(same) == 1:
                return same[0]
        raise ValueError(
            f"subject {subject!r} (normalised {name!r}) is not in the {cls.dataset_name} cache; "
            f"available subjects: {_short_list(sorted(available))}"
        )

    # ------------------------------------------------------------------------------------------
    # Setup
    # ------------------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest and build the train/val/test datasets.

        Idempotent: later calls (Lightning calls it per stage) reuse the datasets, so another fold or
        client needs a new DataModule."""
        if self._datasets:
            return
        manifest = cache.load_manifest(self.cache_root)
        entries: Mapping[str, dict] = manifest.get("subjects", {})
        available = sorted(entries)
        if not available:
            raise cache.CacheError(
                f"the cache at {self.cache_root} holds no subjects (failed: {_short_list(sorted(manifest.get('failed', {})))}); "
                f"re-run task=preprocess and check its log"
            )
        ds_missing = "zeros" if self.missing_modality == "zeros" else "error"
        if self.client is None:
            selections = self._setup_subject_split(entries, available)
        else:
            selections = self._setup_client(entries, available)
        for name in SPLITS:
            if not selections[name]:
                self._datasets[name] = None
                continue
            self._datasets[name] = EpochDataset(
                self.cache_root,
                selections[name],
                modalities=self.modalities,
                context_epochs=self.context_epochs,
                labelled_only=self.labelled_only,
                missing_modality=ds_missing,
                subjects=self._subjects,
            )
        if self._datasets["train"] is None or len(self._datasets["train"]) == 0:
            raise ValueError(
                f"the training split is empty ({self.split_summary()}); check the split settings"
            )
        log.info("data split: %s", self.split_summary())

    def _lacking(self, entry: Mapping[str, Any]) -> list[str]:
        has = entry.get("modalities")
        if has is None:
            has = [m for m, stem in cache.MODALITY_FILES.items() if stem in entry.get("files", {})]
        return [m for m in self.modalities if m not in has]

    def _setup_subject_split(self, entries: Mapping[str, dict], available: list[str]) -> dict[str, list]:
        holdout = []
        for h in self.subject_params.get("holdout") or []:
            try:
                holdout.append(self.resolve_subject(h, available))
            except ValueError:
                holdout.append(self.normalise_subject_id(h))  # split_subjects warns and ignores it
        pool = available
        lacking = {s: self._lacking(entries[s]) for s in available if s not in holdout}
        lacking = {s: m for s, m in lacking.items() if m}
        if lacking and self.missing_modality == "error":
            raise ModalityError(
                f"{len(lacking)} subjects of the {self.dataset_name} cache lack requested modalities "
                f"{sorted({m for v in lacking.values() for m in v})}: {_short_list(sorted(lacking))}. Drop the "
                f"modality (e.g. data.modalities=[hr]), restrict the subjects (data.subjects.holdout=[...]), or "
                f"set data.missing_modality=skip (leave them out) or zeros (zero-filled, flagged in modality_present)"
            )
        if lacking and self.missing_modality == "skip":
            log.warning(
                "missing_modality=skip: leaving out %d subjects that lack requested modalities: %s",
                len(lacking),
                _short_list([f"{s} (no {'/'.join(m)})" for s, m in sorted(lacking.items())]),
            )
            pool = [s for s in available if s not in lacking]
        split = split_subjects(
            pool,
            val_fraction=self.subject_params["val_fraction"],
            test_fraction=self.subject_params["test_fraction"],
            seed=self.seed,
            holdout=holdout,
        )
        self._subject_split = split
        self._subjects = sorted([*split.train, *split.val, *split.test])
        return {name: [(s, None) for s in getattr(split, name)] for name in SPLITS}

    def _setup_client(self, entries: Mapping[str, dict], available: list[str]) -> dict[str, list]:
        subject = self.resolve_subject(self.client, available)
        lacking = self._lacking(entries[subject])
        if lacking and self.missing_modality != "zeros":
            raise ModalityError(
                f"client {subject!r} has no {lacking} data (it has {entries[subject].get('modalities')}); drop "
                f"{lacking} from modalities, choose another client, or set missing_modality=zeros"
            )
        arrays = cache.open_subject(self.cache_root, subject, ["label", "epoch_index"], mmap=False)
        params = dict(self.split_params)
        scheme = params.pop("scheme")
        accepted = scheme_parameters(scheme)
        if "context_epochs" in accepted:
            params.setdefault("context_epochs", self.context_epochs)
        if "seed" in accepted:
            params.setdefault("seed", self.seed)
        parts = client_split(scheme, arrays["epoch_index"], arrays["label"], **params)
        self._client_subject = subject
        self._subjects = [subject]
        return {name: [(subject, rows)] if len(rows) else [] for name, rows in parts.as_dict().items()}

    # ------------------------------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------------------------------

    def _ensure_setup(self) -> None:
        if not self._datasets:
            self.setup()

    @property
    def subjects(self) -> list[str]:
        """Ordered subject ids; ``batch["subject"]`` indexes this list."""
        self._ensure_setup()
        return list(self._subjects)

    @property
    def n_subjects(self) -> int:
        """``len(subjects)``."""
        return len(self.subjects)

    @property
    def subject_split(self) -> SubjectSplit | None:
        """The subject-level split (None in client mode)."""
        self._ensure_setup()
        return self._subject_split

    @property
    def client_subject(self) -> str | None:
        """The resolved client id (None in the subject-level mode)."""
        self._ensure_setup()
        return self._client_subject

    def dataset(self, split: str) -> EpochDataset | None:
        """The dataset of ``split`` (``train``/``val``/``test``), None when that split is empty."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; options: {list(SPLITS)}")
        self._ensure_setup()
        return self._datasets[split]

    @property
    def modality_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each modality, e.g. ``{"hr": (L, 30)}`` with ``L = 2c + 1``."""
        return self.dataset("train").modality_shapes

    @property
    def n_classes(self) -> int:
        """Number of sleep-stage classes."""
        return len(CLASS_NAMES)

    def class_counts(self, split: str = "train") -> np.ndarray:
        """int64 [n_classes]: labelled centre epochs per class in ``split`` (for class weights)."""
        ds = self.dataset(split)
        return ds.class_counts() if ds is not None else np.zeros(len(CLASS_NAMES), dtype=np.int64)

    def split_summary(self) -> dict[str, Any]:
        """Epochs, subjects and class counts per split (plain types, to log)."""
        out: dict[str, Any] = {
            "dataset": self.dataset_name,
            "mode": "pretrain" if self.client is None else "client",
            "client": self._client_subject,
            "scheme": None if self.client is None else self.split_params.get("scheme"),
            "split_params": dict(self.split_params) if self.client is not None else dict(self.subject_params),
            "modalities": list(self.modalities),
            "context_epochs": self.context_epochs,
        }
        for name in SPLITS:
            ds = self._datasets.get(name)
            counts = ds.class_counts() if ds is not None else np.zeros(len(CLASS_NAMES), dtype=np.int64)
            out[name] = {
                "n_epochs": len(ds) if ds is not None else 0,
                "n_subjects": int(len(np.unique(ds.sample_subject))) if ds is not None else 0,
                "class_counts": {c: int(n) for c, n in zip(CLASS_NAMES, counts, strict=True)},
            }
        return out

    # ------------------------------------------------------------------------------------------
    # Loaders
    # ------------------------------------------------------------------------------------------

    def _loader(self, split: str, train: bool) -> DataLoader | list:
        ds = self.dataset(split)
        if ds is None or len(ds) == 0:
            return []
        generator = torch.Generator().manual_seed(self.seed)
        kwargs: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "collate_fn": collate_prebatched,
            "generator": generator,
        }
        if self.num_workers > 0:
            kwargs["worker_init_fn"] = seed_worker
            kwargs["persistent_workers"] = self.persistent_workers
        if train and self.seq_len is not None:
            sampler = ConsecutiveEpochSampler(
                ds,
                seq_len=self.seq_len,
                runs_per_batch=max(1, self.batch_size // self.seq_len),
                shuffle=True,
                seed=self.seed,
                drop_last=self.drop_last,
            )
            return DataLoader(ds, batch_sampler=sampler, **kwargs)
        # A last training batch of one sample breaks BatchNorm (no batch statistics): drop it.
        lone_last = len(ds) % self.batch_size == 1 and len(ds) > 1
        if train and torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            # DDP: each rank trains on a disjoint shard (the trainer configs set use_distributed_sampler=false,
            # since Lightning cannot inject its sampler into the consecutive-epoch batch sampler above).
            # Evaluation loaders stay whole on every rank, so predictions cover every epoch once.
            sampler = DistributedSampler(ds, shuffle=train, seed=self.seed, drop_last=train)
            del kwargs["generator"]
            return DataLoader(ds, batch_size=self.batch_size if train else self.eval_batch_size, sampler=sampler,
                              drop_last=train and (self.drop_last or lone_last), **kwargs)
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and (self.drop_last or lone_last),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in cache order (an empty list when there is no validation split)."""
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader | list:
        """Test batches in cache order (an empty list when there is no test split)."""
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader | list:
        """The test batches (for ``trainer.predict``)."""
        return self._loader("test", train=False)


class MesaDataModule(SleepDataModule):
    """MESA sleep (NSRR): ECG, HR and actigraphy; subject ids are zero-padded 4-digit strings
    (``client=1``, ``"1"`` and ``"mesa-sleep-0001"`` all mean ``"0001"``)."""

    dataset_name: ClassVar[str] = "mesa"
    default_modalities: ClassVar[tuple[str, ...]] = ("ecg", "hr", "activity")

    @classmethod
    def normalise_subject_id(cls, subject: int | str) -> str:
        """``1`` / ``"1"`` / ``"mesa-sleep-0001"`` -> ``"0001"``."""
        name = str(subject).strip()
        if name.startswith("mesa-sleep-"):
            name = name[len("mesa-sleep-") :]
        return f"{int(name):04d}" if name.isdigit() else name


class AppleWatchDataModule(SleepDataModule):
    """Apple Watch (PhysioNet sleep-accel): HR and activity; subject ids are the dataset's numeric ids
    as strings (e.g. ``"1066528"``; ``client=1066528`` works; a padded spelling matches by value).

    Some subjects lack activity (no motion data): with ``activity`` requested, ``missing_modality``
    decides: ``"error"`` (default, the message lists them), ``"skip"`` or ``"zeros"``.
    """

    dataset_name: ClassVar[str] = "applewatch"
    default_modalities: ClassVar[tuple[str, ...]] = ("hr", "activity")

    @classmethod
    def normalise_subject_id(cls, subject: int | str) -> str:
        """``46343`` / ``"0046343"`` -> ``"46343"`` (no padding; :meth:`resolve_subject` also matches
        a cache that pads, by numeric value)."""
        name = str(subject).strip()
        return str(int(name)) if name.isdigit() else name
