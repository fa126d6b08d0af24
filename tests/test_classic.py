"""The classical baseline's features."""

from __future__ import annotations

import numpy as np

from fm_bio.models.classic import WINDOWS_EPOCHS, epoch_features, make_classifier


def _arrays(n: int = 40, with_activity: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    epoch = np.delete(np.arange(n + 5), [3, 17, 18, 30, 41])  # QC gaps
    out = {"epoch_index": epoch, "hr_bpm": 60 + rng.standard_normal((len(epoch), 30)), "label": rng.integers(0, 4, len(epoch))}
    if with_activity:
        out["activity"] = rng.random((len(epoch), 1))
    return out


def test_features_shape_finite_and_time_of_night():
    a = _arrays()
    f = epoch_features(a, n_night_epochs=45)
    n_features = 5 + 2 * len(WINDOWS_EPOCHS) + 1 + 2 * len(WINDOWS_EPOCHS) + 2
    assert f.shape == (len(a["epoch_index"]), n_features) and np.isfinite(f).all()
    assert np.allclose(f[:, -2], a["epoch_index"] * 30 / 3600)  # hours since the start
    assert np.allclose(f[:, 0], a["hr_bpm"].mean(1))


def test_features_without_activity_have_the_same_columns():
    assert epoch_features(_arrays(with_activity=False), 45).shape == epoch_features(_arrays(), 45).shape


def test_window_features_see_neighbours_by_time():
    a = _arrays()
    a["hr_bpm"][:] = 60.0
    a["hr_bpm"][a["epoch_index"] == 20] = 90.0  # one high epoch
    f = epoch_features(a, 45)
    col_mean_w2 = 5  # first window feature: mean over +-2 epochs minus the night median
    near = np.isin(a["epoch_index"], [18, 19, 21, 22])
    far = np.abs(a["epoch_index"] - 20) > 2
    assert (f[near, col_mean_w2] > 0).all() and np.allclose(f[far, col_mean_w2], 0)


def test_classifier_learns_a_separable_problem():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 400)
    x = y[:, None] + 0.1 * rng.standard_normal((400, 3))
    clf = make_classifier(seed=0).fit(x[:300], y[:300])
    assert (clf.predict(x[300:]) == y[300:]).mean() > 0.95
