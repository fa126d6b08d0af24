"""MESA sleep (NSRR) reader: EDF signals, NSRR / Profusion stage XML, actigraphy through the overlap file.

Layout (see ``shared/docs/data-formats.md``)::

    polysomnography/edfs/mesa-sleep-NNNN.edf
    polysomnography/annotations-events-nsrr/mesa-sleep-NNNN-nsrr.xml
    polysomnography/annotations-events-profusion/mesa-sleep-NNNN-profusion.xml   (fallback)
    actigraphy/mesa-sleep-NNNN.csv
    overlap/mesa-actigraphy-psg-overlap.csv
"""

from __future__ import annotations

import logging
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import edfio
import numpy as np
import pandas as pd

from fm_bio.data.labels import MASKED, map_stage_codes
from fm_bio.data.records import EPOCH_S, DataError, NightRecord, RegularSignal
from fm_bio.data.sources.base import Source

log = logging.getLogger(__name__)

EDF_DIR = Path("polysomnography/edfs")
NSRR_XML_DIR = Path("polysomnography/annotations-events-nsrr")
PROFUSION_XML_DIR = Path("polysomnography/annotations-events-profusion")
ACTIGRAPHY_DIR = Path("actigraphy")
OVERLAP_FILE = Path("overlap/mesa-actigraphy-psg-overlap.csv")
_SUBJECT_RE = re.compile(r"^mesa-sleep-(\d+)\.edf$", re.IGNORECASE)


def _channel_labels(edf: edfio.Edf) -> list[str]:
    return [s.label.strip() for s in edf.signals]


