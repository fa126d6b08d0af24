"""EpochDataset, ConsecutiveEpochSampler and the DataModules on small synthetic caches."""

from __future__ import annotations

import itertools
import logging
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from fm_bio.data import cache
from fm_bio.data.datamodules import AppleWatchDataModule, MesaDataModule, SleepDataModule
from fm_bio.data.datasets import ConsecutiveEpochSampler, EpochDataset, ModalityError, collate_prebatched
from fm_bio.data.splits import blocked_kfold
from tests.cache_factory import FakeSubject, make_subjects, write_cache

ECG_SAMPLES = 64  # short synthetic ECG epochs keep the caches small; the real length is tested once
MODALITIES = ("ecg", "hr", "activity")


@pytest.fixture(scope="module")
def mesa_cache(tmp_path_factory):
    """Six MESA-style subjects with QC holes and masked epochs."""
    subjects = [
        FakeSubject("0001", 80, qc_dropped=[10, 11, 40], masked=[5, 6, 60]),
        FakeSubject("0002", 70, qc_dropped=[0, 1], masked=[69]),
        FakeSubject("0003", 90, qc_dropped=[50], masked=[20, 21, 22]),
        *make_subjects(["0004", "0005", "0006", "0007", "0008"], n_night_epochs=60, masked=[3]),
    ]
    return write_cache(tmp_path_factory.mktemp("mesa"), subjects, dataset="mesa", ecg_samples=ECG_SAMPLES)


@pytest.fixture(scope="module")
def watch_cache(tmp_path_factory):
    """Apple-Watch-style ids; subject 46343 has no activity."""
    subjects = [
        *make_subjects(
            ["1066528", "1360686", "1818471", "5132496", "6220552"], 60, modalities=("hr", "activity")
        ),
        FakeSubject("46343", 60, modalities=("hr",)),
    ]
    return write_cache(tmp_path_factory.mktemp("watch"), subjects, dataset="applewatch")


def _reference_item(root, subject: str, row: int, modalities, c: int) -> dict[str, np.ndarray]:
    """Slow, obviously-correct window: neighbours looked up one by one by epoch_index."""
    arr = cache.open_subject(root, subject, ["label", "epoch_index", *modalities], mmap=False)
    e = int(arr["epoch_index"][row])
    out = {m: np.zeros((2 * c + 1, arr[m].shape[1]), np.float32) for m in modalities}
    lab_ctx = np.full(2 * c + 1, -1)
    mask = np.zeros(2 * c + 1, bool)
    for j, k in enumerate(range(-c, c + 1)):
        hit = np.flatnonzero(arr["epoch_index"] == e + k)
        if len(hit):
            for m in modalities:
                out[m][j] = arr[m][hit[0]]
            lab_ctx[j] = arr["label"][hit[0]]
            mask[j] = True
    return {
        **out,
        "label_context": lab_ctx,
        "context_mask": mask,
        "label": arr["label"][row],
        "epoch_index": e,
    }


# --------------------------------------------------------------------------------------------------
# EpochDataset
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [0, 1, 3])
def test_shapes_for_every_modality_subset(mesa_cache, c):
    for r in range(1, 4):
        for mods in itertools.combinations(MODALITIES, r):
            ds = EpochDataset(mesa_cache, [("0001", None), ("0002", None)], modalities=mods, context_epochs=c)
            L = 2 * c + 1
            expected = {"ecg": (L, ECG_SAMPLES), "hr": (L, 30), "activity": (L, 1)}
            assert ds.modality_shapes == {m: expected[m] for m in mods}
            item = ds[3]
            batch = ds.__getitems__([0, 5, 3])
            for m in mods:
                assert item[m].shape == expected[m] and item[m].dtype == torch.float32
                assert batch[m].shape == (3, *expected[m])
            assert set(item) == {
                *mods,
                "label",
                "label_context",
                "context_mask",
                "modality_present",
                "subject",
                "epoch_index",
                "row",
            }
            assert item["label"].dtype == torch.int64 and item["label"].shape == ()
            assert item["label_context"].shape == (L,) and item["context_mask"].dtype == torch.bool
            assert item["modality_present"].shape == (len(mods),)


