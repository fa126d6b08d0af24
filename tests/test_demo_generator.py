"""Tests of the embedded demo-data generator (fm_bio.demo): layouts, formats, realism, determinism."""

from __future__ import annotations

import csv
import datetime as dt
import filecmp
import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from fm_bio.demo import generate as gen
from fm_bio.demo import physiology as phys
from fm_bio.demo.hypnogram import N1, N2, N3, N4, REM, WAKE, simulate_hypnogram, stage_fractions

log = logging.getLogger(__name__)

MESA_KW = {"n_subjects": 3, "seed": 0, "night_hours": (2.5, 3.0)}
ACCEL_KW = {"n_subjects": 3, "seed": 1, "night_hours": (2.0, 2.5)}
ACTIGRAPHY_HEADER = ("mesaid,line,linetime,offwrist,activity,marker,whitelight,redlight,greenlight,bluelight,"
                     "wake,interval,dayofweek,daybymidnight,daybynoon")


@pytest.fixture(scope="module")
def demo_mesa(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("mesa") / "mesa"
    ids = gen.generate_mesa_demo(out, **MESA_KW)
    return out, ids


@pytest.fixture(scope="module")
def demo_accel(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("accel") / "sleep-accel"
    ids = gen.generate_sleep_accel_demo(out, **ACCEL_KW)
    return out, ids


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _nsrr_stage_codes(xml_path: Path) -> tuple[np.ndarray, ET.Element]:
    root = ET.parse(xml_path).getroot()
    codes = []
    for ev in root.find("ScoredEvents"):
        if ev.findtext("EventType") == "Stages|Stages":
            code = int(ev.findtext("EventConcept").split("|")[1])
            codes += [code] * int(round(float(ev.findtext("Duration")) / 30))
    return np.array(codes), root


# ------------------------------------------------------------------------------------ determinism
def test_mesa_same_seed_gives_identical_files_whatever_n_jobs(demo_mesa, tmp_path):
    out, ids = demo_mesa
    again = tmp_path / "mesa"
    assert gen.generate_mesa_demo(again, n_jobs=2, **MESA_KW) == ids
    assert _files(out) == _files(again)
    match, mismatch, errors = filecmp.cmpfiles(out, again, _files(out), shallow=False)
    assert not mismatch and not errors


def test_mesa_other_seed_differs(demo_mesa, tmp_path):
    out, _ = demo_mesa
    other = tmp_path / "other"
    gen.generate_mesa_demo(other, n_subjects=1, seed=5, night_hours=MESA_KW["night_hours"])
    name = "polysomnography/edfs/mesa-sleep-0001.edf"
    assert (out / name).read_bytes() != (other / name).read_bytes()


def test_sleep_accel_determinism(demo_accel, tmp_path):
    out, ids = demo_accel
    again = tmp_path / "again"
    assert gen.generate_sleep_accel_demo(again, **ACCEL_KW) == ids
    _, mismatch, errors = filecmp.cmpfiles(out, again, _files(out), shallow=False)
    assert not mismatch and not errors
    other_ids = gen.generate_sleep_accel_demo(tmp_path / "other", **{**ACCEL_KW, "seed": 2})
    assert other_ids != ids


# ------------------------------------------------------------------------------------ MESA layout
def test_mesa_layout(demo_mesa):
    out, ids = demo_mesa
    assert ids == ["0001", "0002", "0003"]
    for sid in ids:
        for rel in (f"polysomnography/edfs/mesa-sleep-{sid}.edf",
                    f"polysomnography/annotations-events-nsrr/mesa-sleep-{sid}-nsrr.xml",
                    f"polysomnography/annotations-events-profusion/mesa-sleep-{sid}-profusion.xml",
                    f"actigraphy/mesa-sleep-{sid}.csv"):
            assert (out / rel).is_file(), rel
    assert (out / "overlap/mesa-actigraphy-psg-overlap.csv").is_file()
    assert (out / "datasets/mesa-sleep-dataset-0.7.0.csv").is_file()


def test_mesa_edf_channels_and_header(demo_mesa):
    import edfio

    out, ids = demo_mesa
    zeros = 0
    for sid in ids:
        edf = edfio.read_edf(out / f"polysomnography/edfs/mesa-sleep-{sid}.edf")
        sig = {s.label: s for s in edf.signals}
        assert {"EKG", "HR", "SpO2", "Thor"} <= set(sig)
        assert sig["EKG"].sampling_frequency == 256 and sig["EKG"].physical_dimension == "mV"
        assert sig["HR"].sampling_frequency == 1 and sig["HR"].physical_dimension == "bpm"
        assert sig["Thor"].sampling_frequency == 32
        assert edf.data_record_duration == 1
        hr = sig["HR"].data
        assert np.allclose(hr, np.round(hr))  # integer bpm, as an oximeter reports it
        zeros += int((hr == 0).sum())
        good = hr[hr > 0]
        assert 35 < good.mean() < 110
        _, root = _nsrr_stage_codes(out / f"polysomnography/annotations-events-nsrr/mesa-sleep-{sid}-nsrr.xml")
        first = root.find("ScoredEvents")[0]
        clock = first.findtext("ClockTime").split()[1]
        assert dt.datetime.strptime(clock, "%H.%M.%S").time() == edf.starttime
        assert float(first.findtext("Duration")) == pytest.approx(edf.duration)
        assert 21 <= edf.starttime.hour <= 23
    assert zeros > 0  # oximeter dropouts


def test_mesa_nsrr_xml_format(demo_mesa):
    out, ids = demo_mesa
    for sid in ids:
        path = out / f"polysomnography/annotations-events-nsrr/mesa-sleep-{sid}-nsrr.xml"
        raw = path.read_bytes()
        assert b"\r\n" in raw and raw.count(b"\n") == raw.count(b"\r\n")  # CRLF only
        codes, root = _nsrr_stage_codes(path)
        assert root.tag == "PSGAnnotation"
        assert root.findtext("SoftwareVersion") and root.findtext("EpochLength") == "30"
        events = list(root.find("ScoredEvents"))
        first = events[0]
        assert first.findtext("EventConcept") == "Recording Start Time"
        assert (first.findtext("EventType") or "") == ""
        assert float(first.findtext("Start")) == 0
        duration = float(first.findtext("Duration"))
        assert first.findtext("Duration").endswith(".0")
        # Stage events: contiguous from 0, merged (no two neighbours with the same concept), k x 30 s.
        stages = [e for e in events if e.findtext("EventType") == "Stages|Stages"]
        t = 0.0
        for a, b in zip(stages[:-1], stages[1:], strict=True):
            assert a.findtext("EventConcept") != b.findtext("EventConcept")
        for e in stages:
            assert float(e.findtext("Start")) == t
            d = float(e.findtext("Duration"))
            assert d % 30 == 0 and d > 0
            t += d
        assert len(codes) == int(duration // 30)
        concepts = {e.findtext("EventConcept") for e in stages}
        assert concepts <= {"Wake|0", "Stage 1 sleep|1", "Stage 2 sleep|2", "Stage 3 sleep|3", "Stage 4 sleep|4",
                            "REM sleep|5", "Unscored|9"}
        # Other events interleaved in time order, with fractional times.
        types = {e.findtext("EventType") for e in events[1:]}
        assert {"Arousals|Arousals", "Respiratory|Respiratory"} <= types
        starts = [float(e.findtext("Start")) for e in events[1:]]
        assert starts == sorted(starts)
        others = [e for e in events[1:] if e.findtext("EventType") != "Stages|Stages"]
        assert any(float(e.findtext("Start")) % 1 for e in others)
        desat = [e for e in others if e.findtext("EventConcept") == "SpO2 desaturation|SpO2 desaturation"]
        assert desat and all(float(e.findtext("SpO2Nadir")) < float(e.findtext("SpO2Baseline")) for e in desat)


def test_mesa_profusion_agrees_with_nsrr(demo_mesa):
    out, ids = demo_mesa
    for sid in ids:
        codes, _ = _nsrr_stage_codes(out / f"polysomnography/annotations-events-nsrr/mesa-sleep-{sid}-nsrr.xml")
        root = ET.parse(out / f"polysomnography/annotations-events-profusion/mesa-sleep-{sid}-profusion.xml").getroot()
        assert root.tag == "CMPStudyConfig" and root.findtext("EpochLength") == "30"
        prof = np.array([int(e.text) for e in root.find("SleepStages").findall("SleepStage")])
        np.testing.assert_array_equal(prof, codes)


def test_mesa_actigraphy_and_overlap(demo_mesa):
    import pandas as pd

    out, ids = demo_mesa
    overlap = pd.read_csv(out / "overlap/mesa-actigraphy-psg-overlap.csv")
    assert list(overlap.columns[:2]) == ["mesaid", "line"]
    assert sorted(overlap.mesaid) == [int(s) for s in ids]
    wake_counts, sleep_counts, excluded_in_night = [], [], 0
    for sid in ids:
        path = out / f"actigraphy/mesa-sleep-{sid}.csv"
        assert path.read_text().splitlines()[0] == ACTIGRAPHY_HEADER
        act = pd.read_csv(path)
        assert (act.mesaid == int(sid)).all()
        np.testing.assert_array_equal(act.line, np.arange(1, len(act) + 1))
        assert len(act) > 2 * 2880 * 0.9  # about two days or more
        secs = [sum(int(x) * m for x, m in zip(s.split(":"), (3600, 60, 1), strict=True)) for s in act.linetime]
        assert set(np.diff(secs) % 86400) == {30}
        assert set(act.interval) <= {"ACTIVE", "REST", "REST-S", "EXCLUDED"}
        ex = act.interval == "EXCLUDED"
        assert act.loc[ex, ["activity", "whitelight", "redlight", "greenlight", "bluelight"]].isna().all().all()
        assert act.loc[~ex, "activity"].notna().all()
        assert set(act.offwrist) <= {0, 1} and set(act.wake.dropna()) <= {0, 1}
        # Overlap: actigraphy line `line` is PSG epoch 0, at the PSG start clock time.
        row = overlap[overlap.mesaid == int(sid)].iloc[0]
        line = int(row.line)
        assert act.linetime[line - 1] == row.linetime
        assert dt.datetime.strptime(row.linetime, "%H:%M:%S").time() == \
            dt.datetime.strptime(row.starttime_psg, "%H:%M:%S").time()
        codes, _ = _nsrr_stage_codes(out / f"polysomnography/annotations-events-nsrr/mesa-sleep-{sid}-nsrr.xml")
        night = act.iloc[line - 1: line - 1 + len(codes)]
        assert len(night) == len(codes)
        excluded_in_night += int((night.interval == "EXCLUDED").sum())
        c = night.activity.to_numpy()
        wake_counts += list(c[(codes == 0) & ~np.isnan(c)])
        sleep_counts += list(c[np.isin(codes, [2, 3, 4, 5]) & ~np.isnan(c)])
        assert (night.interval == "ACTIVE").mean() < 0.2
    assert 0 < excluded_in_night < 10  # one subject has a short off-wrist stretch in the PSG night
    assert np.mean(wake_counts) > 4 * np.mean(sleep_counts)
    assert np.median(sleep_counts) == 0


def test_mesa_covariates(demo_mesa):
    out, ids = demo_mesa
    with open(out / "datasets/mesa-sleep-dataset-0.7.0.csv") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[0] == "mesaid" and header[3] == "gender1" and header[5] == "sleepage5c"
    assert [int(r["mesaid"]) for r in rows] == [int(s) for s in ids]
    for r in rows:
        assert r["gender1"] in {"0", "1"} and 54 <= int(r["sleepage5c"]) <= 95


# -------------------------------------------------------------------------------------- realism
def _cohort_traits(n: int, cohort: str, seed: int = 123) -> list[phys.SubjectTraits]:
    return [phys.draw_traits(np.random.default_rng([seed, i]), cohort) for i in range(n)]


def test_stage_proportions_are_realistic():
    rows = []
    for cohort in ("mesa", "apple_watch"):
        for i, traits in enumerate(_cohort_traits(30, cohort)):
            rng = np.random.default_rng([7, i])
            n = int(rng.uniform(6.5, 8.5) * 120)
            stages = simulate_hypnogram(n, traits.sleep, rng)
            fr = stage_fractions(stages)
            rows.append([fr["wake"], fr["light"], fr["deep"], fr["rem"]])
            # Architecture: deep sleep early, REM late.
            half = n // 2
            assert np.isin(stages[:half], [N3, N4]).sum() >= np.isin(stages[half:], [N3, N4]).sum()
            assert (stages[half:] == REM).sum() >= (stages[:half] == REM).sum()
    fr = np.array(rows)
    mean = fr.mean(axis=0)
    log.info("stage fractions, mean over %d nights: wake %.3f light %.3f deep %.3f rem %.3f", len(fr), *mean)
    print("stage fractions (wake, light, deep, rem): mean", mean.round(3), "min", fr.min(0).round(3),
          "max", fr.max(0).round(3))
    assert 0.15 <= mean[0] <= 0.25
    assert 0.50 <= mean[1] <= 0.60
    assert 0.08 <= mean[2] <= 0.15
    assert 0.15 <= mean[3] <= 0.22
    # Every night is plausible on its own.
    assert (fr[:, 0] > 0.03).all() and (fr[:, 0] < 0.45).all()
    assert (fr[:, 2] > 0.02).all() and (fr[:, 3] > 0.05).all()


def test_stage_dependent_heart_rate():
    means = []
    for i, traits in enumerate(_cohort_traits(12, "mesa", seed=9)):
        rng = np.random.default_rng([11, i])
        stages = simulate_hypnogram(int(7.5 * 120), traits.sleep, rng)
        night = phys.simulate_night(stages, traits, rng)
        b = night.beat_times_s
        rr = np.diff(b)
        ep = np.minimum((b[1:] // 30).astype(int), len(stages) - 1)
        code = stages[ep]
        per = {}
        for name, codes in (("wake", [WAKE]), ("light", [N1, N2]), ("deep", [N3, N4]), ("rem", [REM])):
            m = np.isin(code, codes)
            per[name] = 60.0 / rr[m].mean()
        # Beat-to-beat variability in deep sleep lower than in REM (median within-epoch SD of RR).
        sd = {}
        for name, codes in (("deep", [N3, N4]), ("rem", [REM])):
            eps = np.flatnonzero(np.isin(stages, codes))
            sd[name] = np.median([rr[ep == e].std() for e in eps if (ep == e).sum() > 10])
        per["sd_deep_ms"], per["sd_rem_ms"] = 1000 * sd["deep"], 1000 * sd["rem"]
        means.append(per)
    avg = {k: np.mean([m[k] for m in means]) for k in means[0]}
    print("mean HR by stage (bpm):", {k: round(v, 1) for k, v in avg.items()})
    assert avg["wake"] > avg["rem"] > avg["light"] > avg["deep"]
    ordered = sum(m["wake"] > m["rem"] > m["light"] > m["deep"] for m in means)
    assert ordered >= 0.75 * len(means)
    assert avg["sd_rem_ms"] > avg["sd_deep_ms"]


def test_subjects_differ_in_resting_hr_and_ecg():
    traits = _cohort_traits(20, "mesa")
    assert np.ptp([t.resting_hr_bpm for t in traits]) > 15
    assert np.ptp([t.ecg.r_amplitude_mv for t in traits]) > 0.5


def test_rpeak_detection_recovers_simulated_beats():
    import sleepecg

    subj = gen.simulate_mesa_subject(0, seed=0, night_hours=(2.0, 2.0))
    ecg, fs = subj.ekg_mv.astype(np.float64), gen.ECG_SFREQ_HZ
    true = subj.night.beat_times_s
    true = true[(true >= 0) & (true < subj.night.duration_s)]
    det = sleepecg.detect_heartbeats(ecg, fs) / fs
    idx = np.clip(np.searchsorted(true, det), 1, len(true) - 1)
    err = np.minimum(np.abs(det - true[idx - 1]), np.abs(det - true[idx]))
    assert (err < 0.05).mean() > 0.98
    assert abs(len(det) - len(true)) < 0.02 * len(true)
    # Mean heart rate per 5 minutes: detected vs simulated vs the oximeter channel.
    for a in range(0, int(subj.night.duration_s) - 300, 300):
        hr_true = 60 / np.diff(true[(true >= a) & (true < a + 300)]).mean()
        hr_det = 60 / np.diff(det[(det >= a) & (det < a + 300)]).mean()
        assert abs(hr_det - hr_true) < 3
        ox = subj.hr_bpm[a:a + 300]
        assert abs(ox[ox > 0].mean() - hr_true) < 3


def test_rpeaks_found_by_neurokit2_too():
    import neurokit2 as nk

    subj = gen.simulate_mesa_subject(2, seed=0, night_hours=(0.5, 0.5))
    seg = subj.ekg_mv[: 600 * gen.ECG_SFREQ_HZ].astype(np.float64)
    _, info = nk.ecg_peaks(seg, sampling_rate=gen.ECG_SFREQ_HZ)
    peaks = np.asarray(info["ECG_R_Peaks"]) / gen.ECG_SFREQ_HZ
    true = subj.night.beat_times_s
    true = true[(true >= 0) & (true < 600)]
    assert abs(60 / np.diff(peaks).mean() - 60 / np.diff(true).mean()) < 3


# ---------------------------------------------------------------------------- sleep-accel layout
def test_sleep_accel_layout_and_formats(demo_accel):
    out, ids = demo_accel
    assert len(ids) == 3 and all(len(s) == 7 and s.isdigit() for s in ids)
    without = [s for s in ids if not (out / "motion" / f"{s}_acceleration.txt").exists()]
    assert without == [ids[-1]]
    assert not (out / "steps" / f"{ids[-1]}_steps.txt").exists()
    any_unsorted = any_dup = False
    for sid in ids:
        lines = (out / "heart_rate" / f"{sid}_heartrate.txt").read_text().splitlines()
        assert all(line.count(",") == 1 and " " not in line for line in lines)
        hr = np.array([[float(x) for x in line.split(",")] for line in lines])
        t = hr[:, 0]
        assert t[0] < -0.5 * 86400  # starts days before the night
        assert np.allclose(hr[:, 1], np.round(hr[:, 1])) and 35 <= hr[:, 1].min() and hr[:, 1].max() <= 200
        any_unsorted |= bool((np.diff(t) < 0).any())
        any_dup |= len(np.unique(t)) < len(t)
        labels = [line.split(" ") for line in (out / "labels" / f"{sid}_labeled_sleep.txt").read_text().splitlines()]
        lt = np.array([int(a) for a, _ in labels])
        codes = np.array([int(b) for _, b in labels])
        np.testing.assert_array_equal(lt, 30 * np.arange(len(lt)))
        assert set(codes) <= {-1, 0, 1, 2, 3, 4, 5}
        ts = np.sort(np.unique(t))
        night = ts[(ts >= 0) & (ts <= lt[-1])]
        assert 4.0 <= np.median(np.diff(night)) <= 6.0
        assert t.max() > lt[-1]  # goes a bit past the end of the labels
        motion = out / "motion" / f"{sid}_acceleration.txt"
        if motion.exists():
            m = np.loadtxt(motion)
            assert m.shape[1] == 4 and m[0, 0] < 0 and m[-1, 0] > lt[-1]
            head = motion.read_text().splitlines()[0]
            assert len(head.split(" ")) == 4 and "," not in head
            assert 0.9 < np.median(np.linalg.norm(m[:, 1:], axis=1)) < 1.1
            assert 0.05 < np.median(np.diff(m[:, 0])) < 0.25
            # Movement by stage: wake >> sleep.
            ep = (m[:, 0] // 30).astype(int)
            ok = (ep >= 0) & (ep < len(codes))
            dev = np.abs(np.diff(m[:, 1:], axis=0)).sum(axis=1)
            st = codes[ep[1:][ok[1:]]]
            d = dev[ok[1:]]
            if (st == 0).any() and np.isin(st, [2, 3, 5]).any():
                assert d[st == 0].mean() > 2 * d[np.isin(st, [2, 3, 5])].mean()
            steps = np.loadtxt(out / "steps" / f"{sid}_steps.txt", delimiter=",")
            assert steps.shape[1] == 2 and (steps[:, 1] >= 0).all()
            in_night = (steps[:, 0] >= 0) & (steps[:, 0] < lt[-1])
            day = (steps[:, 0] < -3 * 3600) & (steps[:, 1] > 0)
            assert np.median(steps[in_night, 1]) == 0 and steps[in_night, 1].mean() < 0.2 * steps[day, 1].mean()
    assert any_unsorted and any_dup


def test_sleep_accel_subject_hr_follows_stages():
    subj = gen.simulate_sleep_accel_subject(0, "1234567", seed=3, night_hours=(7.0, 7.0), with_motion=False)
    t, bpm = subj.hr_t_s, subj.hr_bpm
    m = (t >= 0) & (t < subj.night.duration_s)
    code = subj.stages[(t[m] // 30).astype(int)]
    wake, deep = bpm[m][code == WAKE].mean(), bpm[m][np.isin(code, [N3, N4])].mean()
    assert wake > deep + 3


# ----------------------------------------------------------------------------------- ensure + CLI
def test_ensure_demo_data_generates_once_and_redoes_incomplete(tmp_path, monkeypatch):
    out = tmp_path / "demo" / "sleep-accel"
    kw = {"n_subjects": 2, "seed": 4, "night_hours": (0.5, 0.6)}
    assert gen.ensure_demo_data("sleep_accel", out, **kw) == out.absolute()
    marker = json.loads((out / ".complete").read_text())
    assert marker["version"] == gen.GENERATOR_VERSION and marker["params"]["seed"] == 4
    assert len(marker["subjects"]) == 2
    assert not list(out.parent.glob(".sleep-accel.tmp-*"))
    first = {p: (out / p).read_bytes() for p in _files(out)}

    calls = []
    real = gen._GENERATORS["sleep_accel"]

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setitem(gen._GENERATORS, "sleep_accel", counting)
    gen.ensure_demo_data("sleep_accel", out, n_jobs=2, **kw)  # complete: nothing to do (n_jobs is not a param)
    assert calls == []
    (out / ".complete").unlink()  # as if a generation had been killed before the marker
    (out.parent / ".sleep-accel.tmp-deadbeef").mkdir()  # and left its temp folder
    gen.ensure_demo_data("sleep_accel", out, **kw)
    assert calls == [1]
    assert {p: (out / p).read_bytes() for p in _files(out)} == first
    assert not list(out.parent.glob(".sleep-accel.tmp-*"))
    gen.ensure_demo_data("sleep_accel", out, **{**kw, "seed": 5})  # other parameters: regenerated
    assert calls == [1, 1] and json.loads((out / ".complete").read_text())["params"]["seed"] == 5
    with pytest.raises(ValueError, match="options"):
        gen.ensure_demo_data("shhs", out)
    with pytest.raises(TypeError, match="unknown parameters"):
        gen.ensure_demo_data("sleep_accel", out, n_subject=2)


def test_cli_main(tmp_path):
    out = tmp_path / "cli"
    rc = gen.main(["--kind", "sleep_accel", "--out", str(out), "--n-subjects", "1", "--seed", "0",
                 "--night-hours", "0.5", "0.5"])
    assert rc == 0 and (out / ".complete").is_file() and len(list((out / "labels").iterdir())) == 1
