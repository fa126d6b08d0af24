"""Augmenter: shapes and dtypes kept, input untouched, repeatable under a seed, each transform's effect."""

from __future__ import annotations

import pytest
import torch

from fm_bio.training.augment import DEFAULT_AUGMENT, Augmenter, AugmentSettings

OFF = {"noise_std": 0.0, "scale_min": 1.0, "scale_max": 1.0, "shift_max_fraction": 0.0, "mask_max_fraction": 0.0}


def _batch(B: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "ecg": torch.randn(B, 3, 200, generator=g),
        "hr": torch.randn(B, 3, 30, generator=g),
        "activity": torch.rand(B, 3, 1, generator=g),
        "label": torch.randint(0, 4, (B,), generator=g),
        "subject": torch.zeros(B, dtype=torch.long),
    }


def test_shapes_dtypes_and_input_untouched():
    batch = _batch()
    batch["hr"] = batch["hr"].double()
    before = {k: v.clone() for k, v in batch.items()}
    out = Augmenter()(batch)  # defaults
    assert out is not batch and set(out) == set(batch)
    for k, v in batch.items():
        assert torch.equal(v, before[k]), f"input {k} was modified"
        assert out[k].shape == v.shape and out[k].dtype == v.dtype and out[k].device == v.device
    assert out["label"] is batch["label"] and out["subject"] is batch["subject"]  # passed through
    assert not torch.equal(out["ecg"], batch["ecg"]) and not torch.equal(out["hr"], batch["hr"])


def test_repeatable_with_seed_and_views_differ():
    aug = Augmenter(DEFAULT_AUGMENT)
    batch = _batch()
    torch.manual_seed(7)
    a = aug(batch)
    torch.manual_seed(7)
    b = aug(batch)
    c = aug(batch)  # the next draw: a different view
    for m in ("ecg", "hr", "activity"):
        assert torch.equal(a[m], b[m])
    assert not torch.equal(a["ecg"], c["ecg"])


def test_p_zero_and_empty_settings_are_identity():
    batch = _batch()
    zero_p = {m: {**s, "p": 0.0} for m, s in DEFAULT_AUGMENT.items()}
    for aug in (Augmenter(zero_p), Augmenter({}), Augmenter.from_config(None), Augmenter({"ecg": None})):
        out = aug(batch)
        for m in ("ecg", "hr", "activity"):
            assert torch.equal(out[m], batch[m])


def test_modality_without_settings_passes_through():
    batch = _batch()
    out = Augmenter({"ecg": DEFAULT_AUGMENT["ecg"]})(batch)
    assert out["hr"] is batch["hr"] and out["activity"] is batch["activity"]
    assert not torch.equal(out["ecg"], batch["ecg"])
    assert Augmenter({"eeg": DEFAULT_AUGMENT["ecg"]})(batch)["ecg"] is batch["ecg"]  # absent key: no error


def test_mask_zeroes_one_contiguous_span():
    torch.manual_seed(0)
    B, L, T = 64, 2, 50
    x = torch.rand(B, L, T) + 1.0  # strictly positive: zeros can only come from the mask
    out = Augmenter({"hr": {**OFF, "mask_max_fraction": 0.2, "p": 1.0}})({"hr": x})["hr"].reshape(B, L * T)
    zeros = out == 0
    lengths = zeros.sum(1)
    assert (lengths >= 1).all() and (lengths <= 0.2 * L * T).all()
    assert len(set(lengths.tolist())) > 3  # span lengths vary per sample
    for row, n in zip(zeros, lengths.tolist(), strict=True):
        idx = row.nonzero().flatten()
        assert idx[-1] - idx[0] + 1 == n  # contiguous
    keep = ~zeros
    assert torch.equal(out[keep], x.reshape(B, L * T)[keep])  # nothing else changed


def test_scale_within_range_one_factor_per_sample():
    torch.manual_seed(0)
    x = torch.rand(128, 3, 30) + 0.5
    out = Augmenter({"hr": {**OFF, "scale_min": 0.8, "scale_max": 1.2, "p": 1.0}})({"hr": x})["hr"]
    ratio = out / x
    per_sample = ratio.reshape(128, -1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample))  # one factor per sample
    assert per_sample.min() >= 0.8 - 1e-6 and per_sample.max() <= 1.2 + 1e-6
    assert per_sample[:, 0].std() > 0.05  # factors vary


def test_shift_is_circular_within_each_epoch():
    torch.manual_seed(0)
    B, L, T = 32, 3, 40
    x = torch.randn(B, L, T)
    out = Augmenter({"ecg": {**OFF, "shift_max_fraction": 0.1, "p": 1.0}})({"ecg": x})["ecg"]
    shifts = set()
    for b in range(B):
        matches = [s for s in range(-4, 5) if torch.equal(out[b], torch.roll(x[b], s, dims=-1))]
        assert len(matches) == 1, f"sample {b} is not one circular shift of at most 4 samples of every epoch"
        shifts.add(matches[0])
    assert len(shifts) > 3


def test_noise_std_and_probability():
    torch.manual_seed(0)
    x = torch.zeros(4000, 1, 30)
    out = Augmenter({"hr": {**OFF, "noise_std": 0.1, "p": 0.5}})({"hr": x})["hr"]
    noisy = (out != 0).any(-1).any(-1)
    assert 0.45 < noisy.float().mean() < 0.55
    assert out[noisy].std().item() == pytest.approx(0.1, rel=0.05)


def test_context_mask_keeps_missing_neighbours_zero():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 30)
    x[:, 0] = 0.0
    context = torch.ones(8, 3, dtype=torch.bool)
    context[:, 0] = False
    out = Augmenter({"hr": DEFAULT_AUGMENT["hr"]})({"hr": x, "context_mask": context})
    assert torch.equal(out["hr"][:, 0], torch.zeros(8, 30))
    assert out["context_mask"] is context


def test_settings_validation_and_from_config():
    with pytest.raises(ValueError, match="unknown keys"):
        Augmenter({"ecg": {"noise": 0.1}})
    with pytest.raises(ValueError, match="scale_min"):
        AugmentSettings(scale_min=1.2, scale_max=0.8)
    with pytest.raises(ValueError, match="p must lie"):
        AugmentSettings(p=1.5)
    with pytest.raises(ValueError, match=r"\[B, L, T\]"):
        Augmenter()({"ecg": torch.zeros(4, 200)})
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"ecg": {"noise_std": 0.05, "p": 1.0}})
    aug = Augmenter.from_config(cfg)
    assert aug.settings["ecg"] == AugmentSettings(noise_std=0.05, p=1.0)
    assert set(Augmenter().settings) == {"ecg", "hr", "activity"}