class MesaSource(Source):
    """Reads MESA nights in the NSRR layout.

    Parameters
    ----------
    root : the MESA download folder (holding ``polysomnography/``, ``actigraphy/``, ``overlap/``).
    modalities : which of ``ecg``, ``hr``, ``activity`` to load; only those EDF channels are read.
    ecg_channel, hr_channel : EDF channel labels (real MESA: ``EKG`` and ``HR``).
    annotations : ``"nsrr"``, ``"profusion"`` or ``"auto"`` (NSRR XML, Profusion XML if it is missing).
    """

    name = "mesa"

    def __init__(
        self,
        root: str | Path,
        modalities: Sequence[str] = ("ecg", "hr", "activity"),
        ecg_channel: str = "EKG",
        hr_channel: str = "HR",
        annotations: str = "auto",
        allow_truncated_edf: bool = False,
    ) -> None:
        super().__init__(root)
        unknown = set(modalities) - {"ecg", "hr", "activity"}
        if unknown:
            raise ValueError(f"mesa: unknown modalities {sorted(unknown)}; options: ecg, hr, activity")
        if annotations not in ("nsrr", "profusion", "auto"):
            raise ValueError(f"mesa: annotations={annotations!r}; options: nsrr, profusion, auto")
        self.modalities = tuple(modalities)
        self.ecg_channel = ecg_channel
        self.hr_channel = hr_channel
        self.annotations = annotations
        self.allow_truncated_edf = allow_truncated_edf

    # ---------------------------------------------------------------- subjects and paths
    def normalise_subject_id(self, subject: str | int) -> str:
        text = str(subject).strip()
        m = re.fullmatch(r"(?:mesa-sleep-)?(\d+)", text)
        return f"{int(m.group(1)):04d}" if m else text

    def subjects(self) -> list[str]:
        folder = self.root / EDF_DIR
        if not folder.is_dir():
            there = sorted(p.name for p in self.root.iterdir())
            raise DataError(
                f"mesa: no EDF folder {folder}; is dataset.root the MESA download (the folder holding "
                f"polysomnography/)? Found in {self.root}: {there}"
            )
        ids = [m.group(1) for p in folder.iterdir() if (m := _SUBJECT_RE.match(p.name))]
        return sorted(self.normalise_subject_id(i) for i in ids)

    def edf_path(self, subject: str) -> Path:
        return self.root / EDF_DIR / f"mesa-sleep-{subject}.edf"

    def nsrr_xml_path(self, subject: str) -> Path:
        return self.root / NSRR_XML_DIR / f"mesa-sleep-{subject}-nsrr.xml"

    def profusion_xml_path(self, subject: str) -> Path:
        return self.root / PROFUSION_XML_DIR / f"mesa-sleep-{subject}-profusion.xml"

    def actigraphy_path(self, subject: str) -> Path:
        return self.root / ACTIGRAPHY_DIR / f"mesa-sleep-{subject}.csv"

    # ---------------------------------------------------------------- loading
    def load(self, subject: str | int) -> NightRecord:
        sid = self.normalise_subject_id(subject)
        edf_path = self.edf_path(sid)
        if not edf_path.exists():
            self.check_subject(sid)  # raises with the list of subjects
        ecg, hr, duration_s, start_clock = self._read_edf(edf_path)
        n_epochs = int(duration_s // EPOCH_S)
        codes, stage_file, issues = self._read_stages(sid, n_epochs)
        labels, unknown = map_stage_codes(codes, "nsrr")
        record = NightRecord(
            subject=sid,
            dataset=self.name,
            stage_codes=codes,
            labels=labels,
            unknown_stage_codes=unknown,
            ecg=ecg,
            hr=hr,
            recording_start=start_clock,
            source_files={"edf": str(edf_path), "stages": str(stage_file)},
        )
        record.issues.update(issues)
        if "activity" in self.modalities:
            record.activity_counts = self._read_activity(sid, n_epochs, record)
        return record

    def _read_edf(self, path: Path) -> tuple[RegularSignal | None, RegularSignal | None, float, str | None]:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                edf = edfio.read_edf(path, lazy_load_data=True)
            truncation = [str(w.message) for w in caught if "data record" in str(w.message)]
            if truncation and not self.allow_truncated_edf:
                raise DataError(f"{path}: the EDF is truncated ({'; '.join(truncation)}). Re-download it, or set "
                                f"dataset.reader.allow_truncated_edf=true to use the part that is there")
            labels = _channel_labels(edf)
            duration_s = float(edf.num_data_records * edf.data_record_duration)
            start_clock = edf.starttime.strftime("%H:%M:%S") if edf.starttime is not None else None
        except DataError:
            raise
        except Exception as err:  # edfio raises ValueError/OSError/... on corrupt headers
            raise DataError(f"{path}: cannot read the EDF header ({type(err).__name__}: {err}); the file is corrupt "
                            f"or not an EDF, re-download it") from err
        wanted = {"ecg": self.ecg_channel, "hr": self.hr_channel}
        out: dict[str, RegularSignal | None] = {"ecg": None, "hr": None}
        for modality, channel in wanted.items():
            if modality not in self.modalities:
                continue
            if channel not in labels:
                raise DataError(
                    f"{path}: no channel {channel!r} for modality {modality!r}; channels in the file: {labels}. "
                    f"Set dataset.{modality}_channel to the right label, or drop {modality!r} from dataset.modalities."
                )
            signal = edf.signals[labels.index(channel)]
            try:
                data = np.asarray(signal.data, dtype=np.float32)
            except Exception as err:
                raise DataError(f"{path}: channel {channel!r} cannot be read ({type(err).__name__}: {err}); "
                                f"the file is truncated or corrupt, re-download it") from err
            expected = int(round(signal.sampling_frequency * duration_s))
            if len(data) < expected:
                raise DataError(f"{path}: channel {channel!r} has {len(data)} samples, the header promises "
                                f"{expected}; the file is truncated, re-download it")
            out[modality] = RegularSignal(data=data, sfreq_hz=float(signal.sampling_frequency))
        return out["ecg"], out["hr"], duration_s, start_clock

    def _read_stages(self, sid: str, n_epochs: int) -> tuple[np.ndarray, Path, dict[str, int]]:
        nsrr, prof = self.nsrr_xml_path(sid), self.profusion_xml_path(sid)
        if self.annotations in ("nsrr", "auto") and nsrr.exists():
            codes, issues = read_nsrr_stages(nsrr, n_epochs)
            return codes, nsrr, issues
        if self.annotations in ("profusion", "auto") and prof.exists():
            codes, issues = read_profusion_stages(prof, n_epochs)
            return codes, prof, issues
        tried = [str(p) for p, k in ((nsrr, "nsrr"), (prof, "profusion")) if self.annotations in (k, "auto")]
        raise DataError(f"mesa: no stage annotations for subject {sid}: none of {tried} exists. Download the "
                        f"annotations-events-nsrr (or -profusion) folder next to the EDFs.")

    @cached_property
    def _overlap(self) -> pd.DataFrame:
        path = self.root / OVERLAP_FILE
        if not path.exists():
            raise DataError(f"mesa: actigraphy overlap file {path} is missing; download overlap/ from the NSRR, "
                            f"or drop 'activity' from dataset.modalities")
        df = pd.read_csv(path)
        cols = {c.lower().strip(): c for c in df.columns}
        if "mesaid" not in cols or "line" not in cols:
            raise DataError(f"{path}: needs columns 'mesaid' and 'line'; found {list(df.columns)}")
        return df.rename(columns={cols["mesaid"]: "mesaid", cols["line"]: "line"})

    def _read_activity(self, sid: str, n_epochs: int, record: NightRecord) -> np.ndarray:
        path = self.actigraphy_path(sid)
        overlap = self._overlap
        rows = overlap.loc[overlap["mesaid"] == int(sid), "line"]
        if rows.empty:
            raise DataError(f"mesa: subject {sid} is not in the overlap file {self.root / OVERLAP_FILE}, so its "
                            f"actigraphy cannot be aligned to the PSG; drop 'activity' from dataset.modalities or "
                            f"exclude the subject")
        if not path.exists():
            raise DataError(f"mesa: actigraphy file {path} is missing; download actigraphy/ from the NSRR or drop "
                            f"'activity' from dataset.modalities")
        start_line = int(rows.iloc[0])
        record.source_files["actigraphy"] = str(path)
        return read_actigraphy_counts(path, start_line, n_epochs)


def _text(elem: ET.Element, tag: str) -> str | None:
    child = elem.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(f"{path}: malformed XML ({err}); the file is truncated or corrupt, re-download it") from err


def read_nsrr_stages(path: Path, n_epochs: int) -> tuple[np.ndarray, dict[str, int]]:
    """Per-epoch raw stage codes from an NSRR XML (``MASKED`` where no stage event covers an epoch).

    Consecutive epochs of one stage are one event of Duration k x 30 s; they are expanded. Returns the
    codes and counted issues (``stage_epochs_past_recording``, ``stage_overlap_conflicts``).
    """
    root = _parse_xml(path)
    events = root.find("ScoredEvents")
    if events is None:
        raise DataError(f"{path}: no <ScoredEvents> element; not an NSRR annotation file")
    epoch_len = float(_text(root, "EpochLength") or EPOCH_S)
    if abs(epoch_len - EPOCH_S) > 1e-6:
        raise DataError(f"{path}: EpochLength {epoch_len} s, expected {EPOCH_S}; re-score or resample the labels")
    codes = np.full(n_epochs, MASKED, dtype=np.int64)
    written = np.zeros(n_epochs, dtype=bool)
    issues = {"stage_epochs_past_recording": 0, "stage_overlap_conflicts": 0}
    n_stage_events = 0
    for ev in events.iter("ScoredEvent"):
        etype = _text(ev, "EventType") or ""
        if not etype.lower().startswith("stages"):
            continue
        concept = _text(ev, "EventConcept") or ""
        try:
            code = int(concept.rsplit("|", 1)[1])
            start_s = float(_text(ev, "Start") or "nan")
            dur_s = float(_text(ev, "Duration") or "nan")
        except (IndexError, ValueError):
            raise DataError(f"{path}: stage event with EventConcept={concept!r} Start/Duration unreadable; "
                            f"expected like 'Stage 2 sleep|2' with numeric Start and Duration") from None
        n_stage_events += 1
        first = int(round(start_s / EPOCH_S))
        last = first + int(round(dur_s / EPOCH_S))  # exclusive
        if last > n_epochs:
            issues["stage_epochs_past_recording"] += last - max(first, n_epochs)
        lo, hi = max(first, 0), min(last, n_epochs)
        if hi <= lo:
            continue
        clash = written[lo:hi] & (codes[lo:hi] != code)
        if clash.any():
            # Two stage events disagree about an epoch: never guess, mask it.
            issues["stage_overlap_conflicts"] += int(clash.sum())
        seg = codes[lo:hi]
        seg[~written[lo:hi]] = code
        seg[clash] = MASKED
        written[lo:hi] = True
    if n_stage_events == 0:
        raise DataError(f"{path}: no sleep-stage events (EventType 'Stages|Stages'); the night is not scored, "
                        f"use the Profusion file (dataset.annotations=profusion) or exclude the subject")
    return codes, issues


def read_profusion_stages(path: Path, n_epochs: int) -> tuple[np.ndarray, dict[str, int]]:
    """Per-epoch raw stage codes from a Profusion XML (``CMPStudyConfig/SleepStages``)."""
    root = _parse_xml(path)
    stages = root.find("SleepStages")
    if stages is None:
        raise DataError(f"{path}: no <SleepStages> element; not a Profusion annotation file")
    try:
        values = np.array([int((s.text or "").strip()) for s in stages.iter("SleepStage")], dtype=np.int64)
    except ValueError:
        raise DataError(f"{path}: a <SleepStage> is not an integer; the file is corrupt") from None
    if values.size == 0:
        raise DataError(f"{path}: <SleepStages> is empty; the night is not scored")
    codes = np.full(n_epochs, MASKED, dtype=np.int64)
    k = min(n_epochs, len(values))
    codes[:k] = values[:k]
    return codes, {"stage_epochs_past_recording": max(0, len(values) - n_epochs), "stage_overlap_conflicts": 0}


def read_actigraphy_counts(path: Path, start_line: int, n_epochs: int) -> np.ndarray:
    """Activity counts per PSG epoch (float32, NaN where EXCLUDED, off-wrist or absent).

    Actigraphy line ``start_line`` is PSG epoch 0 (from the overlap file); one line per 30 s.
    """
    try:
        df = pd.read_csv(path, usecols=lambda c: c.strip().lower() in {"line", "activity", "interval", "offwrist"})
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot read the actigraphy CSV ({err}); the file is corrupt, re-download it") from err
    df.columns = [c.strip().lower() for c in df.columns]
    if "line" not in df or "activity" not in df:
        raise DataError(f"{path}: needs columns 'line' and 'activity'; found {list(df.columns)}")
    counts = np.full(n_epochs, np.nan, dtype=np.float32)
    line = pd.to_numeric(df["line"], errors="coerce").to_numpy()
    activity = pd.to_numeric(df["activity"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.zeros(len(df), dtype=bool)
    if "interval" in df:
        bad |= df["interval"].astype(str).str.strip().str.upper().eq("EXCLUDED").to_numpy()
    if "offwrist" in df:
        bad |= pd.to_numeric(df["offwrist"], errors="coerce").fillna(0).to_numpy() > 0
    activity[bad] = np.nan
    epoch = line - start_line
    ok = np.isfinite(epoch) & (epoch >= 0) & (epoch < n_epochs)
    counts[epoch[ok].astype(np.int64)] = activity[ok]
    return counts