def test_real_ecg_length(tmp_path):
    root = write_cache(tmp_path, [FakeSubject("0001", 12)])
    ds = EpochDataset(root, [("0001", None)], modalities=("ecg",), context_epochs=1)
    assert ds[0]["ecg"].shape == (3, 7680)


def test_items_match_reference_with_qc_gaps(mesa_cache):
    c = 2
    ds = EpochDataset(
        mesa_cache, [("0001", None), ("0002", None), ("0003", None)], modalities=MODALITIES, context_epochs=c
    )
    for i in range(len(ds)):
        item = ds[i]
        subject = ds.subjects[int(item["subject"])]
        ref = _reference_item(mesa_cache, subject, int(item["row"]), MODALITIES, c)
        for m in MODALITIES:
            np.testing.assert_array_equal(item[m].numpy(), ref[m])
        np.testing.assert_array_equal(item["label_context"].numpy(), ref["label_context"])
        np.testing.assert_array_equal(item["context_mask"].numpy(), ref["context_mask"])
        assert int(item["label"]) == ref["label"] and int(item["epoch_index"]) == ref["epoch_index"]


def test_context_neighbours_by_time(mesa_cache):
    # Subject 0001 lost epochs 10 and 11 to QC: the window of epoch 9 must not borrow epochs 12/13.
    ds = EpochDataset(mesa_cache, [("0001", None)], modalities=("hr",), context_epochs=2)
    i = int(np.flatnonzero(ds.sample_epoch_index == 9)[0])
    item = ds[i]
    assert item["context_mask"].tolist() == [True, True, True, False, False]
    assert item["hr"][:, 0].tolist() == [8.0, 9.0, 10.0, 0.0, 0.0]  # column 0 = epoch_index + 1
    assert torch.all(item["hr"][3:] == 0)
    assert item["label_context"][3:].tolist() == [-1, -1]
    # the first epoch of the night: neighbours before it are outside the night
    first = ds[0]
    assert int(first["epoch_index"]) == 0
    assert first["context_mask"].tolist() == [False, False, True, True, True]


def test_labelled_only(mesa_cache):
    ds = EpochDataset(mesa_cache, [("0001", None), ("0003", None)], modalities=("hr",), context_epochs=1)
    assert torch.all(ds.__getitems__(list(range(len(ds))))["label"] >= 0)
    assert not set(ds.sample_epoch_index[ds.sample_subject == 0].tolist()) & {5, 6, 60}
    assert int(ds.class_counts().sum()) == len(ds)
    everything = EpochDataset(
        mesa_cache, [("0001", None), ("0003", None)], modalities=("hr",), labelled_only=False
    )
    assert len(everything) == len(ds) + 6
    labels = everything.__getitems__(list(range(len(everything))))["label"]
    assert int((labels == -1).sum()) == 6


def test_row_selection_and_masked_rows_are_dropped(mesa_cache):
    arr = cache.open_subject(mesa_cache, "0001", ["label"], mmap=False)
    rows = np.arange(0, 20)
    ds = EpochDataset(mesa_cache, {"0001": rows}, modalities=("hr",))
    assert ds.sample_row.tolist() == [r for r in rows if arr["label"][r] >= 0]
    with pytest.raises(IndexError, match="0001"):
        EpochDataset(mesa_cache, {"0001": [1000]}, modalities=("hr",))


def test_getitems_equals_collated_getitem(mesa_cache):
    ds = EpochDataset(
        mesa_cache,
        [(s, None) for s in ["0001", "0002", "0003", "0004"]],
        modalities=MODALITIES,
        context_epochs=2,
    )
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(ds), 97).tolist() + [0, 0, len(ds) - 1, -1]
    batch = ds.__getitems__(idx)
    ref = default_collate([ds[i] for i in idx])
    assert set(batch) == set(ref)
    for k in ref:
        assert torch.equal(batch[k], ref[k]), k
    with pytest.raises(TypeError, match="collate_prebatched"):
        default_collate(batch)


