"""Generate the embedded demo datasets (synthetic MESA and sleep-accel trees) and the CLI.

Usage::

    python -m fm_bio.demo.generate --kind mesa --out data/demo/mesa --n-subjects 12 --seed 0
    python -m fm_bio.demo.generate --kind sleep_accel --out data/demo/sleep-accel --n-subjects 8 --seed 1

Every subject draws its randomness from ``SeedSequence([seed, dataset, index])``, so the output does
not depend on ``n_jobs`` and the same seed gives byte-identical files. ``ensure_demo_data`` generates
only when the tree is missing or incomplete: it builds the tree in a temporary folder next to the
target, writes a ``.complete`` marker last and renames the folder into place.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import inspect
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fm_bio.demo import ecg as ecg_mod
from fm_bio.demo import physiology as phys
from fm_bio.demo import wearables, writers
from fm_bio.demo.hypnogram import EPOCH_S, N1, N2, N3, N4, REM, UNSCORED, WAKE, simulate_hypnogram

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
"""Bumped whenever the output of the generator changes; a tree of another version is regenerated."""
MARKER_NAME = ".complete"
KINDS = ("mesa", "sleep_accel")
_DATASET_TAG = {"mesa": 1, "sleep_accel": 2}
MESA_DATASET_VERSION = "0.7.0"
ECG_SFREQ_HZ = 256
THOR_SFREQ_HZ = 32


def subject_rngs(seed: int, kind: str, index: int, n: int = 8) -> list[np.random.Generator]:
    """Independent generators for one subject, derived from (seed, dataset, subject index)."""
    ss = np.random.SeedSequence([int(seed), _DATASET_TAG[kind], int(index)])
    return [np.random.default_rng(s) for s in ss.spawn(n)]


def _n_epochs(rng: np.random.Generator, night_hours: tuple[float, float]) -> int:
    lo, hi = night_hours
    if not 0 < lo <= hi:
        raise ValueError(f"night_hours must be (low, high) with 0 < low <= high, got {night_hours}")
    return max(4, int(round(rng.uniform(lo, hi) * 3600 / EPOCH_S)))


def _resp_phase_1hz(night: phys.Night) -> np.ndarray:
    return np.interp(np.arange(int(np.ceil(night.duration_s)) + 1), night.hr_grid_t_s, night.resp_phase_grid)


def _sleep_summary(stages: np.ndarray) -> dict[str, float]:
    """Sleep statistics as MESA's dataset reports them (minutes and percent of sleep time)."""
    sleep = np.isin(stages, [N1, N2, N3, N4, REM])
    tst_min = sleep.sum() * EPOCH_S / 60
    if not sleep.any():
        return {"tst_min": 0.0, "eff": 0.0, "waso": 0.0, "n1": 0.0, "n2": 0.0, "n34": 0.0, "rem": 0.0}
    a, b = np.flatnonzero(sleep)[[0, -1]]
    scored = (stages != UNSCORED).sum() * EPOCH_S / 60

    def pct(codes: list[int]) -> float:
        return round(100.0 * np.isin(stages, codes).sum() * EPOCH_S / 60 / tst_min, 1)

    return {
        "tst_min": round(tst_min, 1),
        "eff": round(100.0 * tst_min / max(scored, 1e-9), 1),
        "waso": round((stages[a:b + 1] == WAKE).sum() * EPOCH_S / 60, 1),
        "n1": pct([N1]), "n2": pct([N2]), "n34": pct([N3, N4]), "rem": pct([REM]),
    }


# --------------------------------------------------------------------------------------------- MESA
def mesa_subject_id(index: int) -> str:
    """Zero-padded 4-digit MESA id of the ``index``-th demo subject (``0001``, ...)."""
    return f"{index + 1:04d}"


@dataclass
class MesaSubject:
    """One simulated MESA subject in memory (what the files are written from).

    ``night.beat_times_s`` are the true R-peak times of ``ekg`` (seconds from the recording start).
    """

    sid: str
    traits: phys.SubjectTraits
    night: phys.Night
    start_clock: dt.time
    ekg_mv: np.ndarray
    hr_bpm: np.ndarray
    spo2_pct: np.ndarray
    ox_status: np.ndarray
    thor_uv: np.ndarray
    actigraphy: dict
    covariates: list

    @property
    def stages(self) -> np.ndarray:
        """Stage codes per 30-s epoch (generator convention, -1 unscored)."""
        return self.night.stages


