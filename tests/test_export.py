"""The exported (TorchScript) classifier predicts what the eager ClassifierModule predicts."""

from __future__ import annotations

import pytest
import torch

from fm_bio.models.encoders import build_encoder
from fm_bio.training.artifacts import export_encoder
from fm_bio.training.classifier_module import ClassifierModule
from fm_bio.training.export import example_inputs, export_classifier, load_exported

SMALL = {"name": "deepsense", "conv_channels": 8, "gru_hidden": 16, "embedding_dim": 16}
MESA = {"ecg": [1, 7680], "hr": [1, 30], "activity": [1, 1]}
WATCH_CONTEXT = {"hr": [5, 30], "activity": [5, 1]}  # Apple Watch, context_epochs=2


def _batch(shapes: dict[str, list[int]], n: int, seed: int, drop_last_modality: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch = {m: 3 * torch.randn(n, *s, generator=gen) for m, s in shapes.items()}
    present = torch.ones(n, len(shapes), dtype=torch.bool)
    if drop_last_modality:  # e.g. a watch without motion for part of the night
        present[::2, -1] = False
    batch["modality_present"] = present
    batch["epoch_index"] = torch.randint(0, 1200, (n,), generator=gen)
    return batch


def _trained_like(module: ClassifierModule, shapes: dict[str, list[int]]) -> ClassifierModule:
    """Training-mode passes so BatchNorm running statistics match the inputs (not the defaults: with
    those, an untrained model gives nearly the same logits for every input)."""
    for bn in module.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.momentum = None  # cumulative average
    module.train()
    with torch.no_grad():
        for seed in range(3):
            module(_batch(shapes, 32, seed))
    return module


def _assert_same(module: ClassifierModule, path, shapes: dict[str, list[int]]) -> None:
    model, meta = load_exported(path)
    assert meta["modalities"] == list(module.modalities)
    module.eval()
    for n, seed in ((1, 10), (7, 11), (300, 12)):
        batch = _batch(shapes, n, seed, drop_last_modality=n > 1)
        with torch.no_grad():
            want = module(batch)
            got = model(*example_inputs(batch, module.modalities, module.time_of_night))
        assert got.shape == (n, 4)
        assert torch.equal(want.argmax(-1), got.argmax(-1)), f"argmax differs on a batch of {n}"
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    big = _batch(shapes, 300, 12)
    with torch.no_grad():
        assert module(big).argmax(-1).unique().numel() > 1, "degenerate test: every input gets the same class"


@pytest.mark.parametrize("shapes", [MESA, WATCH_CONTEXT], ids=["mesa", "watch_context"])
def test_exported_base_classifier_matches_eager(tmp_path, shapes):
    torch.manual_seed(0)
    module = _trained_like(ClassifierModule("base", shapes, encoder=SMALL), shapes)
    path = export_classifier(module, _batch(shapes, 4, 0), tmp_path / "classifier.pt2")
    assert module.training, "export must restore the module's training mode"
    _assert_same(module, path, shapes)


def test_exported_classifier_with_time_of_night(tmp_path):
    torch.manual_seed(0)
    shapes = WATCH_CONTEXT
    module = _trained_like(ClassifierModule("base", shapes, encoder=SMALL, time_of_night=True), shapes)
    path = export_classifier(module, _batch(shapes, 4, 0), tmp_path / "classifier.pt2")
    _assert_same(module, path, shapes)
    assert load_exported(path)[1]["time_of_night"] is True


def test_exported_fm_probe_on_watch_inputs(tmp_path):
    """An encoder pretrained on MESA's three modalities, used on Apple Watch hr + activity."""
    torch.manual_seed(1)
    encoder = build_encoder(SMALL["name"], MESA, **{k: v for k, v in SMALL.items() if k != "name"})
    artifact = export_encoder(encoder, tmp_path / "encoder.pt")
    shapes = {"hr": [1, 30], "activity": [1, 1]}
    module = _trained_like(ClassifierModule("fm_probe", shapes, encoder_artifact=str(artifact)), shapes)
    path = export_classifier(module, _batch(shapes, 2, 0), tmp_path / "probe.pt2")
    _assert_same(module, path, shapes)


def test_comparison_detects_a_changed_model(tmp_path):
    """The check above is not vacuous: change the eager model after export and the predictions differ."""
    torch.manual_seed(2)
    module = _trained_like(ClassifierModule("base", MESA, encoder=SMALL), MESA)
    path = export_classifier(module, _batch(MESA, 4, 0), tmp_path / "classifier.pt2")
    with torch.no_grad():
        module.head.net[-1].bias[0] += 100.0  # everything becomes class 0 in the eager model
    with pytest.raises(AssertionError):
        _assert_same(module, path, MESA)


def test_export_does_not_store_the_example_batchs_base_tensor(tmp_path):
    """A slice of a whole night as the example batch must not put the whole night into the file."""
    torch.manual_seed(3)
    module = ClassifierModule("base", MESA, encoder=SMALL)
    night = _batch(MESA, 500, 0)  # 500 epochs of ECG: ~15 MB
    path = export_classifier(module, {k: v[:2] for k, v in night.items()}, tmp_path / "classifier.pt2")
    weights_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    assert path.stat().st_size < weights_bytes + 1_000_000, path.stat().st_size
    assert not list(tmp_path.glob(".*tmp*")), "temporary export file left behind"
