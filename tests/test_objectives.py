"""Objectives: InfoNCE against a brute-force reference, orthogonality forms, gradient reversal, weight
schedules, the subject adversary on a toy encoder, FOCAL / InfoNCE objective terms and gradients."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch.nn import functional as nnf

from fm_bio.objectives import OBJECTIVES, build_objective
from fm_bio.objectives.adversary import SubjectAdversary, grad_reverse, warmup_weight
from fm_bio.objectives.focal import FocalObjective, orthogonality_loss, temporal_ranking_loss
from fm_bio.objectives.infonce import InfoNCEObjective, info_nce

MODS = ("ecg", "hr", "activity")


def _view(per_modality: dict[str, torch.Tensor]) -> SimpleNamespace:
    """A stand-in for EncoderOutput (duck typed: per_modality and fused)."""
    return SimpleNamespace(per_modality=per_modality, fused=torch.stack(list(per_modality.values())).mean(0))


def _info_nce_reference(a: torch.Tensor, b: torch.Tensor, tau: float, groups=None) -> float:
    """Explicit loops: mean over i of -log softmax_j(cos(a_i, b_j) / tau)[i], both directions."""
    n = a.shape[0]

    def cos(u, v):
        return float(u @ v) / (float(u.norm()) * float(v.norm()))

    def direction(x, y):
        total = 0.0
        for i in range(n):
            logits = [cos(x[i], y[j]) / tau for j in range(n) if groups is None or j == i or groups[j] != groups[i]]
            pos = cos(x[i], y[i]) / tau
            total += -(pos - math.log(sum(math.exp(v) for v in logits)))
        return total / n

    return 0.5 * (direction(a, b) + direction(b, a))


# --------------------------------------------------------------------------------------------- InfoNCE
@pytest.mark.parametrize("tau", [0.07, 0.2, 1.0])
def test_info_nce_matches_brute_force(tau):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64)
    b = torch.randn(6, 5, generator=g, dtype=torch.float64)
    assert info_nce(a, b, tau).item() == pytest.approx(_info_nce_reference(a, b, tau), rel=1e-9)
    # asymmetric inputs: the two directions differ, the loss is their mean (symmetric in a, b)
    assert info_nce(b, a, tau).item() == pytest.approx(info_nce(a, b, tau).item(), rel=1e-12)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    assert info_nce(a, b, tau, groups).item() == pytest.approx(_info_nce_reference(a, b, tau, groups), rel=1e-9)


def test_info_nce_limits():
    torch.manual_seed(0)
    n = 64
    a = torch.randn(n, 512)
    # identical sets at a low temperature: the positive dominates
    assert info_nce(a, a, 0.05).item() < 0.05
    # independent random embeddings at temperature 1: cosines ~ 0, loss ~ log(B)
    b = torch.randn(n, 512)
    assert info_nce(a, b, 1.0).item() == pytest.approx(math.log(n), rel=0.02)
    with pytest.raises(ValueError, match="same shape"):
        info_nce(a, b[:3], 0.1)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(a, b, 0.0)


# --------------------------------------------------------------------------------------- orthogonality
@pytest.mark.parametrize(
    ("y", "focal", "cos2"),
    [
        ([0.0, 2.0], 0.0, 0.0),  # orthogonal
        ([3.0, 0.0], 1.0, 1.0),  # parallel
        ([-1.0, 0.0], 0.0, 1.0),  # anti-parallel: FOCAL's form does not penalise it
        ([1.0, 1.0], math.sqrt(0.5), 0.5),  # 45 degrees
        ([-1.0, 1.0], 0.0, 0.5),  # 135 degrees
    ],
)
def test_orthogonality_values(y, focal, cos2):
    x = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([y])
    assert orthogonality_loss(x, y, "focal_original").item() == pytest.approx(focal, abs=1e-6)
    assert orthogonality_loss(x, y, "cos2").item() == pytest.approx(cos2, abs=1e-6)


def test_orthogonality_gradient_matches_analytic():
    x = torch.tensor([[2.0, 1.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    orthogonality_loss(x, y, "cos2").backward()
    # d cos^2 / dx = 2 cos (y / (|x||y|) - cos x / |x|^2)
    xv, yv = x.detach()[0], y[0]
    c = float(xv @ yv / (xv.norm() * yv.norm()))
    analytic = 2 * c * (yv / (xv.norm() * yv.norm()) - c * xv / xv.norm() ** 2)
    torch.testing.assert_close(x.grad[0], analytic)
    # gradient descent rotates x toward orthogonality with y: the y-component shrinks, x keeps its norm
    assert x.grad[0, 0] > 0 and x.grad[0, 1] < 0
    assert float(x.grad[0] @ xv) == pytest.approx(0.0, abs=1e-12)
    # the FOCAL form gives no gradient once the cosine is negative
    z = torch.tensor([[-2.0, 1.0]], requires_grad=True)
    orthogonality_loss(z, y.float(), "focal_original").backward()
    assert torch.count_nonzero(z.grad) == 0
    with pytest.raises(ValueError, match="options"):
        orthogonality_loss(x, y, "l2")


# ------------------------------------------------------------------------------------ gradient reversal
@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0])
def test_gradient_reversal(weight):
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, weight)
    torch.testing.assert_close(y, x.detach())
    (y.pow(2) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    upstream = 2 * x.detach() * torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(x.grad, -weight * upstream)
    if weight == 0:
        assert torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("schedule", ["dann", "linear"])
def test_warmup_weight_monotone(schedule):
    p = np.linspace(0, 1, 101)
    w = np.array([warmup_weight(v, 2.0, schedule, warmup_fraction=0.2) for v in p])
    assert w[0] == 0.0
    assert np.all(np.diff(w) >= 0)
    assert w[-1] == pytest.approx(2.0, rel=1e-3)
    assert warmup_weight(1.5, 2.0, schedule) == pytest.approx(w[-1])  # progress is clipped
    assert warmup_weight(0.0, 2.0, "constant") == 2.0
    with pytest.raises(ValueError, match="options"):
        warmup_weight(0.5, 1.0, "cosine")


# ------------------------------------------------------------------------------------ subject adversary
def _subject_data(n_subjects: int = 4, n: int = 512, seed: int = 0):
    """x [n, 8]: dims 0-1 a task signal independent of the subject, dims 2-7 a subject offset + noise."""
    g = torch.Generator().manual_seed(seed)
    subject = torch.randint(0, n_subjects, (n,), generator=g)
    means = 2.0 * torch.randn(n_subjects, 6, generator=g)
    task = torch.randn(n, 2, generator=g)
    x = torch.cat([task, means[subject] + 0.5 * torch.randn(n, 6, generator=g)], dim=1)
    target = task @ torch.tensor([1.0, -1.0])
    return x, subject, target


def _bottleneck_toy(adversary_on: bool, steps: int = 200, seed: int = 0):
    """Train a toy encoder Linear(3 -> 2) on a task (+ the adversary); return probe accuracy, task MSE, weights.

    Inputs: two task features and one subject feature (4 subjects 3 apart, noise 0.3). The encoder starts
    at ``z0 = x0 - x1`` (the task target: solved from the start) and ``z1 = 0.5 (x0 + x1) + subject``
    (the subject, readable above task noise). The head reads ``z0`` only, so the task never asks to drop
    the subject; only the adversary does. With 2 outputs for 3 inputs, shrinking the subject weight buries
    the subject under task noise, so a fresh linear probe really loses it (with a spare output dimension
    any non-zero residual stays perfectly decodable by a scale-free probe).
    """
    g = torch.Generator().manual_seed(seed)
    n, n_subjects = 512, 4
    subject = torch.randint(0, n_subjects, (n,), generator=g)
    task = torch.randn(n, 2, generator=g)
    feat = 3.0 * (subject.float() - 1.5) + 0.3 * torch.randn(n, generator=g)
    x = torch.cat([task, feat[:, None]], dim=1)
    target = task[:, 0] - task[:, 1]
    torch.manual_seed(seed)
    encoder, head = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    with torch.no_grad():
        encoder.weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [0.5, 0.5, 1.0]]))
        encoder.bias.zero_()
        head.weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.bias.zero_()
    adv = SubjectAdversary(2, n_subjects, hidden_dim=32, weight_max=1.0, schedule="constant", dropout=0.0)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters(), *adv.parameters()], lr=1e-2)
    for _ in range(steps):
        z = encoder(x)
        loss = nnf.mse_loss(head(z).squeeze(-1), target)
        if adversary_on:
            loss = loss + adv(z, subject, progress=1.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = encoder(x)
        mse = nnf.mse_loss(head(z).squeeze(-1), target).item()
    with threadpool_limits(1):  # tiny problem: BLAS threads only contend with torch's
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=100.0, max_iter=1000))
        probe.fit(z[:384].numpy(), subject[:384].numpy())
        probe_acc = probe.score(z[384:].numpy(), subject[384:].numpy())
    return probe_acc, mse, encoder.weight.detach()


def test_adversary_single_step_directions():
    x, subject, _ = _subject_data()
    torch.manual_seed(0)
    encoder = torch.nn.Linear(8, 8)
    adv = SubjectAdversary(8, 4, hidden_dim=16, schedule="constant", dropout=0.0)
    with torch.no_grad():
        z0 = encoder(x)
        ce_before = nnf.cross_entropy(adv.classifier(z0), subject).item()
    old_classifier = [p.detach().clone() for p in adv.classifier.parameters()]
    opt = torch.optim.SGD([*encoder.parameters(), *adv.parameters()], lr=1e-2)
    out = adv(encoder(x), subject, progress=1.0)
    assert set(out) == {"loss", "accuracy", "weight"}
    assert not out["accuracy"].requires_grad and out["weight"].item() == 1.0
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    with torch.no_grad():
        # the classifier got better at the subject (on the old embeddings) ...
        assert nnf.cross_entropy(adv.classifier(z0), subject).item() < ce_before
        # ... while the encoder moved to make the subject less decodable (for the old classifier)
        for p, old in zip(adv.classifier.parameters(), old_classifier, strict=True):
            p.copy_(old)
        assert nnf.cross_entropy(adv.classifier(encoder(x)), subject).item() > ce_before


def test_adversary_hides_subject_from_a_fresh_probe():
    acc_off, mse_off, w_off = _bottleneck_toy(adversary_on=False)
    acc_on, mse_on, w_on = _bottleneck_toy(adversary_on=True)
    assert acc_off > 0.85  # without the adversary the subject stays linearly decodable
    assert acc_on < 0.4  # with it, a fresh logistic probe is near chance (0.25)
    assert abs(w_on[1, 2]) < 0.1 < abs(w_off[1, 2])  # the encoder dropped the subject input
    assert mse_on < 0.05 and mse_off < 0.05  # and kept the task


def test_adversary_trains_classifier_and_validates_ids():
    x, subject, _ = _subject_data()
    torch.manual_seed(0)
    adv = SubjectAdversary(8, 4, hidden_dim=32, dropout=0.0)
    opt = torch.optim.Adam(adv.parameters(), lr=1e-2)
    first = None
    for _ in range(50):
        out = adv(x, subject, progress=0.5)  # fixed features: only the classifier learns
        first = out["loss"].item() if first is None else first
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < 0.5 * first and out["accuracy"].item() > 0.9
    assert out["weight"].item() == pytest.approx(warmup_weight(0.5, 1.0, "dann"))
    with pytest.raises(ValueError, match="n_subjects"):
        adv(x[:2], torch.tensor([0, 4]), progress=0.0)


# ----------------------------------------------------------------------------- FOCAL and InfoNCE terms
def _views(mods=MODS, n=24, d=16, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    e1 = {m: torch.randn(n, d, generator=g, requires_grad=requires_grad) for m in mods}
    e2 = {m: torch.randn(n, d, generator=g, requires_grad=requires_grad) for m in mods}
    return _view(e1), _view(e2)


@pytest.mark.parametrize("form", ["cos2", "focal_original"])
def test_focal_terms_and_gradients(form):
    torch.manual_seed(0)
    obj = FocalObjective(MODS, embedding_dim=16, proj_dim=8, orthogonality=form)
    v1, v2 = _views(requires_grad=True)
    out = obj(v1, v2, seq_len=4)
    assert set(out) == {"shared", "private", "orthogonality", "temporal", "loss"}
    for k, v in out.items():
        assert v.dim() == 0 and torch.isfinite(v), k
        assert v.requires_grad == (k == "loss"), k
    assert out["shared"] > 0 and out["private"] > 0 and out["orthogonality"] > 0 and out["temporal"] > 0
    expected = out["shared"] + out["private"] + out["orthogonality"] + 0.1 * out["temporal"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    for name, p in obj.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    for m in MODS:
        assert v1.per_modality[m].grad is not None
    # without seq_len the temporal term is an exact 0 tensor
    assert obj(*_views())["temporal"].item() == 0.0


def test_focal_subset_of_modalities():
    obj = FocalObjective(MODS, embedding_dim=16, proj_dim=8)
    out = obj(*_views(mods=("hr",)))
    assert out["shared"].item() == 0.0 and out["private"] > 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert obj.private_heads["hr"].net[0].weight.grad is not None
    assert obj.private_heads["ecg"].net[0].weight.grad is None
    out2 = obj(*_views(mods=("ecg", "activity")))
    assert out2["shared"] > 0
    with pytest.raises(ValueError, match="not built for"):
        obj(*_views(mods=("ecg", "eeg")))


def _drifting_runs(n_runs: int, seq_len: int, d: int = 32, step_rad: float = 0.35, seed: int = 0) -> torch.Tensor:
    """Runs of embeddings that drift slowly: each run turns along a great circle by ``step_rad`` per epoch
    (from a random start, in a random plane), plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    u = nnf.normalize(torch.randn(n_runs, 1, d, generator=g), dim=-1)
    v = torch.randn(n_runs, 1, d, generator=g)
    v = nnf.normalize(v - (v * u).sum(-1, keepdim=True) * u, dim=-1)  # orthogonal to u
    angle = step_rad * torch.arange(seq_len, dtype=torch.float32)[None, :, None]
    z = torch.cos(angle) * u + torch.sin(angle) * v + 0.02 * torch.randn(n_runs, seq_len, d, generator=g)
    return z.reshape(n_runs * seq_len, d)


