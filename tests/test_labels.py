import numpy as np
import pytest

from fm_bio.data.labels import (
    MASKED,
    NSRR_CODES,
    SLEEP_ACCEL_CODES,
    SleepStage,
    count_labels,
    map_stage_codes,
)


def test_sleep_accel_mapping_every_code():
    codes = np.array([-1, 0, 1, 2, 3, 4, 5])
    labels, unknown = map_stage_codes(codes, "sleep_accel")
    assert labels.tolist() == [MASKED, 0, 1, 1, 2, 2, 3]
    assert unknown == {}
    assert set(SLEEP_ACCEL_CODES) == {-1, 0, 1, 2, 3, 4, 5}


def test_nsrr_mapping_every_code_and_masks_movement_unscored():
    codes = np.array([0, 1, 2, 3, 4, 5, 6, 9])
    labels, unknown = map_stage_codes(codes, "nsrr")
    assert labels.tolist() == [SleepStage.WAKE, SleepStage.LIGHT, SleepStage.LIGHT, SleepStage.DEEP, SleepStage.DEEP,
                               SleepStage.REM, MASKED, MASKED]
    assert unknown == {}
    assert NSRR_CODES[6] == MASKED and NSRR_CODES[9] == MASKED


def test_unknown_codes_are_masked_and_counted_never_guessed():
    labels, unknown = map_stage_codes(np.array([2, 7, 7, 8, 2]), "nsrr")
    assert labels.tolist() == [1, MASKED, MASKED, MASKED, 1]
    assert unknown == {7: 2, 8: 1}


def test_count_labels_keys_and_totals():
    counts = count_labels(np.array([0, 1, 1, 2, 3, -1, -1]))
    assert counts == {"wake": 1, "light": 2, "deep": 1, "rem": 1, "unscored": 2}


def test_unknown_scheme_lists_options():
    with pytest.raises(ValueError, match="options"):
        map_stage_codes(np.array([0]), "edf+")