def simulate_mesa_subject(index: int, seed: int = 0, night_hours: tuple[float, float] = (6.5, 8.5)) -> MesaSubject:
    """Simulate the ``index``-th MESA demo subject (deterministic in ``(seed, index)``), without writing.

    Parameters
    ----------
    index : subject index (the id is ``index + 1``, zero-padded).
    seed : dataset seed.
    night_hours : range of recording lengths in hours.
    """
    sid = mesa_subject_id(index)
    r_traits, r_hyp, r_night, r_ecg, r_oxi, r_thor, r_act, r_misc = subject_rngs(seed, "mesa", index)
    traits = phys.draw_traits(r_traits, "mesa")
    n_epochs = _n_epochs(r_hyp, night_hours)
    stages = simulate_hypnogram(n_epochs, traits.sleep, r_hyp)
    duration_s = float(n_epochs * EPOCH_S + int(r_misc.integers(0, 30)))  # a partial last epoch
    night = phys.simulate_night(stages, traits, r_night, duration_s=duration_s)
    template = ecg_mod.make_beat_template(traits.ecg, seed=int(r_ecg.integers(2**31 - 1)))
    ekg = ecg_mod.synthesize_ecg(night.beat_times_s, duration_s, ECG_SFREQ_HZ, template, traits.ecg, r_ecg,
                                 beat_amplitude=night.beat_amplitude, movement_1hz=night.movement_1hz,
                                 resp_phase_1hz=_resp_phase_1hz(night))
    hr, spo2, status = phys.oximeter_signals(night, r_oxi, traits.spo2_baseline_pct)
    thor = 250.0 * phys.thoracic_effort(night, THOR_SFREQ_HZ, r_thor)
    psg_clock_s = 21 * 3600 + 60 * int(r_misc.integers(0, 151))  # 21:00 .. 23:30, whole minutes
    start_clock = dt.time(psg_clock_s // 3600, (psg_clock_s % 3600) // 60, 0)
    # Actigraphy: the watch is put on at the PSG set-up visit, some hours before the PSG night (the
    # first night of the record), and worn for two to three days.
    psg_start_s = float(psg_clock_s)
    act_start_s = psg_start_s - 60 * int(r_misc.integers(2 * 60, 9 * 60))
    act_end_s = psg_start_s + 60 * int(r_misc.integers(int(1.9 * 24 * 60), int(2.6 * 24 * 60)))
    act = wearables.simulate_actigraphy(night, traits, r_act, act_start_s=act_start_s, psg_start_s=psg_start_s,
                                        act_end_s=act_end_s, first_weekday=int(r_misc.integers(1, 8)),
                                        psg_night_excluded=(index == 1))
    summ = _sleep_summary(stages)
    sleep_h = max(summ["tst_min"] / 60, 1e-9)
    covariates = [
        int(sid), 5, int(r_misc.integers(1, 5)), 1 if traits.sex == "M" else 0, int(r_misc.integers(0, 2)),
        traits.age_years, traits.bmi_kg_m2, round(len(night.events.hypopneas) / sleep_h, 1),
        summ["tst_min"], summ["eff"], summ["waso"], summ["n1"], summ["n2"], summ["n34"], summ["rem"],
    ]
    return MesaSubject(sid=sid, traits=traits, night=night, start_clock=start_clock, ekg_mv=ekg, hr_bpm=hr,
                       spo2_pct=spo2, ox_status=status, thor_uv=thor, actigraphy=act, covariates=covariates)


def _mesa_subject(out_dir: Path, index: int, seed: int, night_hours: tuple[float, float]) -> dict:
    """Simulate and write one MESA subject; return its covariate and overlap rows."""
    subj = simulate_mesa_subject(index, seed, night_hours)
    sid, night = subj.sid, subj.night
    base = out_dir / "polysomnography"
    writers.write_edf(base / "edfs" / f"mesa-sleep-{sid}.edf", [
        writers.EdfChannel("EKG", subj.ekg_mv, ECG_SFREQ_HZ, "mV", (-5.0, 5.0), transducer_type="ECG electrode",
                           prefiltering="HP:0.05Hz LP:100Hz"),
        writers.EdfChannel("Thor", subj.thor_uv, THOR_SFREQ_HZ, "uV", (-2000.0, 2000.0),
                           transducer_type="Thoracic belt"),
        writers.EdfChannel("OxStatus", subj.ox_status, 1, "", (0.0, 3.0), (0, 3)),
        writers.EdfChannel("SpO2", subj.spo2_pct, 1, "%", (0.0, 100.0), (0, 100), transducer_type="Oximeter"),
        writers.EdfChannel("HR", subj.hr_bpm, 1, "bpm", (0.0, 250.0), (0, 250), transducer_type="Oximeter"),
    ], subj.start_clock)
    writers.write_nsrr_xml(base / "annotations-events-nsrr" / f"mesa-sleep-{sid}-nsrr.xml", night.stages,
                           night.duration_s, subj.start_clock, night.events)
    writers.write_profusion_xml(base / "annotations-events-profusion" / f"mesa-sleep-{sid}-profusion.xml",
                                night.stages, night.events)
    writers.write_actigraphy_csv(out_dir / "actigraphy" / f"mesa-sleep-{sid}.csv", int(sid), subj.actigraphy)
    log.debug("MESA subject %s: %.1f h, %d beats", sid, night.duration_s / 3600, night.beat_times_s.size)
    clock = subj.start_clock
    return {
        "mesaid": int(sid),
        "overlap": [int(sid), subj.actigraphy["psg_line"], wearables.clock_str(clock.hour * 3600 + clock.minute * 60),
                    clock.strftime("%H:%M:%S")],
        "covariates": subj.covariates,
    }


MESA_COVARIATE_COLUMNS = ("mesaid", "examnumber", "race1c", "gender1", "cucmcn1c", "sleepage5c", "bmi5c",
                          "ahiu35", "slpprdp", "slpeffp", "waso5", "timest1p", "timest2p", "times34p", "timeremp")
"""Columns of the demo ``mesa-sleep-dataset`` file (a subset of the real one, in the real order:
``mesaid`` first, ``gender1`` (0 female, 1 male) 4th, ``sleepage5c`` 6th)."""


def _run_parallel(fn, args: Sequence[tuple], n_jobs: int) -> list:
    if n_jobs == 1 or len(args) <= 1:
        return [fn(*a) for a in args]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=n_jobs)(delayed(fn)(*a) for a in args)