def test_temporal_term_prefers_smooth_sequences():
    seq_len = 8
    smooth = _drifting_runs(16, seq_len)
    perm = torch.cat([torch.randperm(seq_len, generator=torch.Generator().manual_seed(r)) + r * seq_len for r in range(16)])
    shuffled = smooth[perm]
    l_smooth = temporal_ranking_loss(smooth, seq_len, margin=0.1).item()
    l_shuffled = temporal_ranking_loss(shuffled, seq_len, margin=0.1).item()
    l_random = temporal_ranking_loss(torch.randn(16 * seq_len, 32), seq_len, margin=0.1).item()
    assert l_shuffled > 0.03 and l_random > 0.03
    assert l_smooth < 0.2 * l_shuffled
    assert temporal_ranking_loss(smooth, None).item() == 0.0
    assert temporal_ranking_loss(smooth, 2).item() == 0.0
    with pytest.raises(ValueError, match="whole number of runs"):
        temporal_ranking_loss(smooth[:-1], seq_len)


def test_focal_temporal_term_uses_shared_projections():
    seq_len = 8
    smooth = _drifting_runs(4, seq_len)
    shuffled = smooth[torch.randperm(len(smooth), generator=torch.Generator().manual_seed(0))]
    obj = FocalObjective(("hr", "activity"), embedding_dim=32, proj_dim=32)
    for m in obj.modalities:  # identity shared heads: the term sees the embeddings themselves
        obj.shared_heads[m] = torch.nn.Identity()
    terms = {}
    for name, z in (("smooth", smooth), ("shuffled", shuffled)):
        view = _view({"hr": z, "activity": z})
        terms[name] = obj(view, view, seq_len=seq_len)["temporal"].item()
    assert terms["shuffled"] > 0.03 and terms["smooth"] < 0.2 * terms["shuffled"]


