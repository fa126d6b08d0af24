"""``task=preprocess``: raw dataset -> per-subject cache + manifest, resumable and parallel."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joblib import Parallel, delayed
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from fm_bio.data import cache
from fm_bio.data.records import DataError
from fm_bio.data.sources import make_source
from fm_bio.data.sources.base import Source
from fm_bio.preprocessing.pipeline import QC_REASONS, PreprocessConfig, preprocess_night

log = logging.getLogger(__name__)


class PreprocessError(RuntimeError):
    """Raised with ``strict=true`` when a subject cannot be preprocessed."""


@dataclass
class PreprocessReport:
    """What a preprocessing run did (written as ``preprocess_report.json`` in the run folder)."""

    cache_root: str
    config_hash: str
    processed: list[str] = field(default_factory=list)
    skipped_intact: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds_per_subject: dict[str, float] = field(default_factory=dict)
    qc_totals: dict[str, int] = field(default_factory=dict)
    label_totals: dict[str, int] = field(default_factory=dict)
    n_epochs_kept: int = 0
    n_night_epochs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cache_config_hash(cfg: PreprocessConfig, source: Source) -> str:
    """The hash a cache entry is valid for: the preprocessing settings plus the reader's non-default ones."""
    extra = source.settings()
    if not extra:
        return cfg.hash()
    text = json.dumps({"preprocess": cfg.hash(), "reader": extra}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _process_subject(source: Source, subject: str, cfg: PreprocessConfig, cache_root: Path) -> tuple[str, dict | None, str | None, float]:
    """Worker: load, preprocess and atomically write one subject. Never raises (errors are returned)."""
    t0 = time.perf_counter()
    try:
        record = source.load(subject)
        night = preprocess_night(record, cfg)
        night.entry["config_hash"] = cache_config_hash(cfg, source)
        entry = cache.write_subject(cache_root, subject, night.arrays, night.entry)
        return subject, entry, None, time.perf_counter() - t0
    except (DataError, ValueError) as err:
        return subject, None, f"{type(err).__name__}: {err}", time.perf_counter() - t0
    except Exception as err:  # an unexpected failure of one subject must not kill a long run
        tb = traceback.format_exc(limit=3)
        return subject, None, f"{type(err).__name__}: {err}\n{tb}", time.perf_counter() - t0


def _write_manifest(cache_root: Path, dataset: str, cfg_hash: str, entries: dict[str, dict], failed: dict[str, str],
                    source_root: str, name: str = cache.MANIFEST_NAME) -> None:
    manifest = cache.manifest_from_entries(dataset, cfg_hash, entries.values(), failed)
    manifest["source_root"] = source_root
    cache.atomic_write_json(cache_root / name, manifest)


def shard_subjects(subjects: list[str], shard: int | None, num_shards: int) -> list[str]:
    """Shard ``shard`` of ``num_shards``: every ``num_shards``-th subject of the sorted list (disjoint, covering)."""
    if shard is None or num_shards == 1:
        return subjects
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard={shard} must be in 0..num_shards-1 (num_shards={num_shards})")
    return sorted(subjects)[shard::num_shards]


def run_preprocess(source: Source, cache_root: str | Path, cfg: PreprocessConfig, subjects: list[str] | None = None,
                   n_jobs: int = 1, strict: bool = False, verify_hashes: bool = False,
                   progress: bool = True, shard: int | None = None, num_shards: int = 1) -> PreprocessReport:
    """Preprocess ``subjects`` (default: all the source has) into ``cache_root``.

    Subjects whose cached files are intact and were made with the same settings are skipped; every
    subject is written atomically and the manifest is rewritten (atomically) after each one, so a killed
    run resumes where it stopped. A failing subject is recorded in the manifest's ``failed`` section and
    the report; with ``strict`` it stops the run.

    With ``shard``/``num_shards`` (e.g. one SLURM array task each) only every ``num_shards``-th subject is
    processed and the shard's manifest is ``manifest.shard-<i>-of-<n>.json``; shards may write into one cache
    at the same time, and :func:`merge_shards` (``task=merge_shards``) joins them into ``manifest.json``.
    """
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    cfg_hash = cache_config_hash(cfg, source)
    wanted = source.subjects() if subjects is None else [source.check_subject(s) for s in subjects]
    twice = sorted({s for s in wanted if wanted.count(s) > 1})
    if twice:
        raise PreprocessError(f"the same subject is selected more than once: {twice} (ids are normalised, e.g. 1 and "
                              f"0001 are one MESA subject); list each subject once in dataset.subjects")
    sharded = shard is not None and num_shards > 1
    wanted = shard_subjects(wanted, shard, num_shards)
    manifest_name = cache.shard_manifest_name(shard, num_shards) if sharded else cache.MANIFEST_NAME
    n_tmp = cache.clean_temporaries(cache_root, subjects=wanted if sharded else None, manifest_name=manifest_name)
    if n_tmp:
        log.info("removed %d leftovers of an interrupted run in %s", n_tmp, cache_root / ".tmp")
    report = PreprocessReport(cache_root=str(cache_root), config_hash=cfg_hash)

    # Entries of every intact subject already in the cache (also ones outside this selection).
    entries: dict[str, dict] = {}
    for folder in sorted(p for p in cache_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sharded and folder.name not in wanted:
            continue  # another shard's subject: its own manifest lists it
        if cache.subject_is_intact(cache_root, folder.name, cfg_hash, verify_hashes=verify_hashes):
            entries[folder.name] = cache.read_subject_meta(cache_root, folder.name)  # type: ignore[assignment]
    todo = [s for s in wanted if s not in entries]
    report.skipped_intact = [s for s in wanted if s in entries]
    failed: dict[str, str] = {}
    if report.skipped_intact:
        log.info("%d subjects already cached with config %s: skipped", len(report.skipped_intact), cfg_hash)
    log.info("preprocessing %d subjects of %s into %s with n_jobs=%d", len(todo), source.name, cache_root, n_jobs)

    if todo:
        jobs = (delayed(_process_subject)(source, s, cfg, cache_root) for s in todo)
        runner = Parallel(n_jobs=n_jobs, return_as="generator_unordered") if n_jobs != 1 else None
        results = runner(jobs) if runner is not None else (f(*a, **k) for f, a, k in jobs)
        bar = tqdm(results, total=len(todo), desc=f"preprocess {source.name}", unit="subject", disable=not progress)
        for subject, entry, error, seconds in bar:
            report.seconds_per_subject[subject] = round(seconds, 3)
            if error is None:
                entries[subject] = entry  # type: ignore[assignment]
                report.processed.append(subject)
            else:
                failed[subject] = error
                log.error("subject %s failed: %s", subject, error)
            _write_manifest(cache_root, source.name, cfg_hash, entries, failed, str(source.root), manifest_name)
            if error is not None and strict:
                bar.close()
                raise PreprocessError(f"subject {subject} failed (strict=true): {error}")
    _write_manifest(cache_root, source.name, cfg_hash, entries, failed, str(source.root), manifest_name)

    report.failed = failed
    qc: Counter[str] = Counter({r: 0 for r in QC_REASONS})
    labels: Counter[str] = Counter()
    for s in wanted:
        if s in entries:
            qc.update(entries[s]["qc"])
            labels.update(entries[s]["label_counts"])
            report.n_epochs_kept += entries[s]["n_epochs"]
            report.n_night_epochs += entries[s]["n_night_epochs"]
    report.qc_totals, report.label_totals = dict(qc), dict(labels)
    return report


def preprocess_config_from(cfg: DictConfig) -> PreprocessConfig:
    """The :class:`PreprocessConfig` of a Hydra config (``dataset.modalities`` + ``dataset.preprocess``)."""
    params = OmegaConf.to_container(cfg.dataset.preprocess, resolve=True)
    assert isinstance(params, dict)
    return PreprocessConfig(modalities=tuple(cfg.dataset.modalities), **params)  # type: ignore[arg-type]


def build_source(cfg: DictConfig) -> Source:
    """The dataset source of a Hydra config, generating the demo tree first when it is the default and missing."""
    ensure_demo_if_default(cfg)
    return make_source(cfg.dataset.source, cfg.dataset.root, **OmegaConf.to_container(cfg.dataset.reader, resolve=True))


def ensure_demo_if_default(cfg: DictConfig) -> None:
    """Generate the embedded demo data when ``dataset.root`` is the demo location and it is missing."""
    demo = cfg.dataset.get("demo")
    if not demo or Path(cfg.dataset.root).resolve() != Path(demo.root).resolve():
        return
    from fm_bio.demo.generate import ensure_demo_data

    ensure_demo_data(demo.kind, Path(demo.root), **OmegaConf.to_container(demo.params, resolve=True))


def preprocess_task(cfg: DictConfig) -> dict[str, Any]:
    """Entry of ``task=preprocess``."""
    source = build_source(cfg)
    subjects = list(cfg.dataset.subjects) if cfg.dataset.get("subjects") else None
    if subjects is None and cfg.dataset.get("max_subjects"):
        subjects = source.subjects()[: int(cfg.dataset.max_subjects)]
    report = run_preprocess(
        source,
        cfg.dataset.cache_root,
        preprocess_config_from(cfg),
        subjects=subjects,
        n_jobs=int(cfg.n_jobs),
        strict=bool(cfg.strict),
        verify_hashes=bool(cfg.dataset.get("verify_hashes", False)),
        progress=bool(cfg.get("progress", True)),
        shard=cfg.get("shard"),
        num_shards=int(cfg.get("num_shards") or 1),
    )
    out = Path(cfg.paths.output_dir)
    cache.atomic_write_json(out / "preprocess_report.json", report.as_dict())
    log.info(
        "cache %s: %d processed, %d already cached, %d failed; %d of %d night epochs kept; QC rejections %s",
        report.cache_root, len(report.processed), len(report.skipped_intact), len(report.failed),
        report.n_epochs_kept, report.n_night_epochs, {k: v for k, v in report.qc_totals.items() if v},
    )
    if report.failed:
        log.warning("failed subjects (see %s): %s", out / "preprocess_report.json", sorted(report.failed))
    return {"cache_root": report.cache_root, "n_processed": len(report.processed),
            "n_skipped": len(report.skipped_intact), "n_failed": len(report.failed)}


def merge_shards(cache_root: str | Path, num_shards: int) -> dict[str, Any]:
    """Join the ``num_shards`` shard manifests of a cache into ``manifest.json`` (atomically).

    Every shard must have finished (its manifest present, one settings hash for all); each listed subject's
    files are checked to be intact. The merged manifest equals the one an unsharded run writes.
    """
    cache_root = Path(cache_root)
    names = [cache.shard_manifest_name(i, num_shards) for i in range(num_shards)]
    missing = [n for n in names if not (cache_root / n).exists()]
    if missing:
        raise PreprocessError(f"{cache_root}: shard manifests {missing} are missing; run those shards "
                              f"(task=preprocess shard=<i> num_shards={num_shards}) before merging")
    parts = [json.loads((cache_root / n).read_text()) for n in names]
    hashes = sorted({p["config_hash"] for p in parts})
    if len(hashes) != 1:
        raise PreprocessError(f"{cache_root}: the shards were made with different settings {hashes}; re-run "
                              "them with one configuration")
    entries: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for name, part in zip(names, parts, strict=True):
        for subject, entry in part["subjects"].items():
            if subject in entries:
                raise PreprocessError(f"{cache_root}: subject {subject} is in two shards; shards must be disjoint")
            if not cache.subject_is_intact(cache_root, subject, hashes[0]):
                raise PreprocessError(f"{cache_root}: subject {subject} ({name}) is not intact on disk; re-run its shard")
            entries[subject] = entry
        failed.update(part.get("failed", {}))
    _write_manifest(cache_root, parts[0]["dataset"], hashes[0], entries, failed, parts[0].get("source_root", ""))
    log.info("merged %d shard manifests of %s: %d subjects, %d failed", num_shards, cache_root, len(entries), len(failed))
    return {"cache_root": str(cache_root), "n_subjects": len(entries), "n_failed": len(failed)}


def merge_shards_task(cfg: DictConfig) -> dict[str, Any]:
    """Entry of ``task=merge_shards`` (needs ``num_shards``)."""
    if int(cfg.get("num_shards") or 1) < 2:
        raise SystemExit("task=merge_shards needs num_shards=<n> (the number of preprocessing shards)")
    return merge_shards(cfg.dataset.cache_root, int(cfg.num_shards))


def generate_demo_task(cfg: DictConfig) -> dict[str, Any]:
    """Entry of ``task=generate_demo``: (re)generate the demo tree of the selected dataset if missing."""
    demo = cfg.dataset.demo
    from fm_bio.demo.generate import ensure_demo_data

    root = ensure_demo_data(demo.kind, Path(demo.root), **OmegaConf.to_container(demo.params, resolve=True))
    log.info("demo data for %s ready at %s", cfg.dataset.name, root)
    return {"root": str(root)}