def generate_mesa_demo(out_dir: Path, n_subjects: int = 12, seed: int = 0,
                       night_hours: tuple[float, float] = (6.5, 8.5), n_jobs: int = 1) -> list[str]:
    """Write a synthetic MESA tree (NSRR layout) under ``out_dir``.

    Parameters
    ----------
    out_dir : root of the tree (``polysomnography/``, ``actigraphy/``, ``overlap/``, ``datasets/``).
    n_subjects : number of subjects (ids ``0001`` ...).
    seed : the same seed gives byte-identical files.
    night_hours : range of recording lengths in hours.
    n_jobs : worker processes (does not change the output).

    Returns
    -------
    The subject ids (``"0001"``, ...).
    """
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    night_hours = (float(night_hours[0]), float(night_hours[1]))
    rows = _run_parallel(_mesa_subject, [(out_dir, i, seed, night_hours) for i in range(n_subjects)], n_jobs)
    writers.write_csv(out_dir / "overlap" / "mesa-actigraphy-psg-overlap.csv",
                      ("mesaid", "line", "linetime", "starttime_psg"), [r["overlap"] for r in rows])
    writers.write_csv(out_dir / "datasets" / f"mesa-sleep-dataset-{MESA_DATASET_VERSION}.csv",
                      MESA_COVARIATE_COLUMNS, [r["covariates"] for r in rows])
    _write_readme(out_dir, "mesa", seed, n_subjects)
    log.info("generated %d synthetic MESA subjects in %s (%.1f s)", n_subjects, out_dir, time.perf_counter() - t0)
    return [mesa_subject_id(i) for i in range(n_subjects)]