def test_temporal_term_matches_loops():
    z = torch.randn(2 * 5, 4, dtype=torch.float64)
    seq_len, margin = 5, 0.2
    u = nnf.normalize(z, dim=-1)
    hinges = []
    for r in range(2):
        for i in range(seq_len):
            for k in range(seq_len):
                for j in range(seq_len):
                    if abs(i - k) == 1 and abs(i - j) >= 2:
                        a, b, c = (u[r * seq_len + t] for t in (i, k, j))
                        hinges.append(max(0.0, float(1 - a @ b) - float(1 - a @ c) + margin))
    assert temporal_ranking_loss(z, seq_len, margin).item() == pytest.approx(sum(hinges) / len(hinges), rel=1e-9)


def test_infonce_objective_terms_and_gradients():
    torch.manual_seed(0)
    obj = InfoNCEObjective(MODS, embedding_dim=16, proj_dim=8, cross_modal_weight=0.5)
    out = obj(*_views(requires_grad=True), seq_len=None)
    assert set(out) == {"cross_modal", "cross_view", "loss"}
    assert all(torch.isfinite(v) for v in out.values())
    torch.testing.assert_close(out["loss"].detach(), 0.5 * out["cross_modal"] + out["cross_view"])
    out["loss"].backward()
    for name, p in obj.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    single = obj(*_views(mods=("ecg",)))
    assert single["cross_modal"].item() == 0.0 and single["cross_view"] > 0


