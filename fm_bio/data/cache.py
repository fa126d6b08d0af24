"""The preprocessed cache: per-subject contiguous ``.npy`` arrays (memory-mappable) and a manifest.

Layout under a cache root::

    manifest.json            every subject's entry (see below) + subjects that failed
    <subject>/meta.json      that subject's entry, incl. file sizes and hashes
    <subject>/label.npy      int8  [n]        class index, -1 = masked (unscored/movement/unknown)
    <subject>/epoch_index.npy int32 [n]       position of the epoch in the night (0 = first epoch)
    <subject>/t_start_s.npy  float64 [n]      epoch start, seconds from the recording start
    <subject>/hr.npy         float32 [n, 30]  1 Hz heart rate, normalised per night
    <subject>/hr_bpm.npy     float32 [n, 30]  1 Hz heart rate in beats/min (cleaned, not normalised)
    <subject>/ecg.npy        float32 [n, 7680] 256 Hz ECG, band-passed and scaled per epoch (if any)
    <subject>/activity.npy   float32 [n, 1]   activity, normalised per night (if any)
    <subject>/activity_counts.npy float32 [n, 1] activity in the source's units (if any)

Only epochs that pass quality control are stored (``n_epochs``); masked epochs are kept (their label
is -1) so that context windows see the true neighbours. A manifest entry holds ``subject``,
``n_epochs``, ``n_night_epochs``, ``label_counts`` (the whole night before QC, keys wake/light/deep/
rem/unscored), ``qc`` (rejected epochs by reason), ``config_hash`` and ``modalities``.

Every write is atomic: a subject is written to a temporary folder and renamed into place, the
manifest is written to a temporary file and renamed. A killed run leaves either the old or the new
subject, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
META_NAME = "meta.json"
CACHE_FORMAT_VERSION = 1

MODALITY_FILES: Mapping[str, str] = {"ecg": "ecg", "hr": "hr", "activity": "activity"}
"""Modality name -> array file stem (without ``.npy``) that a DataModule reads."""

INDEX_FILES = ("label", "epoch_index", "t_start_s")
"""Arrays every subject has."""


class CacheError(RuntimeError):
    """The cache is missing or inconsistent; the message says how to rebuild it."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_hash(path: Path, chunk_bytes: int = 1 << 22) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_subject(cache_root: Path, subject: str, arrays: Mapping[str, np.ndarray], entry: dict) -> dict:
    """Write one subject's arrays and ``meta.json`` atomically; return the completed entry.

    ``entry`` is the manifest entry; ``files`` (name -> shape, dtype, bytes, hash) is added to it.
    """
    cache_root = Path(cache_root)
    missing = [k for k in INDEX_FILES if k not in arrays]
    if missing:
        raise ValueError(f"subject {subject}: arrays {missing} are required in the cache")
    n = len(arrays["label"])
    for name, arr in arrays.items():
        if len(arr) != n:
            raise ValueError(f"subject {subject}: array {name} has {len(arr)} rows, label has {n}")
    tmp_root = cache_root / ".tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = tmp_root / f"{subject}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        files = {}
        for name, arr in sorted(arrays.items()):
            path = tmp / f"{name}.npy"
            with open(path, "wb") as f:
                np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            files[name] = {
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
                "bytes": path.stat().st_size,
                "hash": _file_hash(path),
            }
        entry = {**entry, "subject": subject, "files": files, "cache_format": CACHE_FORMAT_VERSION}
        atomic_write_json(tmp / META_NAME, entry)
        _fsync_dir(tmp)
        final = cache_root / subject
        if final.exists():
            trash = tmp_root / f"old-{subject}-{uuid.uuid4().hex}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(cache_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def read_subject_meta(cache_root: Path, subject: str) -> dict | None:
    """The subject's ``meta.json`` entry, or None when absent or unreadable."""
    path = Path(cache_root) / subject / META_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def subject_is_intact(cache_root: Path, subject: str, config_hash: str, verify_hashes: bool = False) -> bool:
    """True when the subject's folder was fully written with ``config_hash`` and its files match
    the recorded sizes (and, with ``verify_hashes``, their content hashes)."""
    meta = read_subject_meta(cache_root, subject)
    if meta is None or meta.get("config_hash") != config_hash or meta.get("cache_format") != CACHE_FORMAT_VERSION:
        return False
    folder = Path(cache_root) / subject
    for name, info in meta.get("files", {}).items():
        path = folder / f"{name}.npy"
        try:
            if path.stat().st_size != info["bytes"]:
                return False
        except OSError:
            return False
        if verify_hashes and _file_hash(path) != info["hash"]:
            return False
    return bool(meta.get("files"))


def manifest_from_entries(dataset: str, config_hash: str, entries: Iterable[dict], failed: Mapping[str, str]) -> dict:
    """Assemble a manifest dict (deterministic: no timestamps, subjects sorted)."""
    subjects = {e["subject"]: e for e in sorted(entries, key=lambda e: e["subject"])}
    return {
        "cache_format": CACHE_FORMAT_VERSION,
        "dataset": dataset,
        "config_hash": config_hash,
        "subjects": subjects,
        "failed": dict(sorted(failed.items())),
    }


def shard_manifest_name(shard: int, num_shards: int) -> str:
    """The manifest file a preprocessing shard writes (``task=merge_shards`` joins them into the manifest)."""
    return f"manifest.shard-{shard}-of-{num_shards}.json"


def load_manifest(cache_root: Path) -> dict:
    """Read ``manifest.json``; a clear error when the cache has not been built."""
    path = Path(cache_root) / MANIFEST_NAME
    if not path.exists():
        raise CacheError(
            f"no preprocessed cache at {cache_root} ({MANIFEST_NAME} missing). Build it with "
            f"`python -m fm_bio.run task=preprocess dataset=<name> dataset.root=<raw data>`."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise CacheError(f"{path} is not valid JSON ({err}); delete it and re-run task=preprocess") from err


def open_subject(cache_root: Path, subject: str, names: Iterable[str] | None = None, mmap: bool = True) -> dict[str, np.ndarray]:
    """Open a subject's arrays, memory-mapped by default (nothing is read until indexed)."""
    folder = Path(cache_root) / subject
    meta = read_subject_meta(cache_root, subject)
    if meta is None:
        raise CacheError(f"subject {subject!r} is not in the cache at {cache_root}; re-run task=preprocess")
    available = sorted(meta["files"])
    names = available if names is None else list(names)
    out = {}
    for name in names:
        if name not in meta["files"]:
            raise CacheError(f"subject {subject!r} has no array {name!r} in {folder}; available: {available}")
        out[name] = np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    return out


def clean_temporaries(cache_root: Path, subjects: Iterable[str] | None = None, manifest_name: str = MANIFEST_NAME) -> int:
    """Remove leftovers of killed writes (``.tmp/`` and ``.<name>.<id>.tmp`` files); returns how many.

    With ``subjects`` (a shard's), only the leftovers of those subjects and of ``manifest_name`` go, so shards
    writing into one cache at the same time never remove each other's files in flight; without, every
    leftover goes (call it then only when no other process writes to this cache).
    """
    cache_root = Path(cache_root)
    tmp_root = cache_root / ".tmp"
    leftovers = list(tmp_root.iterdir()) if tmp_root.exists() else []
    if subjects is not None:
        own = set(subjects)
        leftovers = [p for p in leftovers if p.name.removeprefix("old-").rsplit("-", 1)[0] in own]
        leftovers += list(cache_root.glob(f".{manifest_name}.*.tmp"))
    else:
        leftovers += list(cache_root.glob(".*.tmp"))
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return len(leftovers)