def test_subject_vocabulary(mesa_cache):
    vocab = ["0001", "0002", "0003", "0004"]
    ds = EpochDataset(mesa_cache, [("0003", None)], modalities=("hr",), subjects=vocab)
    b = ds.__getitems__([0, 1])
    assert b["subject"].tolist() == [2, 2]
    assert torch.all(b["hr"][:, 0, 1] == 3.0)  # hr column 1 = subject number + 1 -> "0003"
    with pytest.raises(ValueError, match="vocabulary"):
        EpochDataset(mesa_cache, [("0005", None)], modalities=("hr",), subjects=vocab)


def test_pickle_is_small_and_workers_work(mesa_cache):
    ds = EpochDataset(
        mesa_cache, [(s, None) for s in ["0001", "0002", "0003"]], modalities=MODALITIES, context_epochs=1
    )
    _ = ds[0]  # opens memory maps in this process
    blob = pickle.dumps(ds)
    assert len(blob) < 50_000, "the pickled dataset must not carry signal arrays"
    assert torch.equal(pickle.loads(blob)[7]["ecg"], ds[7]["ecg"])
    loader = DataLoader(
        ds,
        batch_size=16,
        shuffle=True,
        num_workers=2,
        collate_fn=collate_prebatched,
        persistent_workers=True,
        generator=torch.Generator().manual_seed(0),
    )
    seen = []
    for batch in loader:
        assert batch["ecg"].shape[1:] == (3, ECG_SAMPLES)
        seen.extend(zip(batch["subject"].tolist(), batch["row"].tolist(), strict=True))
    assert len(seen) == len(ds) and len(set(seen)) == len(ds)


def test_missing_modality(watch_cache):
    sel = [("1066528", None), ("46343", None)]
    with pytest.raises(ModalityError, match=r"'46343' has no \['activity'\].*it has \['hr'\].*Drop"):
        EpochDataset(watch_cache, sel, modalities=("hr", "activity"))
    ds = EpochDataset(watch_cache, sel, modalities=("hr", "activity"), missing_modality="zeros")
    b = ds.__getitems__(list(range(len(ds))))
    lacking = b["subject"] == 1
    assert torch.all(b["activity"][lacking] == 0) and torch.all(b["activity"][~lacking] != 0)
    assert b["modality_present"][lacking].tolist()[0] == [True, False]
    assert torch.all(b["modality_present"][~lacking])
    with pytest.raises(ModalityError, match="options"):
        EpochDataset(watch_cache, sel, modalities=("eeg",))


# --------------------------------------------------------------------------------------------------
# ConsecutiveEpochSampler
# --------------------------------------------------------------------------------------------------