def test_build_objective():
    assert set(OBJECTIVES) == {"focal", "infonce"}
    focal = build_objective("focal", MODS, 16, temperature=0.1, orthogonality="focal_original", temporal_margin=0.2)
    assert isinstance(focal, FocalObjective) and focal.temperature == 0.1
    assert isinstance(build_objective("infonce", MODS, 16, proj_dim=8), InfoNCEObjective)
    with pytest.raises(ValueError, match="options"):
        build_objective("simclr", MODS, 16)
    with pytest.raises(ValueError, match="accepted"):
        build_objective("focal", MODS, 16, temprature=0.1)
    with pytest.raises(ValueError, match="options"):
        build_objective("focal", MODS, 16, orthogonality="l1")
    # same forward signature for both
    for name in OBJECTIVES:
        out = build_objective(name, MODS, 16, proj_dim=8)(*_views(), seq_len=4)
        assert "loss" in out and out["loss"].requires_grad


def test_confusion_mode_trains_classifier_and_pushes_encoder_to_uniform():
    torch.manual_seed(0)
    adv = SubjectAdversary(4, 3, mode="confusion", weight_max=1.0, schedule="constant")
    z = torch.randn(12, 4, requires_grad=True)
    subject = torch.arange(12) % 3
    out = adv(z, subject, progress=1.0)
    out["loss"].backward()
    assert all(p.grad is not None for p in adv.classifier.parameters() if p.requires_grad)
    # the encoder's gradient is that of the confusion term alone (cross-entropy to uniform predictions)
    logits = adv.classifier(z.detach().requires_grad_())
    assert z.grad is not None and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="options"):
        SubjectAdversary(4, 3, mode="minimax")
    assert logits.shape == (12, 3)
