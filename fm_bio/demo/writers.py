"""Writers of the published file formats (MESA/NSRR and PhysioNet sleep-accel).

Every writer produces exactly the layout of the real download (see ``docs/data-formats.md``), so the
project's readers run on the demo data unchanged. Outputs are deterministic: the same inputs give
byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fm_bio.demo.hypnogram import EPOCH_S, UNSCORED, run_lengths
from fm_bio.demo.physiology import ScoredEvents

NSRR_STAGE_CONCEPTS: Mapping[int, str] = {
    0: "Wake|0",
    1: "Stage 1 sleep|1",
    2: "Stage 2 sleep|2",
    3: "Stage 3 sleep|3",
    4: "Stage 4 sleep|4",
    5: "REM sleep|5",
    9: "Unscored|9",
}
"""NSRR ``EventConcept`` of each NSRR/Profusion stage code."""

NSRR_UNSCORED = 9
ACTIGRAPHY_COLUMNS = ("mesaid", "line", "linetime", "offwrist", "activity", "marker", "whitelight", "redlight",
                      "greenlight", "bluelight", "wake", "interval", "dayofweek", "daybymidnight", "daybynoon")
"""Columns of a MESA actigraphy file, in order."""


def to_nsrr_codes(stages: np.ndarray) -> np.ndarray:
    """Generator stage codes (-1 unscored) -> NSRR/Profusion codes (9 unscored)."""
    s = np.asarray(stages, dtype=np.int64)
    return np.where(s == UNSCORED, NSRR_UNSCORED, s)


def _num(x: float) -> str:
    """Seconds as NSRR writes them: a float with at least one decimal (``30.0``, ``5613.3``)."""
    return repr(float(round(x, 6)))


def _write_xml(root: ET.Element, path: Path) -> None:
    """Pretty-printed XML with the NSRR declaration and CRLF line endings."""
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    text = '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + body + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\r\n") as f:
        f.write(text)


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    e = ET.SubElement(parent, tag)
    if text is not None:
        e.text = text
    return e


def write_nsrr_xml(path: Path, stages: np.ndarray, duration_s: float, start_clock: dt.time,
                   events: ScoredEvents, software_version: str = "Compumedics") -> None:
    """Write an NSRR ``PSGAnnotation`` file.

    Parameters
    ----------
    path : output file (``...-nsrr.xml``).
    stages : generator stage codes, one per 30-s epoch.
    duration_s : whole recording length (the "Recording Start Time" event's Duration).
    start_clock : recording start clock time.
    events : arousals, hypopneas and desaturations, interleaved with the stages by start time.
    software_version : text of ``SoftwareVersion``.
    """
    root = ET.Element("PSGAnnotation")
    _sub(root, "SoftwareVersion", software_version)
    _sub(root, "EpochLength", str(int(EPOCH_S)))
    scored = _sub(root, "ScoredEvents")
    rec = _sub(scored, "ScoredEvent")
    _sub(rec, "EventType")
    _sub(rec, "EventConcept", "Recording Start Time")
    _sub(rec, "Start", "0")
    _sub(rec, "Duration", _num(duration_s))
    _sub(rec, "ClockTime", "00.00.00 " + start_clock.strftime("%H.%M.%S"))
    items: list[tuple[float, int, list[tuple[str, str]]]] = []
    codes = to_nsrr_codes(stages)
    for s, n, v in zip(*run_lengths(codes), strict=True):
        items.append((s * EPOCH_S, 0, [("EventType", "Stages|Stages"), ("EventConcept", NSRR_STAGE_CONCEPTS[int(v)]),
                                       ("Start", _num(s * EPOCH_S)), ("Duration", _num(n * EPOCH_S))]))
    for t0, d in events.arousals:
        items.append((t0, 1, [("EventType", "Arousals|Arousals"), ("EventConcept", "Arousal|Arousal ()"),
                              ("Start", _num(t0)), ("Duration", _num(d)), ("SignalLocation", "EEG1")]))
    for t0, d in events.hypopneas:
        items.append((t0, 2, [("EventType", "Respiratory|Respiratory"), ("EventConcept", "Hypopnea|Hypopnea"),
                              ("Start", _num(t0)), ("Duration", _num(d)), ("SignalLocation", "Flow")]))
    for t0, d, nadir, base in events.desaturations:
        items.append((t0, 3, [("EventType", "Respiratory|Respiratory"),
                              ("EventConcept", "SpO2 desaturation|SpO2 desaturation"),
                              ("Start", _num(t0)), ("Duration", _num(d)), ("SignalLocation", "SpO2"),
                              ("SpO2Nadir", _num(nadir)), ("SpO2Baseline", _num(base))]))
    for _, _, fields in sorted(items, key=lambda x: (x[0], x[1])):
        ev = _sub(scored, "ScoredEvent")
        for tag, text in fields:
            _sub(ev, tag, text)
    _write_xml(root, path)


def write_profusion_xml(path: Path, stages: np.ndarray, events: ScoredEvents) -> None:
    """Write a Compumedics Profusion ``CMPStudyConfig`` file (one ``SleepStage`` per epoch)."""
    root = ET.Element("CMPStudyConfig")
    _sub(root, "EpochLength", str(int(EPOCH_S)))
    scored = _sub(root, "ScoredEvents")
    items = []
    for t0, d in events.arousals:
        items.append((t0, [("Name", "Arousal (ASDA)"), ("Start", _num(t0)), ("Duration", _num(d)),
                           ("Input", "C3/A2")]))
    for t0, d in events.hypopneas:
        items.append((t0, [("Name", "Hypopnea"), ("Start", _num(t0)), ("Duration", _num(d)), ("Input", "Airflow")]))
    for t0, d, nadir, base in events.desaturations:
        items.append((t0, [("Name", "SpO2 desaturation"), ("Start", _num(t0)), ("Duration", _num(d)),
                           ("Input", "SpO2"), ("LowestSpO2", str(int(nadir))),
                           ("Desaturation", str(int(base - nadir)))]))
    for _, fields in sorted(items, key=lambda x: x[0]):
        ev = _sub(scored, "ScoredEvent")
        for tag, text in fields:
            _sub(ev, tag, text)
    ss = _sub(root, "SleepStages")
    for c in to_nsrr_codes(stages):
        _sub(ss, "SleepStage", str(int(c)))
    _write_xml(root, path)


@dataclass(frozen=True)
class EdfChannel:
    """One EDF signal to write."""

    label: str
    data: np.ndarray
    sfreq_hz: float
    physical_dimension: str
    physical_range: tuple[float, float]
    digital_range: tuple[int, int] = (-32768, 32767)
    transducer_type: str = ""
    prefiltering: str = ""


def write_edf(path: Path, channels: Sequence[EdfChannel], start_clock: dt.time,
              start_date: dt.date = dt.date(1985, 1, 1)) -> None:
    """Write a real EDF file with edfio (1-s data records; de-identified header like the NSRR's).

    Data outside a channel's physical range is clipped to it, as an amplifier would.
    """
    import edfio

    signals = []
    for ch in channels:
        lo, hi = ch.physical_range
        signals.append(edfio.EdfSignal(
            np.clip(np.asarray(ch.data, dtype=np.float64), lo, hi), ch.sfreq_hz, label=ch.label,
            transducer_type=ch.transducer_type, physical_dimension=ch.physical_dimension,
            physical_range=ch.physical_range, digital_range=ch.digital_range, prefiltering=ch.prefiltering))
    edf = edfio.Edf(signals, recording=edfio.Recording(startdate=start_date), starttime=start_clock,
                    data_record_duration=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    edf.write(path)


def _fmt_cell(x: object) -> str:
    if isinstance(x, (float, np.floating)):
        if np.isnan(x):
            return ""
        return f"{x:.2f}"
    return str(x)


def write_actigraphy_csv(path: Path, mesaid: int, columns: Mapping[str, object]) -> None:
    """Write a MESA actigraphy file (``ACTIGRAPHY_COLUMNS``; empty cells where a value is NaN).

    ``activity`` and ``wake`` are written as integers, the light columns with two decimals.
    """
    n = len(columns["line"])
    cols = []
    for name in ACTIGRAPHY_COLUMNS:
        if name == "mesaid":
            cols.append([str(mesaid)] * n)
        elif name in ("activity", "wake"):
            v = np.asarray(columns[name], dtype=np.float64)
            cols.append(["" if np.isnan(x) else str(int(x)) for x in v])
        elif name.endswith("light"):
            cols.append([_fmt_cell(float(x)) for x in columns[name]])
        else:
            cols.append([str(x) for x in columns[name]])
    lines = [",".join(ACTIGRAPHY_COLUMNS)] + [",".join(row) for row in zip(*cols, strict=True)]
    _write_lines(path, lines)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Plain comma-separated file with a header row (floats in their shortest form, NaN empty)."""

    def cell(x: object) -> str:
        if isinstance(x, (float, np.floating)):
            return "" if np.isnan(x) else format(float(x), ".10g")
        return str(x)

    lines = [",".join(header)] + [",".join(cell(x) for x in row) for row in rows]
    _write_lines(path, lines)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def _g12(x: np.ndarray) -> list[str]:
    """Times as the sleep-accel files write them (12 significant digits)."""
    return [f"{v:.12g}" for v in np.asarray(x, dtype=np.float64)]


def write_sleep_accel_heart_rate(path: Path, t_s: np.ndarray, bpm: np.ndarray) -> None:
    """``<t>,<bpm>`` per line, no header (rows are written in the given order)."""
    _write_lines(path, [f"{t},{int(b)}" for t, b in zip(_g12(t_s), bpm, strict=True)])


def write_sleep_accel_labels(path: Path, stages: np.ndarray) -> None:
    """``<t> <stage>`` per 30-s epoch from t = 0, single space, no header."""
    _write_lines(path, [f"{int(i * EPOCH_S)} {int(s)}" for i, s in enumerate(stages)])


def write_sleep_accel_motion(path: Path, t_s: np.ndarray, xyz: np.ndarray) -> None:
    """``<t> <x> <y> <z>`` (acceleration in g) per line, space separated, no header."""
    t = _g12(t_s)
    x = np.char.mod("%.5f", np.asarray(xyz, dtype=np.float64))
    _write_lines(path, [f"{a} {b[0]} {b[1]} {b[2]}" for a, b in zip(t, x.tolist(), strict=True)])


def write_sleep_accel_steps(path: Path, t_s: np.ndarray, steps: np.ndarray) -> None:
    """``<t>,<steps>`` per line, no header."""
    _write_lines(path, [f"{t},{int(s)}" for t, s in zip(_g12(t_s), steps, strict=True)])
