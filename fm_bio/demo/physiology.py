"""Per-subject traits and the physiology of one simulated night.

From a hypnogram and a subject's traits this module derives, all on one time axis (seconds from the
recording start):

- an instantaneous heart rate (4-Hz grid) with a stage-dependent mean (wake > REM > light > deep),
  slow drift, LF oscillations (strong in REM and wake), respiratory sinus arrhythmia at the subject's
  breathing rate (strong and regular in deep sleep, irregular in REM) and surges at arousals;
- beat (R-peak) times by integrating that rate, with stage-dependent beat-to-beat jitter and a few
  premature beats;
- respiration (phase and thoracic effort), scored events (arousals, hypopneas, SpO2 desaturations),
  SpO2 and an oximeter-like 1-Hz heart rate with dropouts;
- movement intensity per second (drives actigraphy counts, wrist acceleration and ECG artefacts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtri

from fm_bio.demo.ecg import EcgTraits
from fm_bio.demo.hypnogram import EPOCH_S, N1, N2, N3, N4, REM, UNSCORED, WAKE, SleepTraits


@dataclass(frozen=True)
class SubjectTraits:
    """Everything that makes one simulated subject recognisable.

    Heart rates in beats/min, respiration in breaths/min, amplitudes relative unless a unit is named.
    """

    sex: str  # "F" or "M"
    age_years: int
    bmi_kg_m2: float
    sleep: SleepTraits
    ecg: EcgTraits
    resting_hr_bpm: float  # mean heart rate in N2 early in the night
    wake_hr_offset_bpm: float
    n1_hr_offset_bpm: float
    rem_hr_offset_bpm: float
    deep_hr_offset_bpm: float  # negative
    night_hr_drift_bpm: float  # change of the N2 heart rate from the start to the end of the night
    hrv_scale: float  # multiplies LF/VLF variability
    rsa_scale: float  # multiplies the respiratory sinus arrhythmia
    resp_rate_brpm: float  # breaths per minute in N2
    ectopic_per_hour: float
    arousals_per_hour: float
    ahi_per_hour: float  # hypopneas per hour of sleep
    spo2_baseline_pct: float
    activity_level: float  # multiplies movement and daytime activity
    posture_shifts_per_hour: float  # during sleep


def draw_traits(rng: np.random.Generator, cohort: str = "mesa") -> SubjectTraits:
    """Draw one subject's traits.

    Parameters
    ----------
    rng : random generator.
    cohort : ``"mesa"`` (older adults, 54-94 y, more sleep apnea) or ``"apple_watch"`` (younger adults).
    """
    if cohort == "mesa":
        age = int(rng.integers(55, 92))
        ahi = float(np.clip(rng.lognormal(np.log(9.0), 0.8), 0.5, 45.0))
    elif cohort == "apple_watch":
        age = int(rng.integers(20, 55))
        ahi = float(np.clip(rng.lognormal(np.log(2.5), 0.7), 0.2, 15.0))
    else:
        raise ValueError(f"unknown cohort {cohort!r}; options: 'mesa', 'apple_watch'")
    sex = "M" if rng.random() < 0.47 else "F"
    age_f = (age - 20) / 70.0  # 0 (young) .. 1 (old)
    bmi = float(np.clip(rng.normal(28.5 if cohort == "mesa" else 25.0, 4.5), 18.0, 45.0))
    sleep = SleepTraits(
        sleep_quality=float(np.clip(rng.beta(3.0, 2.0) - 0.15 * age_f + 0.08, 0.1, 0.98)),
        deep_propensity=float(rng.uniform(0.75, 1.35) * (1.15 - 0.35 * age_f)),
        rem_propensity=float(rng.uniform(0.8, 1.2)),
        cycle_min=float(rng.uniform(82.0, 105.0)),
        rk_scoring=bool(rng.random() < (0.15 if cohort == "mesa" else 0.3)),
    )
    ecg = EcgTraits(
        r_amplitude_mv=float(rng.uniform(0.6, 1.9)),
        p_wave_scale=float(rng.uniform(0.5, 1.1)),
        t_wave_scale=float(rng.uniform(0.35, 1.25)),
        s_wave_scale=float(rng.uniform(0.5, 1.6)),
        qrs_width_scale=float(rng.uniform(0.85, 1.25)),
        baseline_wander_mv=float(rng.uniform(0.02, 0.12)),
        noise_mv=float(rng.uniform(0.004, 0.025)),
        powerline_mv=float(rng.uniform(0.0, 0.015)),
        artefact_bursts_per_hour=float(rng.uniform(0.1, 0.8)),
    )
    return SubjectTraits(
        sex=sex,
        age_years=age,
        bmi_kg_m2=round(bmi, 1),
        sleep=sleep,
        ecg=ecg,
        resting_hr_bpm=float(rng.uniform(50.0, 80.0)),
        wake_hr_offset_bpm=float(rng.uniform(6.0, 14.0)),
        n1_hr_offset_bpm=float(rng.uniform(0.8, 2.5)),
        rem_hr_offset_bpm=float(rng.uniform(2.5, 7.0)),
        deep_hr_offset_bpm=-float(rng.uniform(1.5, 5.0)),
        night_hr_drift_bpm=-float(rng.uniform(1.0, 6.0)),
        hrv_scale=float(rng.uniform(0.6, 1.5) * (1.2 - 0.4 * age_f)),
        rsa_scale=float(rng.uniform(0.6, 1.6) * (1.3 - 0.6 * age_f)),
        resp_rate_brpm=float(rng.uniform(11.0, 18.0)),
        ectopic_per_hour=float(rng.choice([0.0, 0.5, 2.0, 6.0], p=[0.4, 0.3, 0.2, 0.1])),
        arousals_per_hour=float(rng.uniform(6.0, 22.0) * (1.3 - 0.5 * sleep.sleep_quality)),
        ahi_per_hour=ahi,
        spo2_baseline_pct=float(rng.uniform(93.0, 97.5)),
        activity_level=float(rng.uniform(0.6, 1.6)),
        posture_shifts_per_hour=float(rng.uniform(1.0, 4.0)),
    )


@dataclass(frozen=True)
class HeartModelParams:
    """Stage-dependent heart-rate model (amplitudes in beats/min before the subject's scales).

    Each tuple is indexed by stage group: (wake, N1, N2, deep, REM).
    """

    grid_hz: float = 4.0
    stage_time_constant_s: float = 25.0
    lf_bpm: tuple[float, ...] = (3.0, 2.2, 1.7, 0.8, 3.2)
    hf_bpm: tuple[float, ...] = (1.0, 1.6, 2.0, 2.6, 1.2)
    vlf_bpm: float = 1.5
    resp_rate_factor: tuple[float, ...] = (1.12, 1.04, 1.0, 0.96, 1.1)
    resp_irregularity: tuple[float, ...] = (0.12, 0.07, 0.04, 0.015, 0.16)
    beat_jitter_s: tuple[float, ...] = (0.006, 0.004, 0.003, 0.0015, 0.006)
    arousal_surge_bpm: tuple[float, float] = (5.0, 15.0)


GROUP_OF_STAGE = {UNSCORED: 0, WAKE: 0, N1: 1, N2: 2, N3: 3, N4: 3, REM: 4}
"""Stage code -> index into the per-group tuples of ``HeartModelParams`` (unscored treated as wake)."""


def stage_groups(stages: np.ndarray) -> np.ndarray:
    """Map stage codes to groups 0 wake, 1 N1, 2 N2, 3 deep, 4 REM."""
    lut = np.zeros(8, dtype=np.int8)
    for code, g in GROUP_OF_STAGE.items():
        lut[code + 1] = g
    return lut[np.asarray(stages, dtype=np.int64) + 1]


@dataclass
class ScoredEvents:
    """Scored events of a night: each a list of (start_s, duration_s[, extra]) tuples."""

    arousals: list[tuple[float, float]] = field(default_factory=list)
    hypopneas: list[tuple[float, float]] = field(default_factory=list)
    desaturations: list[tuple[float, float, float, float]] = field(default_factory=list)  # + nadir, baseline


@dataclass
class Night:
    """One simulated night: the hypnogram and everything derived from it.

    ``t = 0`` is the recording start; ``duration_s`` the recording length.
    """

    stages: np.ndarray  # stage code per 30-s epoch
    duration_s: float
    hr_grid_t_s: np.ndarray
    hr_grid_bpm: np.ndarray  # the model's instantaneous heart rate
    resp_phase_grid: np.ndarray  # cycles, on the same grid
    beat_times_s: np.ndarray  # R peaks, including a few just outside [0, duration_s]
    beat_amplitude: np.ndarray  # relative R amplitude per beat (respiratory modulation)
    movement_1hz: np.ndarray  # movement intensity per second, roughly in g
    posture_shift_s: np.ndarray  # times of posture changes
    events: ScoredEvents

    def stage_per_second(self) -> np.ndarray:
        """Stage code of every second of the recording."""
        n = int(np.ceil(self.duration_s))
        idx = np.minimum(np.arange(n) // int(EPOCH_S), len(self.stages) - 1)
        return self.stages[idx]


def lowpass_noise(n: int, fs_hz: float, cutoff_hz: float, rng: np.random.Generator,
                  low_hz: float = 0.0) -> np.ndarray:
    """Unit-variance Gaussian noise band-limited to ``[low_hz, cutoff_hz]`` (FFT filter)."""
    x = rng.standard_normal(n)
    f = np.fft.rfftfreq(n, 1 / fs_hz)
    X = np.fft.rfft(x)
    X[(f > cutoff_hz) | (f < low_hz)] = 0
    X[0] = 0
    y = np.fft.irfft(X, n)
    s = y.std()
    return y / s if s > 0 else y


def _smooth_exp(x: np.ndarray, fs_hz: float, tau_s: float) -> np.ndarray:
    """First-order low-pass (forward and backward, so it does not lag)."""
    from scipy.signal import filtfilt

    a = np.exp(-1.0 / (tau_s * fs_hz))
    return filtfilt([1 - a], [1, -a], x, padlen=min(len(x) - 1, int(3 * tau_s * fs_hz)))


def _scored_events(stages: np.ndarray, traits: SubjectTraits, duration_s: float,
                   rng: np.random.Generator) -> ScoredEvents:
    """Arousals, hypopneas and desaturations at plausible times (only during sleep)."""
    ev = ScoredEvents()
    sleep_ep = np.flatnonzero(np.isin(stages, [N1, N2, N3, N4, REM]))
    if sleep_ep.size == 0:
        return ev
    hours = sleep_ep.size * EPOCH_S / 3600.0

    def rand_times(n: int, weights: np.ndarray | None = None) -> np.ndarray:
        ep = rng.choice(sleep_ep, size=n, p=weights)
        return np.sort(ep * EPOCH_S + rng.uniform(0, EPOCH_S, size=n))

    # Arousals: spontaneous, plus one before each awakening out of sleep.
    t_ar = list(rand_times(rng.poisson(traits.arousals_per_hour * hours)))
    trans = np.flatnonzero((stages[1:] == WAKE) & np.isin(stages[:-1], [N1, N2, N3, N4, REM])) + 1
    t_ar += list(trans * EPOCH_S - rng.uniform(2.0, 12.0, size=trans.size))
    # Hypopneas: more in REM and light sleep, rare in deep sleep.
    w = np.select([stages[sleep_ep] == REM, np.isin(stages[sleep_ep], [N3, N4])], [2.0, 0.3], 1.0)
    for t0 in rand_times(rng.poisson(traits.ahi_per_hour * hours), w / w.sum()):
        dur = round(float(rng.uniform(10.0, 40.0)), 1)
        ev.hypopneas.append((round(float(t0), 1), dur))
        base = round(traits.spo2_baseline_pct + rng.normal(0, 0.7))
        nadir = base - int(rng.integers(3, 9))
        d0 = t0 + dur - rng.uniform(0.0, 8.0)
        ev.desaturations.append((round(float(d0), 1), round(float(rng.uniform(10.0, 35.0)), 1),
                                 float(nadir), float(base)))
        if rng.random() < 0.4:
            t_ar.append(t0 + dur - rng.uniform(0, 3))
    for t0 in rand_times(rng.poisson(0.25 * traits.ahi_per_hour * hours)):  # isolated desaturations
        base = round(traits.spo2_baseline_pct + rng.normal(0, 0.7))
        ev.desaturations.append((round(float(t0), 1), round(float(rng.uniform(8.0, 25.0)), 1),
                                 float(base - int(rng.integers(3, 6))), float(base)))
    t_ar = np.sort(np.asarray(t_ar))
    t_ar = t_ar[(t_ar > 0) & (t_ar < duration_s - 20)]
    if t_ar.size:
        keep = np.concatenate([[True], np.diff(t_ar) > 15.0])
        t_ar = t_ar[keep]
    ev.arousals = [(round(float(t), 1), round(float(rng.uniform(3.0, 15.0)), 1)) for t in t_ar]
    ev.hypopneas.sort()
    ev.desaturations.sort()
    return ev


def movement_from_stages(stages: np.ndarray, traits: SubjectTraits, duration_s: float, events: ScoredEvents,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Wrist movement intensity per second (roughly in g) and posture-shift times.

    Movement is frequent and large in wake, rare in N1/N2, near absent in deep sleep and REM (with
    small REM twitches); posture shifts add short bursts (some at arousals).

    Returns
    -------
    movement_1hz : float32 array of ``ceil(duration_s)`` values.
    posture_shift_s : sorted times of posture changes (seconds).
    """
    n = int(np.ceil(duration_s))
    st = stage_groups(stages[np.minimum(np.arange(n) // int(EPOCH_S), len(stages) - 1)])
    # Fraction of time moving and movement size per group (wake, N1, N2, deep, REM).
    active_frac = np.array([0.45, 0.12, 0.03, 0.004, 0.025])[st]
    size_g = np.array([0.10, 0.04, 0.03, 0.02, 0.012])[st]
    z = lowpass_noise(n, 1.0, 0.08, rng)
    thr = ndtri(1 - active_frac)
    z2 = lowpass_noise(n, 1.0, 0.2, rng)
    mv = np.where(z > thr, size_g * np.exp(0.6 * z2), 0.0) * traits.activity_level
    # Posture shifts: during sleep at the subject's rate, plus at arousals and in wake.
    sleep_s = np.flatnonzero(st > 0)
    n_shift = rng.poisson(traits.posture_shifts_per_hour * sleep_s.size / 3600.0)
    shifts = list(rng.choice(sleep_s, size=min(n_shift, sleep_s.size), replace=False)) if sleep_s.size else []
    shifts += [a for a, _ in events.arousals if rng.random() < 0.25]
    wake_s = np.flatnonzero(st == 0)
    if wake_s.size:
        shifts += list(rng.choice(wake_s, size=min(wake_s.size, rng.poisson(6.0 * wake_s.size / 3600.0)),
                                  replace=False))
    shifts = np.sort(np.asarray(shifts, dtype=np.float64))
    for t0 in shifts:
        a = int(t0)
        k = int(rng.integers(2, 9))
        mv[a:a + k] += rng.uniform(0.1, 0.35) * traits.activity_level
    return mv.astype(np.float32), shifts


def simulate_night(stages: np.ndarray, traits: SubjectTraits, rng: np.random.Generator,
                   duration_s: float | None = None, params: HeartModelParams | None = None) -> Night:
    """Simulate heart rate, beats, respiration, events and movement for one hypnogram.

    Parameters
    ----------
    stages : stage code per 30-s epoch.
    traits : the subject.
    rng : random generator.
    duration_s : recording length (default: the epochs' length); may exceed it by a partial epoch.
    params : heart-rate model parameters.
    """
    p = params or HeartModelParams()
    stages = np.asarray(stages, dtype=np.int8)
    duration_s = float(duration_s if duration_s is not None else len(stages) * EPOCH_S)
    fs = p.grid_hz
    pad_s = 5.0
    t = np.arange(-pad_s, duration_s + pad_s, 1 / fs)
    ep = np.clip((t // EPOCH_S).astype(np.int64), 0, len(stages) - 1)
    g = stage_groups(stages)[ep]
    n = t.size
    events = _scored_events(stages, traits, duration_s, rng)

    def per_group(values: tuple[float, ...]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)[g]

    offsets = np.array([traits.wake_hr_offset_bpm, traits.n1_hr_offset_bpm, 0.0,
                        traits.deep_hr_offset_bpm, traits.rem_hr_offset_bpm])
    level = traits.resting_hr_bpm + offsets[g]
    level = _smooth_exp(level, fs, p.stage_time_constant_s)
    level += traits.night_hr_drift_bpm * np.clip(t / max(duration_s, 1.0), 0, 1)
    vlf = p.vlf_bpm * traits.hrv_scale * lowpass_noise(n, fs, 0.02, rng)
    lf_amp = _smooth_exp(per_group(p.lf_bpm), fs, 15.0) * traits.hrv_scale
    lf = lf_amp * lowpass_noise(n, fs, 0.15, rng, low_hz=0.04)
    # Respiration: stage-dependent rate and regularity; RSA in phase with it.
    irr = _smooth_exp(per_group(p.resp_irregularity), fs, 10.0)
    f_resp = traits.resp_rate_brpm / 60.0 * _smooth_exp(per_group(p.resp_rate_factor), fs, 20.0)
    f_resp = f_resp * (1 + irr * lowpass_noise(n, fs, 0.05, rng) * 2.0)
    f_resp = np.clip(f_resp, 0.1, 0.6)
    resp_phase = np.cumsum(f_resp) / fs
    hf_amp = _smooth_exp(per_group(p.hf_bpm), fs, 15.0) * traits.rsa_scale
    hf_amp = hf_amp * (1 + 0.3 * lowpass_noise(n, fs, 0.02, rng))
    hf = hf_amp * np.sin(2 * np.pi * resp_phase)
    # Surges at arousals (peak ~6 s after onset, gone after ~30 s).
    imp = np.zeros(n)
    for a, _ in events.arousals:
        i = int((a + pad_s) * fs)
        if 0 <= i < n:
            imp[i] += rng.uniform(*p.arousal_surge_bpm)
    kt = np.arange(0, 40, 1 / fs)
    kernel = (kt / 6.0) * np.exp(1 - kt / 6.0)
    surge = np.convolve(imp, kernel)[:n]
    hr = np.clip(level + vlf + lf + hf + surge, 38.0, 165.0)
    # Beats: integrate the rate, beats at integer phase.
    phase = np.cumsum(hr / 60.0) / fs
    k = np.arange(np.ceil(phase[0]), np.floor(phase[-1]))
    beats = np.interp(k, phase, t)
    gb = np.asarray(p.beat_jitter_s)[g[np.clip(((beats + pad_s) * fs).astype(np.int64), 0, n - 1)]]
    beats = beats + rng.standard_normal(beats.size) * gb
    # Premature beats: early by 25-35 % of the RR interval, followed by a compensatory pause.
    n_ect = rng.poisson(traits.ectopic_per_hour * duration_s / 3600.0)
    if n_ect and beats.size > 10:
        idx = rng.choice(np.arange(2, beats.size - 2), size=min(n_ect, beats.size - 4), replace=False)
        rr = beats[idx] - beats[idx - 1]
        beats[idx] -= rr * rng.uniform(0.25, 0.35, size=idx.size)
    beats = np.sort(beats)
    keep = np.concatenate([[True], np.diff(beats) > 0.25])
    beats = beats[keep]
    # Respiratory modulation of the R amplitude (electrical axis moves with breathing).
    rp = np.interp(beats, t, resp_phase)
    beat_amp = 1.0 + 0.06 * np.sin(2 * np.pi * rp + 0.7) + 0.03 * rng.standard_normal(beats.size)
    movement, shifts = movement_from_stages(stages, traits, duration_s, events, rng)
    return Night(stages=stages, duration_s=duration_s, hr_grid_t_s=t, hr_grid_bpm=hr.astype(np.float32),
                 resp_phase_grid=resp_phase, beat_times_s=beats, beat_amplitude=beat_amp,
                 movement_1hz=movement, posture_shift_s=shifts, events=events)


def beat_heart_rate(beat_times_s: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """Heart rate (bpm) from beat times, linearly interpolated at ``t_s``."""
    b = np.asarray(beat_times_s)
    rr = np.diff(b)
    return np.interp(t_s, b[1:] - rr / 2, 60.0 / rr)


def oximeter_signals(night: Night, rng: np.random.Generator, spo2_baseline_pct: float,
                     averaging_s: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-Hz oximeter heart rate, SpO2 and status, as an oximeter would report them.

    Heart rate is averaged over ``averaging_s``, delayed ~2 s and rounded to integers; SpO2 dips at
    the scored desaturations. A few short dropouts (more in wake with movement) read 0 in both, with a
    non-zero status.

    Returns
    -------
    hr_bpm, spo2_pct, status : arrays of ``ceil(duration_s)`` values (integers as float).
    """
    n = int(np.ceil(night.duration_s))
    t = np.arange(n, dtype=np.float64)
    hr = beat_heart_rate(night.beat_times_s, t - 2.0)
    k = max(1, int(averaging_s))
    hr = np.convolve(np.pad(hr, (k - 1, 0), mode="edge"), np.ones(k) / k, mode="valid")
    hr = np.round(hr)
    spo2 = spo2_baseline_pct + 0.6 * lowpass_noise(n, 1.0, 0.01, rng)
    for t0, dur, nadir, base in night.events.desaturations:
        a, b = int(t0), int(min(n, t0 + dur + 15))
        if a >= n:
            continue
        u = (t[a:b] - t0) / max(dur, 1.0)
        shape = np.where(u < 0.7, u / 0.7, np.maximum(0.0, 1 - (u - 0.7) / 0.8))
        spo2[a:b] = np.minimum(spo2[a:b], base - (base - nadir) * shape)
    spo2 = np.clip(np.round(spo2), 70, 100)
    status = np.zeros(n)
    mv = night.movement_1hz[:n]
    w = 0.2 + (mv > 0.1)
    n_drop = rng.poisson(2.0 + 3.0 * n / 28800.0)
    for c in rng.choice(n, size=min(n, n_drop), replace=False, p=w / w.sum()):
        d = int(rng.integers(3, 40))
        hr[c:c + d] = 0
        spo2[c:c + d] = 0
        status[c:c + d] = 2
    return hr, spo2, status


def thoracic_effort(night: Night, sfreq_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Thoracic effort belt signal (arbitrary units around 0), reduced during hypopneas."""
    n = int(round(night.duration_s * sfreq_hz))
    t = np.arange(n) / sfreq_hz
    ph = np.interp(t, night.hr_grid_t_s, night.resp_phase_grid)
    amp = 1.0 + 0.25 * lowpass_noise(n // int(sfreq_hz) + 2, 1.0, 0.02, rng)
    amp = np.interp(t, np.arange(amp.size), amp)
    for t0, dur in night.events.hypopneas:
        m = (t >= t0) & (t < t0 + dur)
        amp[m] *= 0.4
    x = amp * (np.sin(2 * np.pi * ph) + 0.25 * np.sin(4 * np.pi * ph + 0.6))
    drift = 0.3 * lowpass_noise(n // int(sfreq_hz) + 2, 1.0, 0.01, rng)
    x += np.interp(t, np.arange(drift.size), drift)
    mv = np.interp(t, np.arange(night.movement_1hz.size), night.movement_1hz)
    x += (0.05 + 4.0 * mv) * rng.standard_normal(n)
    return x
