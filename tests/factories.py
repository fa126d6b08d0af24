"""Tiny raw-data trees for reader and bad-input tests (minutes-long nights, written with the real formats).

The full demo generator lives in ``fm_bio.demo``; these builders are deliberately small and explicit so
that a test can break one file at a time.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import edfio
import numpy as np

CRLF = "\r\n"
NSRR_CONCEPTS = {0: "Wake|0", 1: "Stage 1 sleep|1", 2: "Stage 2 sleep|2", 3: "Stage 3 sleep|3", 4: "Stage 4 sleep|4",
                 5: "REM sleep|5", 9: "Unscored|9"}


def synthetic_ecg(duration_s: float, hr_bpm: float, sfreq_hz: float = 256.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A simple ECG: Gaussian-shaped QRS/T waves at jittered beat times. Returns (ecg_mV, beat_times_s)."""
    rng = np.random.default_rng(seed)
    rr = 60.0 / hr_bpm * (1 + 0.03 * rng.standard_normal(int(duration_s * hr_bpm / 60) + 5))
    beats = np.cumsum(rr)
    beats = beats[beats < duration_s - 0.5]
    t = np.arange(int(duration_s * sfreq_hz)) / sfreq_hz
    ecg = 0.02 * rng.standard_normal(len(t))
    for b in beats:
        i0, i1 = int((b - 0.1) * sfreq_hz), int((b + 0.45) * sfreq_hz)
        seg = t[max(i0, 0):i1] - b
        ecg[max(i0, 0):i1] += 1.2 * np.exp(-(seg / 0.012) ** 2) + 0.25 * np.exp(-((seg - 0.28) / 0.05) ** 2)
    return ecg.astype(np.float64), beats


def write_mesa_subject(root: Path, mesaid: int, stages: list[int], hr_bpm: float = 60.0, seed: int = 0,
                       channels: tuple[str, ...] = ("EKG", "HR", "SpO2"), act_line: int = 100,
                       excluded_epochs: tuple[int, ...] = ()) -> dict[str, Path]:
    """Write one MESA subject (EDF, NSRR XML, Profusion XML, actigraphy CSV, overlap row)."""
    sid = f"{mesaid:04d}"
    n = len(stages)
    dur = n * 30.0
    ecg, beats = synthetic_ecg(dur, hr_bpm, seed=seed)
    signals = []
    for ch in channels:
        if ch == "EKG":
            signals.append(edfio.EdfSignal(ecg, 256, label="EKG", physical_dimension="mV", physical_range=(-5, 5)))
        elif ch == "HR":
            signals.append(edfio.EdfSignal(np.full(int(dur), hr_bpm), 1, label="HR", physical_dimension="bpm",
                                           physical_range=(0, 250)))
        else:
            signals.append(edfio.EdfSignal(np.full(int(dur), 96.0), 1, label=ch, physical_range=(0, 100)))
    paths = {
        "edf": root / "polysomnography/edfs" / f"mesa-sleep-{sid}.edf",
        "nsrr": root / "polysomnography/annotations-events-nsrr" / f"mesa-sleep-{sid}-nsrr.xml",
        "profusion": root / "polysomnography/annotations-events-profusion" / f"mesa-sleep-{sid}-profusion.xml",
        "actigraphy": root / "actigraphy" / f"mesa-sleep-{sid}.csv",
        "overlap": root / "overlap/mesa-actigraphy-psg-overlap.csv",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(signals, starttime=dt.time(22, 0, 0), data_record_duration=1).write(paths["edf"])
    paths["nsrr"].write_bytes(nsrr_xml(stages, dur).encode())
    prof = "".join(f"<SleepStage>{s}</SleepStage>" for s in stages)
    paths["profusion"].write_text(f"<CMPStudyConfig><EpochLength>30</EpochLength><SleepStages>{prof}</SleepStages></CMPStudyConfig>")
    rows = ["mesaid,line,linetime,offwrist,activity,marker,whitelight,redlight,greenlight,bluelight,wake,interval,"
            "dayofweek,daybymidnight,daybynoon"]
    for line in range(1, act_line + n + 50):
        epoch = line - act_line
        excluded = 0 <= epoch < n and epoch in excluded_epochs
        activity = "" if excluded else str(10 * (epoch % 7) if 0 <= epoch < n else 100)
        interval = "EXCLUDED" if excluded else ("REST-S" if 0 <= epoch < n else "ACTIVE")
        clock = (dt.datetime(2000, 1, 1, 22) + dt.timedelta(seconds=30 * epoch)).strftime("%H:%M:%S")
        rows.append(f"{mesaid},{line},{clock},0,{activity},0,1,1,1,1,0,{interval},1,1,1")
    paths["actigraphy"].write_text("\n".join(rows) + "\n")
    header = "mesaid,line,linetime,starttime_psg\n"
    existing = paths["overlap"].read_text() if paths["overlap"].exists() else header
    paths["overlap"].write_text(existing + f"{mesaid},{act_line},22:00:00,22:00:00\n")
    return paths


def nsrr_xml(stages: list[int], duration_s: float, extra_events: str = "") -> str:
    """NSRR XML text (CRLF) with consecutive equal stages merged into one event."""
    events = [f"<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept><Start>0</Start>"
              f"<Duration>{duration_s:.1f}</Duration><ClockTime>00.00.00 22.00.00</ClockTime></ScoredEvent>"]
    i = 0
    while i < len(stages):
        j = i
        while j < len(stages) and stages[j] == stages[i]:
            j += 1
        events.append(f"<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>{NSRR_CONCEPTS.get(stages[i], f'Odd|{stages[i]}')}"
                      f"</EventConcept><Start>{i * 30:.1f}</Start><Duration>{(j - i) * 30:.1f}</Duration></ScoredEvent>")
        if i == 0:
            events.append("<ScoredEvent><EventType>Arousals|Arousals</EventType><EventConcept>Arousal|Arousal ()"
                          "</EventConcept><Start>12.5</Start><Duration>4.2</Duration></ScoredEvent>")
        i = j
    body = CRLF.join(events) + extra_events
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="no"?>{CRLF}<PSGAnnotation>{CRLF}'
            f"<SoftwareVersion>Compumedics</SoftwareVersion>{CRLF}<EpochLength>30</EpochLength>{CRLF}"
            f"<ScoredEvents>{CRLF}{body}{CRLF}</ScoredEvents>{CRLF}</PSGAnnotation>{CRLF}")


