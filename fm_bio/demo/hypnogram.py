"""A stage-sequence model of one night with a realistic sleep architecture.

The night is built as a sequence of NREM-REM cycles (about 90 min each): sleep-onset latency, deep
sleep concentrated in the first cycles, REM bouts that lengthen across the night, then perturbed with
brief awakenings, longer wake after sleep onset, N1 intrusions, fragmented N3 and REM, a final
awakening and a few unscored epochs at the edges.

Stage codes (one per 30-s epoch) use the sleep-accel convention, which the writers translate:
``-1`` unscored, ``0`` wake, ``1`` N1, ``2`` N2, ``3`` N3, ``4`` N4 (R&K scoring only), ``5`` REM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPOCH_S = 30.0
"""Scoring epoch length in seconds."""

UNSCORED, WAKE, N1, N2, N3, N4, REM = -1, 0, 1, 2, 3, 4, 5
"""Stage codes of the generated hypnograms (sleep-accel convention)."""

STAGE_CLASS = {UNSCORED: "unscored", WAKE: "wake", N1: "light", N2: "light", N3: "deep", N4: "deep", REM: "rem"}
"""Stage code -> 4-class name (``unscored`` is masked downstream)."""

EPOCHS_PER_MIN = 2


@dataclass(frozen=True)
class SleepTraits:
    """Per-subject sleep propensities (drawn once per subject, see ``physiology.draw_traits``).

    Attributes
    ----------
    sleep_quality : 0 (fragmented, much wake) .. 1 (consolidated, little wake).
    deep_propensity : multiplies the N3 amount per cycle (age lowers it).
    rem_propensity : multiplies the REM amount per cycle.
    cycle_min : mean NREM-REM cycle length in minutes.
    rk_scoring : split the deepest N3 runs into N3/N4 (R&K-style scoring).
    """

    sleep_quality: float = 0.6
    deep_propensity: float = 1.0
    rem_propensity: float = 1.0
    cycle_min: float = 92.0
    rk_scoring: bool = False


@dataclass(frozen=True)
class StageModelParams:
    """Parameters of the stage model (durations in minutes unless the name says otherwise).

    The defaults give, across subjects, roughly 15-25 % wake, 50-60 % light, 8-15 % deep and
    15-22 % REM of the recording.
    """

    sleep_onset_latency_min: float = 18.0  # median; lognormal, longer when sleep quality is low
    sleep_onset_latency_sigma: float = 0.5
    final_wake_min: tuple[float, float] = (4.0, 22.0)
    first_cycle_deep_min: float = 34.0  # N3 in the first cycle at deep_propensity 1
    deep_decay_per_cycle: float = 0.42  # relative loss of N3 per cycle
    first_rem_min: float = 10.0
    last_rem_min: float = 33.0
    n1_entry_min: tuple[float, float] = (1.0, 5.0)
    brief_wake_per_hour: tuple[float, float] = (2.0, 5.0)  # at sleep_quality 1 .. 0
    long_waso_count: tuple[float, float] = (1.2, 3.5)  # expected count at sleep_quality 1 .. 0
    long_waso_min: tuple[float, float] = (5.0, 25.0)
    n1_intrusion_per_hour: float = 3.0
    deep_fragment_prob: float = 0.10
    rem_fragment_prob: float = 0.03
    unscored_edge_prob: float = 0.35  # chance of a few unscored epochs at the start and at the end
    unscored_mid_prob: float = 0.15  # chance of one short unscored stretch inside the night


def _runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding: (start index, length, value) of each run of equal values."""
    x = np.asarray(x)
    if x.size == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, x[:0]
    change = np.flatnonzero(np.diff(x)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [x.size]]))
    return starts, lengths, x[starts]


