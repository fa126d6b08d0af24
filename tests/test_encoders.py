"""Multimodal encoders: shapes for every modality subset and context length, fusion and its mask,
config round trips, gradients, errors, numerics (zeros, batch of 1)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from fm_bio.models import ENCODERS, EncoderOutput, build_encoder
from fm_bio.models.encoders import count_parameters, encoder_parameters, modality_present_dict
from fm_bio.models.encoders.deepsense import plan_downsampling

SAMPLES_PER_EPOCH = {"ecg": 7680, "hr": 30, "activity": 1}  # the real T of every modality
MODALITIES = tuple(SAMPLES_PER_EPOCH)
SUBSETS = [c for r in (1, 2, 3) for c in itertools.combinations(MODALITIES, r)]
D = 8
SMALL = {  # small sizes keep the tests fast; the defaults are checked by test_defaults_build
    "deepsense": {"conv_channels": 4, "conv_layers": 2, "gru_hidden": 8, "embedding_dim": D},
    "transformer": {"d_model": 8, "n_heads": 2, "n_layers": 1, "max_tokens": 16, "embedding_dim": D},
}
FAST_ENCODERS = tuple(SMALL)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: one intra-op thread avoids oversubscribing the cores under pytest-xdist."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def shapes_for(modalities: tuple[str, ...] = MODALITIES, L: int = 1) -> dict[str, tuple[int, int]]:
    return {m: (L, SAMPLES_PER_EPOCH[m]) for m in modalities}


def make_inputs(
    shapes: dict[str, tuple[int, int]], batch_size: int = 2, seed: int = 0
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch_size, *s, generator=gen) for m, s in shapes.items()}


def small_encoder(name: str, shapes: dict[str, tuple[int, int]], seed: int = 0):
    torch.manual_seed(seed)
    return build_encoder(name, shapes, **SMALL[name])


def test_registry_lists_the_encoders():
    assert {"deepsense", "deepsense_paper", "transformer"} <= set(ENCODERS)


@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("name", FAST_ENCODERS)
def test_shapes_for_every_modality_subset(name, L):
    for subset in SUBSETS:
        shapes = shapes_for(subset, L)
        enc = small_encoder(name, shapes)
        batch = make_inputs(shapes, batch_size=3)
        batch["label"] = torch.zeros(3, dtype=torch.long)  # extra keys are ignored
        batch["context_mask"] = torch.ones(3, L, dtype=torch.bool)
        out = enc(batch)
        assert isinstance(out, EncoderOutput)
        assert set(out.per_modality) == set(subset)
        for m in subset:
            assert out.per_modality[m].shape == (3, D), (name, subset, L, m)
        assert out.fused.shape == (3, D)
        assert torch.isfinite(out.fused).all()


@pytest.mark.parametrize("name", FAST_ENCODERS)
def test_encoder_serves_a_subset_of_its_modalities(name):
    enc = small_encoder(name, shapes_for(MODALITIES, L=3)).eval()
    inputs = make_inputs(shapes_for(("hr", "activity"), L=3))
    out = enc(inputs)
    assert set(out.per_modality) == {"hr", "activity"}
    expected = (out.per_modality["hr"] + out.per_modality["activity"]) / 2
    torch.testing.assert_close(out.fused, expected)


@pytest.mark.parametrize("name", FAST_ENCODERS)
def test_modality_present_excludes_modalities_per_sample(name):
    shapes = shapes_for(MODALITIES)
    enc = small_encoder(name, shapes).eval()
    inputs = make_inputs(shapes, batch_size=4)
    present = {
        "ecg": torch.tensor([True, False, True, False]),
        "hr": torch.tensor([True, True, False, False]),
        "activity": torch.tensor([True, True, True, False]),
    }
    out = enc(inputs, modality_present=present)
    e = out.per_modality
    torch.testing.assert_close(out.fused[0], (e["ecg"][0] + e["hr"][0] + e["activity"][0]) / 3)
    torch.testing.assert_close(out.fused[1], (e["hr"][1] + e["activity"][1]) / 2)
    torch.testing.assert_close(out.fused[2], (e["ecg"][2] + e["activity"][2]) / 2)
    torch.testing.assert_close(out.fused[3], torch.zeros(D))  # nothing present: zeros, not NaN
    # the batch's [B, M] tensor converts with modality_present_dict (dataset order)
    as_dict = modality_present_dict(torch.stack([present[m] for m in MODALITIES], dim=1), MODALITIES)
    torch.testing.assert_close(enc(inputs, modality_present=as_dict).fused, out.fused)
    # a modality missing from modality_present counts as present
    out_partial = enc(inputs, modality_present={"ecg": present["ecg"]})
    torch.testing.assert_close(out_partial.fused[1], (e["hr"][1] + e["activity"][1]) / 2)


@pytest.mark.parametrize("name", [*FAST_ENCODERS, "deepsense_paper"])
def test_config_round_trip(name):
    shapes = shapes_for(("hr", "activity"), L=3) if name == "deepsense_paper" else shapes_for(L=3)
    params = SMALL.get(name, {"conv_channels": 8, "gru_hidden": 8, "gru_layers": 2, "embedding_dim": D})
    torch.manual_seed(0)
    enc = build_encoder(name, shapes, **params).eval()
    config = json.loads(json.dumps(enc.config()))  # JSON-able
    assert config["name"] == name
    assert config["modality_shapes"] == {m: list(s) for m, s in shapes.items()}
    torch.manual_seed(1)
    rebuilt = build_encoder(**config).eval()
    assert rebuilt.config() == enc.config()
    sd, sd2 = enc.state_dict(), rebuilt.state_dict()
    assert list(sd) == list(sd2)
    assert all(sd[k].shape == sd2[k].shape for k in sd)
    rebuilt.load_state_dict(sd)
    inputs = make_inputs(shapes)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(inputs).fused, enc(inputs).fused)


@pytest.mark.parametrize("name", FAST_ENCODERS)
def test_gradients_reach_every_used_branch(name):
    enc = small_encoder(name, shapes_for(MODALITIES, L=3)).train()
    used = ("ecg", "hr")
    out = enc(make_inputs(shapes_for(used, L=3), batch_size=4))
    out.fused.pow(2).sum().backward()
    for m in MODALITIES:
        for pname, p in enc.branches[m].named_parameters():
            if m in used:
                assert p.grad is not None, f"{m}.{pname} got no gradient"
                assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{m}.{pname}"
            else:
                assert p.grad is None, f"unused branch {m}.{pname} got a gradient"


@pytest.mark.parametrize("name", FAST_ENCODERS)
def test_deterministic_given_the_seed(name):
    shapes = shapes_for(("ecg", "hr"))
    a, b = small_encoder(name, shapes, seed=3), small_encoder(name, shapes, seed=3)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=0, atol=0)
    inputs = make_inputs(shapes)
    torch.manual_seed(5)
    out_a = a.train()(inputs).fused
    torch.manual_seed(5)
    out_b = b.train()(inputs).fused
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)


@pytest.mark.parametrize("name", FAST_ENCODERS)
def test_zeros_and_batch_of_one(name):
    shapes = shapes_for(MODALITIES, L=3)
    enc = small_encoder(name, shapes)
    zeros = {m: torch.zeros(4, *s) for m, s in shapes.items()}
    for mode in ("train", "eval"):
        getattr(enc, mode)()
        out = enc(zeros)
        assert torch.isfinite(out.fused).all() and all(
            torch.isfinite(v).all() for v in out.per_modality.values()
        )
    enc.eval()
    one = enc(make_inputs(shapes, batch_size=1))
    assert one.fused.shape == (1, D) and torch.isfinite(one.fused).all()
    # a training batch of one single-sample activity epoch (BatchNorm sees one value per channel)
    enc_act = small_encoder(name, shapes_for(("activity",), L=1)).train()
    out = enc_act({"activity": torch.zeros(1, 1, 1)})
    assert torch.isfinite(out.fused).all()


@pytest.mark.parametrize("L", [1, 3, 9, 21])
def test_derived_sizes_are_bounded(L):
    ds = build_encoder("deepsense", shapes_for(MODALITIES, L), **SMALL["deepsense"], max_gru_steps=32)
    tf = build_encoder("transformer", shapes_for(MODALITIES, L), **SMALL["transformer"])
    for m in MODALITIES:
        n = L * SAMPLES_PER_EPOCH[m]
        assert 1 <= ds.branches[m].n_steps <= 32
        if n <= 32:
            assert ds.branches[m].n_steps == n  # short inputs are not down-sampled
        else:
            assert ds.branches[m].n_steps >= 32 // 4  # nor over-reduced
        assert 1 <= tf.branches[m].n_tokens <= 16
        assert all(stride <= 5 for stride, _ in ds.branches[m].downsampling)  # stride <= kernel
    assert plan_downsampling(1, 3, 64, 5) == [(1, 1)] * 3  # length-1 inputs are never strided


def test_deepsense_weights_transfer_between_context_lengths():
    a = small_encoder("deepsense", shapes_for(MODALITIES, L=1))
    b = small_encoder("deepsense", shapes_for(MODALITIES, L=5))
    b.load_state_dict(a.state_dict())
    assert b.eval()(make_inputs(shapes_for(MODALITIES, L=5))).fused.shape == (2, D)


def test_defaults_build():
    shapes = shapes_for(MODALITIES)
    for name in FAST_ENCODERS:
        enc = build_encoder(name, shapes).eval()
        assert enc.embedding_dim == 64
        assert enc(make_inputs(shapes)).fused.shape == (2, 64)


def test_deepsense_paper_smoke():
    torch.manual_seed(0)
    enc = build_encoder("deepsense_paper", shapes_for(MODALITIES)).eval()
    assert enc.embedding_dim == 1024
    hp = enc.config()
    assert (hp["conv_channels"], hp["conv_layers"], hp["gru_hidden"], hp["gru_layers"]) == (512, 4, 1024, 4)
    assert count_parameters(enc) > 80_000_000  # about 29.7 M per modality
    with torch.no_grad():  # the ECG branch is too slow for a unit test on CPU
        out = enc(make_inputs(shapes_for(("hr", "activity")), batch_size=1))
    assert out.fused.shape == (1, 1024) and torch.isfinite(out.fused).all()


def test_errors_name_the_problem():
    shapes = shapes_for(("hr",))
    with pytest.raises(ValueError, match=r"unknown encoder 'nope'.*deepsense"):
        build_encoder("nope", shapes)
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['n_heads'\].*conv_channels"):
        build_encoder("deepsense", shapes, n_heads=2)
    with pytest.raises(ValueError, match="conv_layers=0"):
        build_encoder("deepsense", shapes, conv_layers=0)
    with pytest.raises(ValueError, match="conv_kernel=4 must be odd"):
        build_encoder("deepsense", shapes, conv_kernel=4)
    with pytest.raises(ValueError, match="dropout=1.5"):
        build_encoder("transformer", shapes, dropout=1.5)
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_heads=4"):
        build_encoder("transformer", shapes, d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="pool='max'"):
        build_encoder("transformer", shapes, pool="max")
    with pytest.raises(ValueError, match=r"modality_shapes\['hr'\]"):
        build_encoder("deepsense", {"hr": (30,)})
    with pytest.raises(ValueError, match="non-empty mapping"):
        build_encoder("deepsense", {})
    enc = build_encoder("deepsense", shapes, **SMALL["deepsense"])
    with pytest.raises(ValueError, match=r"built for \[B, 1, 30\]"):
        enc({"hr": torch.zeros(2, 3, 30)})
    with pytest.raises(ValueError, match="none of this encoder's modalities"):
        enc({"ecg": torch.zeros(2, 1, 7680)})
    with pytest.raises(TypeError, match="modality_present_dict"):
        enc({"hr": torch.zeros(2, 1, 30)}, modality_present=torch.ones(2, 1, dtype=torch.bool))
    assert set(encoder_parameters("deepsense")) == set(enc.config()) - {"name", "modality_shapes"}