def test_consecutive_epoch_sampler(mesa_cache):
    ds = EpochDataset(mesa_cache, [(s, None) for s in ["0001", "0002", "0003"]], modalities=("hr",))
    sampler = ConsecutiveEpochSampler(ds, seq_len=5, runs_per_batch=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    used = []
    for batch in batches:
        for run in np.asarray(batch).reshape(-1, 5):
            assert len(set(ds.sample_subject[run].tolist())) == 1
            assert np.all(np.diff(ds.sample_epoch_index[run]) == 1), "a run must be consecutive in time"
            used.extend(run.tolist())
    assert len(used) == len(set(used))  # stride = seq_len: windows do not overlap
    assert list(ConsecutiveEpochSampler(ds, seq_len=5, runs_per_batch=3, seed=1)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    # through a DataLoader: the batch reshapes to [runs, seq_len]
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_prebatched)
    b = next(iter(loader))
    ep = b["epoch_index"].reshape(-1, 5)
    assert torch.all(ep[:, 1:] - ep[:, :-1] == 1)


# --------------------------------------------------------------------------------------------------
# DataModules
# --------------------------------------------------------------------------------------------------


def test_pretraining_datamodule(mesa_cache):
    dm = MesaDataModule(
        str(mesa_cache),
        modalities=["hr", "activity"],
        context_epochs=1,
        batch_size=32,
        seed=3,
        subjects={"val_fraction": 0.2, "test_fraction": 0.2, "holdout": [8]},
    )
    dm.setup("fit")
    split = dm.subject_split
    assert split.holdout == ("0008",)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert all(not (a & b) for a, b in itertools.combinations(parts, 2))
    assert "0008" not in dm.subjects and dm.n_subjects == 7
    for name, subjects in zip(["train", "val", "test"], [split.train, split.val, split.test], strict=True):
        ds = dm.dataset(name)
        assert {dm.subjects[i] for i in np.unique(ds.sample_subject)} == set(subjects)
    assert dm.modality_shapes == {"hr": (3, 30), "activity": (3, 1)}
    assert int(dm.class_counts("train").sum()) == len(dm.dataset("train"))
    summary = dm.split_summary()
    assert summary["mode"] == "pretrain" and summary["train"]["n_epochs"] == len(dm.dataset("train"))
    # the training order is shuffled and repeats by seed; validation is in cache order
    order = torch.cat([b["row"] * 1000 + b["subject"] for b in dm.train_dataloader()])
    dm2 = MesaDataModule(
        str(mesa_cache),
        modalities=["hr", "activity"],
        context_epochs=1,
        batch_size=32,
        seed=3,
        subjects={"val_fraction": 0.2, "test_fraction": 0.2, "holdout": ["0008"]},
    )
    order2 = torch.cat([b["row"] * 1000 + b["subject"] for b in dm2.train_dataloader()])
    assert torch.equal(order, order2) and not torch.equal(order, torch.sort(order).values)
    val = torch.cat([b["subject"] * 100000 + b["epoch_index"] for b in dm.val_dataloader()])
    assert torch.equal(val, torch.sort(val).values)


def test_pretraining_unlabelled_and_empty_test(mesa_cache):
    dm = MesaDataModule(
        mesa_cache,
        modalities=["hr"],
        labelled_only=False,
        subjects={"val_fraction": 0.2, "test_fraction": 0.0},
    )
    dm.setup()
    assert dm.dataset("test") is None and dm.test_dataloader() == []
    n_rows = sum(len(cache.open_subject(mesa_cache, s, ["label"])["label"]) for s in dm.subject_split.train)
    assert len(dm.dataset("train")) == n_rows


@pytest.mark.parametrize("client", [1, "1", "0001", "mesa-sleep-0001"])
def test_client_datamodule(mesa_cache, client):
    dm = MesaDataModule(
        mesa_cache,
        modalities=["ecg", "hr"],
        context_epochs=2,
        client=client,
        split={"scheme": "blocked_kfold", "n_folds": 4, "fold": 1},
    )
    dm.setup()
    assert dm.subjects == ["0001"] and dm.client_subject == "0001"
    arr = cache.open_subject(mesa_cache, "0001", ["label", "epoch_index"], mmap=False)
    expected = blocked_kfold(arr["epoch_index"], arr["label"], n_folds=4, fold=1, context_epochs=2)
    for name in ("train", "val", "test"):
        assert dm.dataset(name).sample_row.tolist() == getattr(expected, name).tolist()
    # the context windows of training samples never contain a test epoch
    test_epochs = set(dm.dataset("test").sample_epoch_index.tolist())
    train = dm.dataset("train").__getitems__(list(range(len(dm.dataset("train")))))
    window = train["epoch_index"][:, None] + torch.arange(-2, 3)
    assert not set(window.flatten().tolist()) & test_epochs
    assert dm.split_summary()["scheme"] == "blocked_kfold"


def test_client_errors_and_other_schemes(mesa_cache, caplog):
    with pytest.raises(ValueError, match=r"not in the mesa cache; available subjects: \['0001'"):
        MesaDataModule(mesa_cache, client=99).setup()
    with pytest.raises(ValueError, match="options"):
        MesaDataModule(mesa_cache, client=1, split={"scheme": "nope"}).setup()
    dm = MesaDataModule(mesa_cache, modalities=["hr"], client=2, split={"scheme": "chronological"})
    dm.setup()
    assert dm.dataset("train").sample_epoch_index.max() < dm.dataset("test").sample_epoch_index.min()
    with caplog.at_level(logging.WARNING):
        dm = MesaDataModule(
            mesa_cache, modalities=["hr"], client=2, context_epochs=1, split={"scheme": "random_epochs"}
        )
        dm.setup()
    assert len(dm.dataset("test")) > 0


def test_applewatch_datamodule(watch_cache):
    with pytest.raises(ModalityError, match=r"46343.*Drop the modality"):
        AppleWatchDataModule(watch_cache).setup()
    dm = AppleWatchDataModule(
        watch_cache, missing_modality="skip", subjects={"val_fraction": 0.2, "test_fraction": 0.2}
    )
    dm.setup()
    assert "46343" not in dm.subjects and dm.modality_shapes == {"hr": (1, 30), "activity": (1, 1)}
    dm = AppleWatchDataModule(watch_cache, modalities=["hr"], client=46343)
    dm.setup()
    assert dm.subjects == ["46343"]
    dm = AppleWatchDataModule(watch_cache, subjects={"holdout": ["46343"]})
    dm.setup()
    assert "46343" not in dm.subjects
    with pytest.raises(ModalityError, match="client '46343'"):
        AppleWatchDataModule(watch_cache, client="0046343").setup()
    dm = AppleWatchDataModule(watch_cache, client=46343, missing_modality="zeros")
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    assert not b["modality_present"][:, 1].any() and torch.all(b["activity"] == 0)


def test_datamodule_workers_and_sequences(mesa_cache):
    dm = MesaDataModule(mesa_cache, modalities=["hr"], num_workers=2, batch_size=16, seq_len=4, seed=0)
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.batch_sampler.runs_per_batch == 4
    batches = list(loader)
    assert all(b["hr"].shape[0] % 4 == 0 for b in batches)
    ep = batches[0]["epoch_index"].reshape(-1, 4)
    assert torch.all(ep[:, 1:] - ep[:, :-1] == 1)
    assert len(list(dm.val_dataloader())) > 0


def test_hydra_instantiate(mesa_cache):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "_target_": "fm_bio.data.datamodules.MesaDataModule",
            "cache_root": str(mesa_cache),
            "modalities": ["hr", "activity"],
            "context_epochs": 1,
            "client": 3,
            "split": {"scheme": "blocked_kfold", "n_folds": 3, "fold": 2, "val_fraction": 0.1},
            "subjects": {"holdout": ["0003"]},
        }
    )
    dm = instantiate(cfg)
    assert isinstance(dm, SleepDataModule) and isinstance(dm.split_params, dict)
    dm.setup()
    assert dm.subjects == ["0003"] and dm.split_params["n_folds"] == 3


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
def test_lightning_fit_smoke(mesa_cache):
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3 * 31, 4)

        def _loss(self, batch):
            x = torch.cat([batch["hr"], batch["activity"]], dim=-1).flatten(1)
            return torch.nn.functional.cross_entropy(self.net(x), batch["label"])

        def training_step(self, batch, _):
            return self._loss(batch)

        def validation_step(self, batch, _):
            self.log("val_loss", self._loss(batch), batch_size=len(batch["label"]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = MesaDataModule(mesa_cache, modalities=["hr", "activity"], context_epochs=1, batch_size=32)
    trainer = pl.Trainer(
        max_steps=3,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.global_step == 3


def test_lone_last_training_batch_is_dropped(mesa_cache):
    """A final training batch of one sample would break BatchNorm: it is dropped (never in evaluation)."""
    dm = MesaDataModule(mesa_cache, modalities=["hr"], labelled_only=False, subjects={"val_fraction": 0.2, "test_fraction": 0.0})
    dm.setup()
    n = len(dm.dataset("train"))
    dm.batch_size = n - 1  # n = (n - 1) + 1
    sizes = [len(b["label"]) for b in dm.train_dataloader()]
    assert sizes == [n - 1]
    dm.batch_size = n - 2
    assert [len(b["label"]) for b in dm.train_dataloader()] == [n - 2, 2]
    dm.eval_batch_size = len(dm.dataset("val")) - 1
    assert [len(b["label"]) for b in dm.val_dataloader()][-1] == 1  # evaluation keeps every sample