def run_lengths(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding of a stage sequence.

    Returns
    -------
    starts, lengths, values : one entry per run of consecutive equal codes.
    """
    return _runs(x)


def _cycle_template(n_epochs: int, i_cycle: int, n_cycles: int, traits: SleepTraits,
                    p: StageModelParams, rng: np.random.Generator) -> np.ndarray:
    """Stage codes of one NREM-REM cycle: N1 -> N2 -> N3 -> N2 -> REM."""
    frac = i_cycle / max(1, n_cycles - 1)
    n1 = rng.uniform(*p.n1_entry_min) * (1.0 if i_cycle == 0 else 0.6)
    deep = p.first_cycle_deep_min * traits.deep_propensity * max(0.0, 1 - p.deep_decay_per_cycle * i_cycle)
    deep *= rng.uniform(0.75, 1.25)
    rem = (p.first_rem_min + (p.last_rem_min - p.first_rem_min) * frac) * traits.rem_propensity
    rem *= rng.uniform(0.7, 1.3)
    if n_cycles == 1:
        rem = 0.5 * (p.first_rem_min + p.last_rem_min) * traits.rem_propensity
    total_min = n_epochs / EPOCHS_PER_MIN
    n2_min = max(0.25 * total_min, 8.0)
    fixed = n1 + deep + rem
    if fixed > total_min - n2_min:  # shrink deep and REM to leave room for N2
        scale = max(0.0, (total_min - n2_min - n1) / max(deep + rem, 1e-9))
        deep, rem = deep * scale, rem * scale
    e_n1 = max(1, round(n1 * EPOCHS_PER_MIN))
    e_deep = round(deep * EPOCHS_PER_MIN)
    e_rem = round(rem * EPOCHS_PER_MIN)
    e_n2 = max(0, n_epochs - e_n1 - e_deep - e_rem)
    e_n2a = round(e_n2 * rng.uniform(0.5, 0.7))
    seq = np.concatenate([
        np.full(e_n1, N1), np.full(e_n2a, N2), np.full(e_deep, N3),
        np.full(e_n2 - e_n2a, N2), np.full(e_rem, REM),
    ]).astype(np.int8)
    return seq[:n_epochs]


def _place_runs(stages: np.ndarray, lo: int, hi: int, n_runs: int, length_epochs: tuple[int, int],
                value: int, rng: np.random.Generator, eligible: np.ndarray | None = None,
                follow: int | None = None) -> None:
    """Overwrite ``n_runs`` runs of ``value`` at random eligible positions in ``[lo, hi)``."""
    if hi - lo < 4 or n_runs <= 0:
        return
    cand = np.arange(lo, hi)
    if eligible is not None:
        cand = cand[np.isin(stages[lo:hi], eligible)]
    if cand.size == 0:
        return
    for start in rng.choice(cand, size=min(n_runs, cand.size), replace=False):
        k = int(rng.integers(length_epochs[0], length_epochs[1] + 1))
        end = min(hi, start + k)
        stages[start:end] = value
        if follow is not None and end < hi:
            stages[end:min(hi, end + int(rng.integers(1, 3)))] = follow


def simulate_hypnogram(n_epochs: int, traits: SleepTraits, rng: np.random.Generator,
                       params: StageModelParams | None = None) -> np.ndarray:
    """Simulate one night's stage codes.

    Parameters
    ----------
    n_epochs : number of 30-s epochs in the recording (lights-off wake and final wake included).
    traits : the subject's sleep propensities.
    rng : random generator (the only source of randomness).
    params : stage model parameters (defaults: ``StageModelParams()``).

    Returns
    -------
    int8 array of ``n_epochs`` stage codes (-1 unscored, 0 W, 1 N1, 2 N2, 3 N3, 4 N4, 5 REM).
    """
    p = params or StageModelParams()
    q = float(np.clip(traits.sleep_quality, 0.0, 1.0))
    stages = np.full(n_epochs, WAKE, dtype=np.int8)
    if n_epochs < 20:
        return stages
    # Edges: wake before sleep onset, final wake, a few unscored epochs.
    sol = p.sleep_onset_latency_min * (1.6 - q) * np.exp(rng.normal(0, p.sleep_onset_latency_sigma))
    sol_ep = int(np.clip(round(sol * EPOCHS_PER_MIN), 4, 0.2 * n_epochs))
    final_ep = int(np.clip(round(rng.uniform(*p.final_wake_min) * EPOCHS_PER_MIN), 2, 0.1 * n_epochs))
    sleep_lo, sleep_hi = sol_ep, n_epochs - final_ep
    n_sleep = sleep_hi - sleep_lo
    if n_sleep < 20:
        return stages
    # Cycles.
    cycle_ep = traits.cycle_min * EPOCHS_PER_MIN
    n_cycles = max(1, int(round(n_sleep / cycle_ep)))
    w = rng.uniform(0.85, 1.15, size=n_cycles)
    bounds = np.round(np.concatenate([[0], np.cumsum(w) / w.sum() * n_sleep])).astype(int)
    for i in range(n_cycles):
        a, b = sleep_lo + bounds[i], sleep_lo + bounds[i + 1]
        stages[a:b] = _cycle_template(b - a, i, n_cycles, traits, p, rng)
    hours = n_sleep / (60 * EPOCHS_PER_MIN)
    # Fragmentation of N3 and REM, N1 intrusions in N2.
    deep = np.flatnonzero(stages[sleep_lo:sleep_hi] == N3) + sleep_lo
    stages[deep[rng.random(deep.size) < p.deep_fragment_prob]] = N2
    rem = np.flatnonzero(stages[sleep_lo:sleep_hi] == REM) + sleep_lo
    stages[rem[rng.random(rem.size) < p.rem_fragment_prob]] = N1
    _place_runs(stages, sleep_lo, sleep_hi, rng.poisson(p.n1_intrusion_per_hour * hours), (1, 3), N1, rng,
                eligible=np.array([N2]))
    # Brief awakenings (mostly out of light sleep and REM), each followed by N1.
    rate = p.brief_wake_per_hour[0] + (p.brief_wake_per_hour[1] - p.brief_wake_per_hour[0]) * (1 - q)
    _place_runs(stages, sleep_lo + 10, sleep_hi, rng.poisson(rate * hours), (1, 4), WAKE, rng,
                eligible=np.array([N1, N2, REM]), follow=N1)
    # Longer wake after sleep onset, more likely in the second half.
    lam = p.long_waso_count[0] + (p.long_waso_count[1] - p.long_waso_count[0]) * (1 - q)
    lam *= hours / 7.0
    for _ in range(min(5, rng.poisson(lam))):
        mid = sleep_lo + n_sleep * (0.35 + 0.6 * rng.random() ** 0.7)
        k = int(round(rng.uniform(*p.long_waso_min) * EPOCHS_PER_MIN))
        a = int(np.clip(mid - k / 2, sleep_lo + 20, sleep_hi - 2))
        stages[a:min(sleep_hi, a + k)] = WAKE
        stages[min(sleep_hi, a + k):min(sleep_hi, a + k + int(rng.integers(1, 4)))] = N1
    # R&K scoring: the middle of long N3 runs is stage 4.
    if traits.rk_scoring:
        starts, lengths, values = _runs(stages)
        for s, n, v in zip(starts, lengths, values, strict=True):
            if v == N3 and n >= 6:
                k = int(n * rng.uniform(0.4, 0.7))
                a = s + (n - k) // 2
                stages[a:a + k] = N4
    # Unscored epochs at the edges and, rarely, inside the night.
    if rng.random() < p.unscored_edge_prob:
        stages[: int(rng.integers(1, 8))] = UNSCORED
    if rng.random() < p.unscored_edge_prob:
        stages[n_epochs - int(rng.integers(1, 16)):] = UNSCORED
    if rng.random() < p.unscored_mid_prob:
        a = int(rng.integers(sleep_lo, sleep_hi - 6))
        stages[a:a + int(rng.integers(1, 6))] = UNSCORED
    return stages


def stage_fractions(stages: np.ndarray) -> dict[str, float]:
    """Fraction of scored epochs in each class (wake, light, deep, rem).

    Parameters
    ----------
    stages : stage codes as returned by ``simulate_hypnogram``.
    """
    stages = np.asarray(stages)
    scored = stages[stages != UNSCORED]
    n = max(1, scored.size)
    return {
        "wake": float(np.mean(scored == WAKE)) if scored.size else 0.0,
        "light": float(np.isin(scored, [N1, N2]).sum() / n),
        "deep": float(np.isin(scored, [N3, N4]).sum() / n),
        "rem": float((scored == REM).sum() / n),
    }