# -------------------------------------------------------------------------------------- sleep-accel
def sleep_accel_subject_ids(n_subjects: int, seed: int) -> list[str]:
    """Distinct 7-digit numeric ids (like the real ones), determined by the seed."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _DATASET_TAG["sleep_accel"], 10**6]))
    ids: list[str] = []
    while len(ids) < n_subjects:
        c = str(int(rng.integers(1_000_000, 10_000_000)))
        if c not in ids:
            ids.append(c)
    return ids


@dataclass
class SleepAccelSubject:
    """One simulated sleep-accel subject in memory (what the files are written from).

    ``hr_t_s``/``hr_bpm`` are in file order (with the duplicates and swaps the files have).
    """

    sid: str
    traits: phys.SubjectTraits
    night: phys.Night
    hr_t_s: np.ndarray
    hr_bpm: np.ndarray
    motion_t_s: np.ndarray | None
    motion_xyz_g: np.ndarray | None
    steps_t_s: np.ndarray | None
    steps: np.ndarray | None

    @property
    def stages(self) -> np.ndarray:
        """Stage codes per 30-s epoch (-1 unscored, 0 W, 1-4 N1-N4, 5 REM)."""
        return self.night.stages


def simulate_sleep_accel_subject(index: int, sid: str, seed: int = 1,
                                 night_hours: tuple[float, float] = (6.5, 8.5), with_motion: bool = True,
                                 repeat_hr_file: bool = False) -> SleepAccelSubject:
    """Simulate one sleep-accel demo subject (deterministic in ``(seed, index)``), without writing.

    Parameters
    ----------
    index : subject index (seeds its randomness).
    sid : its 7-digit id.
    seed : dataset seed.
    night_hours : range of night lengths in hours.
    with_motion : simulate the acceleration and step files.
    repeat_hr_file : write the whole heart-rate content twice (a quirk of two of the real files).
    """
    r_traits, r_hyp, r_night, r_hr, r_motion, r_steps, r_quirk, r_misc = subject_rngs(seed, "sleep_accel", index)
    traits = phys.draw_traits(r_traits, "apple_watch")
    n_epochs = _n_epochs(r_hyp, night_hours)
    stages = simulate_hypnogram(n_epochs, traits.sleep, r_hyp)
    duration_s = n_epochs * EPOCH_S
    night = phys.simulate_night(stages, traits, r_night, duration_s=duration_s)
    psg_clock_s = (22 * 3600 + 60 * int(r_misc.integers(0, 151))) % int(wearables.DAY_S)
    history_s = float(r_misc.uniform(0.6, 7.0) * wearables.DAY_S)
    t_hr, bpm = wearables.apple_watch_heart_rate(night, traits, r_hr, history_s=history_s,
                                                 psg_clock_s=psg_clock_s, label_end_s=duration_s)
    # The real files are not clean: a few exact duplicate lines and out-of-order timestamps.
    order = np.arange(t_hr.size)
    for i in r_quirk.choice(t_hr.size - 2, size=int(r_quirk.integers(2, 5)), replace=False):
        order[i], order[i + 1] = order[i + 1], order[i]
    dups = r_quirk.choice(t_hr.size, size=int(r_quirk.integers(2, 6)), replace=False)
    order = np.insert(order, dups, order[dups])
    t_w, b_w = t_hr[order], bpm[order]
    if repeat_hr_file:
        t_w, b_w = np.concatenate([t_w, t_w]), np.concatenate([b_w, b_w])
    t_m = xyz = t_s = steps = None
    if with_motion:
        t_m, xyz = wearables.apple_watch_motion(night, r_motion, t_start_s=-float(r_misc.uniform(300, 1800)),
                                                t_end_s=duration_s + float(r_misc.uniform(120, 900)))
        t_s, steps = wearables.apple_watch_steps(traits, r_steps, t_first_s=float(np.min(t_hr)),
                                                 t_last_s=duration_s + 600.0, psg_clock_s=psg_clock_s,
                                                 night_wake=(stages == WAKE))
    return SleepAccelSubject(sid=sid, traits=traits, night=night, hr_t_s=t_w, hr_bpm=b_w, motion_t_s=t_m,
                             motion_xyz_g=xyz, steps_t_s=t_s, steps=steps)


def _sleep_accel_subject(out_dir: Path, index: int, sid: str, seed: int, night_hours: tuple[float, float],
                         with_motion: bool, repeat_hr_file: bool) -> dict:
    """Simulate and write one sleep-accel subject."""
    subj = simulate_sleep_accel_subject(index, sid, seed, night_hours, with_motion, repeat_hr_file)
    writers.write_sleep_accel_heart_rate(out_dir / "heart_rate" / f"{sid}_heartrate.txt", subj.hr_t_s, subj.hr_bpm)
    writers.write_sleep_accel_labels(out_dir / "labels" / f"{sid}_labeled_sleep.txt", subj.stages)
    if with_motion:
        writers.write_sleep_accel_motion(out_dir / "motion" / f"{sid}_acceleration.txt", subj.motion_t_s,
                                         subj.motion_xyz_g)
        writers.write_sleep_accel_steps(out_dir / "steps" / f"{sid}_steps.txt", subj.steps_t_s, subj.steps)
    log.debug("sleep-accel subject %s: %.1f h, motion=%s", sid, subj.night.duration_s / 3600, with_motion)
    return {"id": sid, "n_epochs": int(subj.stages.size), "with_motion": with_motion}


def generate_sleep_accel_demo(out_dir: Path, n_subjects: int = 8, seed: int = 1, n_jobs: int = 1,
                              night_hours: tuple[float, float] = (6.5, 8.5)) -> list[str]:
    """Write a synthetic PhysioNet sleep-accel tree under ``out_dir``.

    The last subject (when there are at least two) has no ``motion/`` and ``steps/`` files, like the
    real subjects a reader must load from heart rate alone.

    Parameters
    ----------
    out_dir : root of the tree (``heart_rate/``, ``labels/``, ``motion/``, ``steps/``).
    n_subjects : number of subjects (7-digit ids).
    seed : the same seed gives byte-identical files.
    n_jobs : worker processes (does not change the output).
    night_hours : range of night lengths in hours.

    Returns
    -------
    The subject ids.
    """
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    night_hours = (float(night_hours[0]), float(night_hours[1]))
    ids = sleep_accel_subject_ids(n_subjects, seed)
    args = [(out_dir, i, sid, seed, night_hours, not (n_subjects >= 2 and i == n_subjects - 1),
             n_subjects >= 3 and i == 1) for i, sid in enumerate(ids)]
    _run_parallel(_sleep_accel_subject, args, n_jobs)
    _write_readme(out_dir, "sleep_accel", seed, n_subjects)
    log.info("generated %d synthetic sleep-accel subjects in %s (%.1f s)", n_subjects, out_dir,
             time.perf_counter() - t0)
    return ids


def _write_readme(out_dir: Path, kind: str, seed: int, n_subjects: int) -> None:
    text = (f"# Synthetic {kind} demo data (fm-bio generator v{GENERATOR_VERSION})\n\n"
            f"Generated by `python -m fm_bio.demo.generate --kind {kind} --seed {seed} "
            f"--n-subjects {n_subjects}`. Not real recordings: every signal, label and covariate is simulated,\n"
            "in the same file layout as the published dataset so that the real readers run on it.\n")
    (out_dir / "README.md").write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------------ ensure
_GENERATORS = {"mesa": generate_mesa_demo, "sleep_accel": generate_sleep_accel_demo}
_SIGNATURES = {kind: inspect.signature(fn) for kind, fn in _GENERATORS.items()}


def _resolved_params(kind: str, kwargs: dict) -> dict:
    """The generator's parameters with defaults filled in (``n_jobs`` excluded: it never changes output)."""
    if kind not in _GENERATORS:
        raise ValueError(f"unknown demo kind {kind!r}; options: {list(KINDS)}")
    sig = _SIGNATURES[kind]
    unknown = set(kwargs) - set(sig.parameters) - {"out_dir"}
    if unknown:
        raise TypeError(f"unknown parameters for the {kind} demo: {sorted(unknown)}; "
                        f"options: {[p for p in sig.parameters if p != 'out_dir']}")
    params = {}
    for name, prm in sig.parameters.items():
        if name in ("out_dir", "n_jobs"):
            continue
        params[name] = _jsonable(kwargs.get(name, prm.default))
    return params


