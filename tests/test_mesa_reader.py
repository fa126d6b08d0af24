"""MESA reader on tiny trees in the NSRR layout, including broken inputs."""

from __future__ import annotations

import numpy as np
import pytest

from fm_bio.data.labels import MASKED
from fm_bio.data.records import DataError
from fm_bio.data.sources import MesaSource
from tests.factories import STAGES_A, nsrr_xml, write_mesa_subject


def test_reads_ecg_hr_stages_and_aligned_activity(mesa_tree):
    src = MesaSource(mesa_tree)
    assert src.subjects() == ["0001", "0002"]
    rec = src.load(1)  # int ids are normalised to the zero-padded form
    assert rec.subject == "0001" and rec.n_epochs == len(STAGES_A)
    assert rec.stage_codes.tolist() == [c if c != 9 else 9 for c in STAGES_A]
    assert rec.labels[0] == MASKED and rec.labels[-1] == MASKED  # unscored (9) and movement (6)
    assert rec.ecg is not None and rec.ecg.sfreq_hz == 256 and len(rec.ecg.data) == len(STAGES_A) * 30 * 256
    assert rec.hr is not None and rec.hr.sfreq_hz == 1
    # actigraphy line 100 is PSG epoch 0; the factory writes 10 * (epoch % 7) counts
    assert rec.activity_counts.tolist() == [10.0 * (e % 7) for e in range(len(STAGES_A))]
    assert rec.recording_start == "22:00:00"


def test_reads_only_requested_channels(mesa_tree):
    rec = MesaSource(mesa_tree, modalities=("hr",)).load("0001")
    assert rec.ecg is None and rec.activity_counts is None and rec.hr is not None


def test_missing_channel_names_file_and_lists_channels(tmp_path):
    write_mesa_subject(tmp_path, 3, STAGES_A, channels=("HR", "SpO2"))
    with pytest.raises(DataError, match=r"mesa-sleep-0003\.edf.*no channel 'EKG'.*\['HR', 'SpO2'\]"):
        MesaSource(tmp_path).load(3)


def test_configurable_channel_name(tmp_path):
    write_mesa_subject(tmp_path, 3, STAGES_A, channels=("EKG", "HR"))
    (tmp_path / "polysomnography/edfs/mesa-sleep-0003.edf")  # labels are EKG/HR; ask for a different HR label
    with pytest.raises(DataError, match="no channel 'Pulse'"):
        MesaSource(tmp_path, hr_channel="Pulse").load(3)


def test_missing_subject_lists_available(mesa_tree):
    with pytest.raises(DataError, match=r"'0042' not found.*0001, 0002"):
        MesaSource(mesa_tree).load(42)


def test_truncated_edf_is_a_clear_error(mesa_tree):
    edf = mesa_tree / "polysomnography/edfs/mesa-sleep-0001.edf"
    data = edf.read_bytes()
    edf.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"mesa-sleep-0001\.edf.*truncated.*allow_truncated_edf"):
        MesaSource(mesa_tree).load(1)
    rec = MesaSource(mesa_tree, allow_truncated_edf=True).load(1)  # tolerance asked for: the part that is there
    assert 0 < rec.n_epochs < len(STAGES_A)


def test_garbage_edf_is_a_clear_error(mesa_tree):
    (mesa_tree / "polysomnography/edfs/mesa-sleep-0001.edf").write_bytes(b"not an edf at all" * 20)
    with pytest.raises(DataError, match=r"mesa-sleep-0001\.edf.*(corrupt|EDF)"):
        MesaSource(mesa_tree).load(1)


def test_malformed_xml(mesa_tree):
    xml = mesa_tree / "polysomnography/annotations-events-nsrr/mesa-sleep-0001-nsrr.xml"
    xml.write_text(xml.read_text()[:300])
    with pytest.raises(DataError, match=r"nsrr\.xml: malformed XML"):
        MesaSource(mesa_tree).load(1)


def test_xml_without_stage_events(mesa_tree):
    xml = mesa_tree / "polysomnography/annotations-events-nsrr/mesa-sleep-0001-nsrr.xml"
    xml.write_text(nsrr_xml([], 600.0))
    with pytest.raises(DataError, match="no sleep-stage events"):
        MesaSource(mesa_tree).load(1)


def test_profusion_fallback_gives_the_same_stages(mesa_tree):
    (mesa_tree / "polysomnography/annotations-events-nsrr/mesa-sleep-0001-nsrr.xml").unlink()
    rec = MesaSource(mesa_tree).load(1)
    assert rec.stage_codes.tolist() == STAGES_A
    assert rec.source_files["stages"].endswith("profusion.xml")
    with pytest.raises(DataError, match="no stage annotations"):
        MesaSource(mesa_tree, annotations="nsrr").load(1)


def test_stage_events_past_recording_and_overlaps_are_counted_and_masked(mesa_tree):
    xml = mesa_tree / "polysomnography/annotations-events-nsrr/mesa-sleep-0001-nsrr.xml"
    extra = ("<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>REM sleep|5</EventConcept>"
             "<Start>30.0</Start><Duration>60.0</Duration></ScoredEvent>"  # overlaps wake epochs 1-2
             "<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Wake|0</EventConcept>"
             "<Start>570.0</Start><Duration>90.0</Duration></ScoredEvent>")  # 2 epochs past the end
    xml.write_text(nsrr_xml(STAGES_A, 600.0, extra_events=extra))
    rec = MesaSource(mesa_tree).load(1)
    assert rec.issues["stage_overlap_conflicts"] == 3  # epochs 1, 2 (wake vs REM) and 19 (movement vs wake)
    assert rec.labels[1] == MASKED and rec.labels[2] == MASKED and rec.labels[19] == MASKED
    assert rec.issues["stage_epochs_past_recording"] == 2
    assert rec.n_epochs == 20


def test_excluded_actigraphy_is_nan(tmp_path):
    write_mesa_subject(tmp_path, 5, STAGES_A, excluded_epochs=(3, 4))
    counts = MesaSource(tmp_path).load(5).activity_counts
    assert np.isnan(counts[3]) and np.isnan(counts[4]) and np.isfinite(np.delete(counts, [3, 4])).all()


def test_subject_missing_from_overlap_file(mesa_tree):
    ov = mesa_tree / "overlap/mesa-actigraphy-psg-overlap.csv"
    ov.write_text("\n".join(line for line in ov.read_text().splitlines() if not line.startswith("1,")) + "\n")
    with pytest.raises(DataError, match="not in the overlap file"):
        MesaSource(mesa_tree).load(1)
    assert MesaSource(mesa_tree, modalities=("ecg", "hr")).load(1).activity_counts is None


def test_wrong_root_says_what_is_there(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(DataError, match=r"no EDF folder.*something"):
        MesaSource(tmp_path).subjects()