STAGES_A = [9, 0, 0, 1, 2, 2, 2, 3, 3, 4, 2, 5, 5, 5, 0, 2, 2, 5, 0, 6]
"""20 epochs (10 min) covering every NSRR code: 9 unscored, 6 movement, 0-5 stages."""


def make_mesa_tree(root: Path, n_subjects: int = 2) -> Path:
    """A tiny MESA tree with ``n_subjects`` 10-minute nights."""
    for k in range(n_subjects):
        write_mesa_subject(root, k + 1, STAGES_A, hr_bpm=55.0 + 10 * k, seed=k)
    return root


def write_sleep_accel_subject(root: Path, sid: str, stages: list[int], hr_bpm: float = 60.0, seed: int = 0,
                              motion: bool = True) -> None:
    """Write one sleep-accel subject: HR starting a day early, unsorted and duplicated; labels; motion; steps."""
    rng = np.random.default_rng(seed)
    n = len(stages)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "heart_rate").mkdir(parents=True, exist_ok=True)
    (root / "labels" / f"{sid}_labeled_sleep.txt").write_text("".join(f"{30 * i} {s}\n" for i, s in enumerate(stages)))
    t = np.concatenate([np.arange(-86400.0, -80000.0, 300.0), np.arange(-30.0, n * 30 + 60, 5.0) + rng.uniform(0, 1, 1)])
    v = hr_bpm + 3 * rng.standard_normal(len(t))
    order = np.arange(len(t))
    order[[-20, -19]] = order[[-19, -20]]  # two samples out of order
    lines = [f"{t[i]:.5f},{v[i]:.0f}" for i in order] + [f"{t[-40]:.5f},{v[-40]:.0f}"]  # one duplicate
    (root / "heart_rate" / f"{sid}_heartrate.txt").write_text("\n".join(lines) + "\n")
    if motion:
        (root / "motion").mkdir(exist_ok=True)
        (root / "steps").mkdir(exist_ok=True)
        tm = np.arange(-60.0, n * 30, 0.1)
        amp = np.array([0.05 if stages[min(int(max(x, 0) // 30), n - 1)] == 0 else 0.002 for x in tm])
        xyz = np.stack([np.zeros_like(tm), np.zeros_like(tm), -np.ones_like(tm)], 1) + amp[:, None] * rng.standard_normal((len(tm), 3))
        (root / "motion" / f"{sid}_acceleration.txt").write_text(
            "\n".join(f"{a:.3f} {x:.5f} {y:.5f} {z:.5f}" for a, (x, y, z) in zip(tm, xyz, strict=True)) + "\n")
        ts = np.arange(-3600.0, n * 30, 600.0)
        (root / "steps" / f"{sid}_steps.txt").write_text("".join(f"{x:.1f},{k % 3}\n" for k, x in enumerate(ts)))


STAGES_AW = [-1, 0, 0, 1, 2, 2, 3, 4, 2, 5, 5, 0, 2, 2, 5, 5, 2, 0, -1, 0]


def make_sleep_accel_tree(root: Path) -> Path:
    """Three subjects, the last without motion/steps."""
    write_sleep_accel_subject(root, "1000001", STAGES_AW, 58.0, seed=1)
    write_sleep_accel_subject(root, "1000002", STAGES_AW[::-1], 66.0, seed=2)
    write_sleep_accel_subject(root, "1000003", STAGES_AW, 72.0, seed=3, motion=False)
    return root