def _jsonable(v: object) -> object:
    """Plain JSON types for the marker (tuples, OmegaConf lists and numpy scalars included)."""
    if isinstance(v, (str, bool)) or v is None:
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if hasattr(v, "__iter__"):
        return [_jsonable(x) for x in v]
    return str(v)


def _expected_files(kind: str, subjects: Sequence[str]) -> list[str]:
    if kind == "mesa":
        files = ["overlap/mesa-actigraphy-psg-overlap.csv", f"datasets/mesa-sleep-dataset-{MESA_DATASET_VERSION}.csv"]
        for s in subjects:
            files += [f"polysomnography/edfs/mesa-sleep-{s}.edf",
                      f"polysomnography/annotations-events-nsrr/mesa-sleep-{s}-nsrr.xml",
                      f"polysomnography/annotations-events-profusion/mesa-sleep-{s}-profusion.xml",
                      f"actigraphy/mesa-sleep-{s}.csv"]
        return files
    return [f for s in subjects for f in (f"heart_rate/{s}_heartrate.txt", f"labels/{s}_labeled_sleep.txt")]


def is_complete(kind: str, out_dir: Path, **kwargs) -> bool:
    """True when ``out_dir`` holds a finished tree generated with these parameters by this version."""
    out_dir = Path(out_dir)
    try:
        marker = json.loads((out_dir / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker.get("version") != GENERATOR_VERSION or marker.get("kind") != kind:
        return False
    if marker.get("params") != _resolved_params(kind, kwargs):
        return False
    return all((out_dir / f).is_file() for f in _expected_files(kind, marker.get("subjects", [])))


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (POSIX); a no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_demo_data(kind: str, out_dir: Path, **kwargs) -> Path:
    """Generate a demo tree unless a complete one with the same parameters is already there.

    Parameters
    ----------
    kind : ``"mesa"`` or ``"sleep_accel"``.
    out_dir : where the tree lives (e.g. ``data/demo/mesa``).
    **kwargs : parameters of ``generate_mesa_demo`` / ``generate_sleep_accel_demo``
        (``n_subjects``, ``seed``, ``night_hours``, ``n_jobs``).

    Returns
    -------
    ``out_dir``. The tree is built in a temporary folder next to it, the ``.complete`` marker (JSON
    with the parameters and the generator version) is written last, then the folder is renamed into
    place, so a killed generation leaves no tree that looks complete. Concurrent callers wait on a lock.
    """
    out_dir = Path(out_dir).absolute()
    params = _resolved_params(kind, kwargs)
    if is_complete(kind, out_dir, **kwargs):
        log.debug("demo data %s is complete", out_dir)
        return out_dir
    with _lock(out_dir.parent / f".{out_dir.name}.lock"):
        if is_complete(kind, out_dir, **kwargs):  # another process finished it meanwhile
            return out_dir
        if out_dir.exists():
            log.info("demo data in %s is incomplete or from other parameters: regenerating", out_dir)
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):  # left by a killed generation
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
        log.info("generating synthetic %s demo data in %s (%s)", kind, out_dir, params)
        try:
            subjects = _GENERATORS[kind](tmp, **kwargs)
            marker = {"generator": "fm_bio.demo.generate", "version": GENERATOR_VERSION, "kind": kind,
                      "params": params, "subjects": list(subjects)}
            with open(tmp / MARKER_NAME, "w", encoding="utf-8") as f:
                f.write(json.dumps(marker, indent=2, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if out_dir.exists():
                trash = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(out_dir, trash)
                os.replace(tmp, out_dir)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, out_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m fm_bio.demo.generate --help``)."""
    ap = argparse.ArgumentParser(prog="python -m fm_bio.demo.generate",
                                 description="Generate a synthetic demo dataset in a published layout.")
    ap.add_argument("--kind", choices=KINDS, required=True)
    ap.add_argument("--out", type=Path, required=True, help="root folder of the tree, e.g. data/demo/mesa")
    ap.add_argument("--n-subjects", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--night-hours", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="regenerate even if a complete tree exists")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kwargs = {"n_jobs": args.n_jobs}
    for key in ("n_subjects", "seed", "night_hours"):
        if getattr(args, key) is not None:
            kwargs[key] = tuple(getattr(args, key)) if key == "night_hours" else getattr(args, key)
    if args.force and (args.out / MARKER_NAME).exists():
        (args.out / MARKER_NAME).unlink()
    t0 = time.perf_counter()
    out = ensure_demo_data(args.kind, args.out, **kwargs)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("%s demo data ready in %s: %.1f MB, %.1f s", args.kind, out, size / 1e6, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
