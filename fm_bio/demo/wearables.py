"""Wearable-device signals around a simulated night.

- MESA wrist actigraphy (Actiwatch Spectrum style): 30-s activity counts, light, off-wrist flags,
  rest/active intervals and sleep/wake scoring over a few days that include the PSG night.
- Apple Watch (sleep-accel style): irregularly sampled PPG heart rate (sparse in the days before
  the night, ~5 s during the night), step counts and wrist acceleration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fm_bio.demo.hypnogram import EPOCH_S, N1, N2, N3, N4, REM, WAKE, simulate_hypnogram
from fm_bio.demo.physiology import (
    Night,
    ScoredEvents,
    SubjectTraits,
    beat_heart_rate,
    lowpass_noise,
    movement_from_stages,
)

DAY_S = 86400.0
SLEEP_CODES = (N1, N2, N3, N4, REM)


@dataclass(frozen=True)
class ActigraphyParams:
    """Actigraphy device and scoring parameters."""

    epoch_s: float = 30.0
    counts_per_g_s: float = 55.0  # activity counts per (g x s) of wrist movement
    daytime_median_counts: float = 160.0
    wake_threshold_counts: float = 40.0  # Actiware "medium" threshold
    excluded_per_day: tuple[int, int] = (0, 2)
    excluded_min: tuple[float, float] = (8.0, 45.0)
    max_counts: float = 2000.0


def clock_str(seconds_of_day: float) -> str:
    """Clock time as MESA actigraphy writes it: ``H:MM:SS`` (hour without a leading zero)."""
    s = int(round(seconds_of_day)) % int(DAY_S)
    return f"{s // 3600}:{(s % 3600) // 60:02d}:{s % 60:02d}"


def daytime_intensity(clock_s: np.ndarray, traits: SubjectTraits, rng: np.random.Generator,
                      fs_hz: float) -> np.ndarray:
    """Relative activity while awake (1 = typical), by time of day, with sedentary bouts and peaks."""
    hour = (np.asarray(clock_s) % DAY_S) / 3600.0
    circ = 0.55 + 0.45 * np.clip(np.sin(np.pi * (hour - 7.0) / 15.0), 0, None)  # low early/late
    n = hour.size
    z = lowpass_noise(n, fs_hz, fs_hz / 20, rng)  # bouts of ~10 samples
    sedentary = z < -0.3
    level = circ * traits.activity_level * np.exp(0.7 * lowpass_noise(n, fs_hz, fs_hz / 8, rng))
    return np.where(sedentary, 0.02 * level, level)


def _actiware_wake(counts: np.ndarray, threshold: float) -> np.ndarray:
    """Actiware sleep/wake scoring for 30-s epochs (weighted sum over +-2 min > threshold)."""
    w = np.array([0.04, 0.04, 0.2, 0.2, 2.0, 0.2, 0.2, 0.04, 0.04])
    c = np.nan_to_num(counts, nan=0.0)
    total = np.convolve(c, w, mode="same")
    return (total > threshold).astype(np.int8)


def simulate_actigraphy(night: Night, traits: SubjectTraits, rng: np.random.Generator, *,
                        act_start_s: float, psg_start_s: float, act_end_s: float, first_weekday: int,
                        psg_night_excluded: bool = False, params: ActigraphyParams | None = None) -> dict:
    """Actigraphy rows (one per 30 s) around a PSG night.

    Parameters
    ----------
    night : the PSG night (its movement drives the counts during the recording).
    traits : the subject.
    rng : random generator.
    act_start_s, psg_start_s, act_end_s : absolute times (seconds from midnight of the first day);
        ``psg_start_s - act_start_s`` must be a multiple of 30 s.
    first_weekday : day of week of the first day (1 = Sunday .. 7 = Saturday).
    psg_night_excluded : put one short EXCLUDED stretch inside the PSG night.
    params : device parameters.

    Returns
    -------
    dict of column name -> array (``activity``/light are NaN on EXCLUDED rows), plus ``psg_line``:
    the line (1-based) at the PSG start.
    """
    p = params or ActigraphyParams()
    ep = p.epoch_s
    if (psg_start_s - act_start_s) % ep:
        raise ValueError("the PSG start must fall on an actigraphy epoch boundary")
    n = int((act_end_s - act_start_s) // ep)
    t_abs = act_start_s + ep * np.arange(n)
    psg_i0 = int((psg_start_s - act_start_s) // ep)
    n_psg = int(night.duration_s // ep)
    counts = np.zeros(n)
    interval = np.full(n, "ACTIVE", dtype=object)
    light = np.zeros(n)
    # Daytime activity and light.
    intensity = daytime_intensity(t_abs, traits, rng, 1.0 / ep)
    counts[:] = np.minimum(p.daytime_median_counts * intensity * np.exp(0.5 * rng.standard_normal(n)),
                           p.max_counts)
    counts[counts < 2.0] = 0.0  # device dead band
    hour = (t_abs % DAY_S) / 3600.0
    outdoors = lowpass_noise(n, 1.0 / ep, 1.0 / (ep * 60), rng) > 0.9
    light[:] = np.where((hour > 7) & (hour < 19), 150.0, 60.0) * np.exp(0.6 * rng.standard_normal(n))
    light[outdoors & (hour > 7) & (hour < 19)] *= 25.0
    # Nights: the PSG night from the simulated movement, other nights from their own hypnograms.
    nights = []
    for day in range(int(act_start_s // DAY_S), int(act_end_s // DAY_S) + 1):
        bed = day * DAY_S + rng.uniform(21.5, 23.8) * 3600.0
        if abs(bed - psg_start_s) < 8 * 3600:
            continue
        length = rng.uniform(6.5, 8.5) * 3600.0
        i0, k = int((bed - act_start_s) // ep), int(length // ep)
        if i0 + k <= 0 or i0 >= n:
            continue
        st = simulate_hypnogram(k, traits.sleep, rng)
        mv, _ = movement_from_stages(st, traits, k * ep, ScoredEvents(), rng)
        nights.append((i0, st, mv))
    nights.append((psg_i0, night.stages[:n_psg], night.movement_1hz))
    for i0, st, mv in nights:
        k = len(st)
        per_ep = mv[: k * int(ep)].reshape(k, int(ep)).sum(axis=1)
        c = p.counts_per_g_s * per_ep * np.exp(0.3 * rng.standard_normal(k))
        c[c < 2.0] = 0.0  # device dead band
        sleep = np.isin(st, SLEEP_CODES)
        lo, hi = max(0, -i0), min(k, n - i0)
        seg = slice(i0 + lo, i0 + hi)
        counts[seg] = c[lo:hi]
        light[seg] = np.where(st[lo:hi] == WAKE, rng.uniform(0.0, 3.0, hi - lo), 0.0)
        if lo == 0:  # lights on until lights off, then dark
            light[max(0, i0 - 20):i0] = rng.uniform(20, 150)
        iv = np.full(k, "REST", dtype=object)
        if sleep.any():
            a, b = np.flatnonzero(sleep)[[0, -1]]
            a = max(0, a + int(rng.integers(-2, 5)))
            b = min(k - 1, b + int(rng.integers(-4, 3)))
            iv[a:b + 1] = "REST-S"
        interval[seg] = iv[lo:hi]
    counts = np.round(counts)
    offwrist = np.zeros(n, dtype=np.int8)
    # EXCLUDED stretches (watch off: shower, charging), never inside a night except when asked.
    in_night = np.zeros(n, dtype=bool)
    for i0, st, _ in nights:
        in_night[max(0, i0 - 60):max(0, min(n, i0 + len(st) + 20))] = True
    n_days = max(1, int(round((act_end_s - act_start_s) / DAY_S)))
    for _ in range(sum(int(rng.integers(p.excluded_per_day[0], p.excluded_per_day[1] + 1))
                       for _ in range(n_days))):
        k = int(rng.uniform(*p.excluded_min) * 60 / ep)
        cand = np.flatnonzero(~in_night[: max(1, n - k)])
        if cand.size:
            a = int(rng.choice(cand))
            offwrist[a:a + k] = 1
    if psg_night_excluded and n_psg > 200:
        a = psg_i0 + int(rng.integers(n_psg // 3, 2 * n_psg // 3))
        offwrist[a:a + int(rng.integers(2, 7))] = 1
    excluded = offwrist.astype(bool)
    interval[excluded] = "EXCLUDED"
    counts[excluded] = np.nan
    light[excluded] = np.nan
    wake = _actiware_wake(counts, p.wake_threshold_counts).astype(np.float64)
    wake[excluded] = np.nan
    marker = np.zeros(n, dtype=np.int8)
    for i in (psg_i0, psg_i0 + n_psg):  # event-marker presses at lights off / lights on
        if 0 <= i < n:
            marker[i] = 1
    light = np.round(light, 2)
    day0 = int(act_start_s // DAY_S)
    daybymidnight = (t_abs // DAY_S).astype(int) - day0 + 1
    noon0 = int((act_start_s - DAY_S / 2) // DAY_S)
    daybynoon = ((t_abs - DAY_S / 2) // DAY_S).astype(int) - noon0 + 1
    dayofweek = (first_weekday - 1 + daybymidnight - 1) % 7 + 1
    return {
        "line": np.arange(1, n + 1),
        "linetime": [clock_str(t) for t in t_abs],
        "offwrist": offwrist,
        "activity": counts,
        "marker": marker,
        "whitelight": light,
        "redlight": np.round(light * 0.11, 2),
        "greenlight": np.round(light * 0.16, 2),
        "bluelight": np.round(light * 0.07, 2),
        "wake": wake,
        "interval": interval,
        "dayofweek": dayofweek,
        "daybymidnight": daybymidnight,
        "daybynoon": daybynoon,
        "psg_line": psg_i0 + 1,
    }


# ----------------------------------------------------------------------------------- Apple Watch
@dataclass(frozen=True)
class AppleWatchParams:
    """Sampling of the Apple Watch streams."""

    night_hr_median_dt_s: float = 5.0
    day_hr_mean_dt_s: float = 300.0
    motion_sfreq_hz: float = 5.0  # the real files are ~50 Hz; kept low so the demo stays small
    steps_bin_s: float = 600.0


def _day_awake_mask(t_rel: np.ndarray, psg_clock_s: float, wake_h: float, bed_h: float) -> np.ndarray:
    """True where the subject is up (between ``wake_h`` and ``bed_h`` o'clock) on previous days."""
    clock_h = ((t_rel + psg_clock_s) % DAY_S) / 3600.0
    return (clock_h >= wake_h) & (clock_h < bed_h)


def apple_watch_heart_rate(night: Night, traits: SubjectTraits, rng: np.random.Generator, *,
                           history_s: float, psg_clock_s: float, label_end_s: float,
                           params: AppleWatchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """PPG heart rate as the watch logs it: sparse in the days before, ~5 s during the night.

    Returns sorted ``(t_s, bpm)``; ``t_s`` is relative to the PSG start (negative before it).
    """
    p = params or AppleWatchParams()
    wake_h, bed_h = rng.uniform(6.5, 8.5), rng.uniform(22.0, 23.5)
    session_start = -rng.uniform(600.0, 3600.0)
    # Days before: background readings every few minutes while worn, some workouts.
    n_day = int(history_s / p.day_hr_mean_dt_s * 1.2) + 10
    t_day = -history_s + np.cumsum(rng.exponential(p.day_hr_mean_dt_s, size=n_day) + 2.0)
    t_day = t_day[(t_day < session_start - 60) & _day_awake_mask(t_day, psg_clock_s, wake_h, bed_h)]
    workouts = []
    for _ in range(rng.poisson(history_s / DAY_S * 0.7)):
        w0 = rng.uniform(-history_s, session_start - 3600)
        if _day_awake_mask(np.array([w0]), psg_clock_s, wake_h, bed_h)[0]:
            workouts.append((w0, rng.uniform(600, 2400)))
    for w0, d in workouts:
        t_day = np.concatenate([t_day, w0 + np.cumsum(rng.integers(3, 8, size=int(d / 5)))])
    t_day = np.sort(t_day)
    day_level = traits.resting_hr_bpm + 8 + 18 * daytime_intensity(t_day + psg_clock_s, traits, rng, 1 / 300)
    for w0, d in workouts:
        m = (t_day >= w0) & (t_day < w0 + d)
        day_level[m] = traits.resting_hr_bpm + rng.uniform(45, 80) + 5 * rng.standard_normal(m.sum())
    day_bpm = day_level + 3 * rng.standard_normal(t_day.size)
    # The night session: ~5-s readings (integer steps on a fractional base), a few gaps.
    end = label_end_s + rng.uniform(300.0, 3600.0)
    steps = rng.choice([2, 3, 4, 5, 5, 5, 5, 6, 7, 8, 9, 10], size=int((end - session_start) / 4) + 10)
    t_night = session_start + np.cumsum(steps).astype(np.float64)
    base = rng.uniform(0, 1)
    for _ in range(rng.poisson(3)):  # the fractional part shifts now and then
        i = int(rng.integers(0, t_night.size))
        t_night[i:] += rng.uniform(-0.5, 0.5)
    t_night += base
    t_night = t_night[t_night < end]
    keep = np.ones(t_night.size, dtype=bool)
    for _ in range(rng.poisson(4)):  # gaps
        i = int(rng.integers(0, t_night.size))
        keep[i:i + int(rng.integers(3, 25))] = False
    if rng.random() < 0.3:
        i = int(rng.integers(0, t_night.size))
        keep[i:i + int(rng.integers(60, 180))] = False
    t_night = t_night[keep]
    inside = (t_night >= 0) & (t_night < night.duration_s)
    bpm = traits.resting_hr_bpm + 10 + 3 * rng.standard_normal(t_night.size)  # before/after: awake
    ppg = beat_heart_rate(night.beat_times_s, t_night[inside])
    # PPG smoothing (~8 s) and noise; worse with movement.
    ppg_s = beat_heart_rate(night.beat_times_s, t_night[inside] - 4.0)
    mv = np.interp(t_night[inside], np.arange(night.movement_1hz.size), night.movement_1hz)
    bpm[inside] = 0.5 * (ppg + ppg_s) + (1.0 + 25.0 * mv) * rng.standard_normal(inside.sum())
    t_all = np.concatenate([t_day, t_night])
    bpm_all = np.clip(np.round(np.concatenate([day_bpm, bpm])), 35, 200)
    return t_all, bpm_all


def apple_watch_steps(traits: SubjectTraits, rng: np.random.Generator, *, t_first_s: float, t_last_s: float,
                      psg_clock_s: float, night_wake: np.ndarray,
                      params: AppleWatchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step counts per ~10-min bin (zero at night, a few steps at long night awakenings).

    ``night_wake`` is a boolean per 30-s PSG epoch (True where awake); bins inside the PSG night get
    steps only when most of the bin is wake.
    """
    p = params or AppleWatchParams()
    t = np.arange(t_first_s, t_last_s, p.steps_bin_s) + rng.uniform(-20, 20)
    wake_h, bed_h = rng.uniform(6.5, 8.5), rng.uniform(22.0, 23.5)
    up = _day_awake_mask(t, psg_clock_s, wake_h, bed_h) & (t < -1800)
    inten = daytime_intensity(t + psg_clock_s, traits, rng, 1 / p.steps_bin_s)
    steps = np.where(up, np.minimum(200 * inten * np.exp(0.6 * rng.standard_normal(t.size)), 1300), 0.0)
    ep = (t // EPOCH_S).astype(np.int64)
    asleep = np.flatnonzero(~night_wake)
    first_sleep = asleep[0] if asleep.size else night_wake.size
    for i in np.flatnonzero((ep > first_sleep) & (ep < night_wake.size)):  # out of bed at long awakenings
        e0 = ep[i]
        if night_wake[e0:e0 + int(p.steps_bin_s // EPOCH_S)].mean() > 0.8 and rng.random() < 0.4:
            steps[i] = rng.integers(5, 60)
    return t, np.round(steps)


def _random_unit_vectors(k: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((k, 3))
    v[:, 2] -= 0.8  # the watch face tends to point up when lying (z ~ -1 g)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def apple_watch_motion(night: Night, rng: np.random.Generator, *, t_start_s: float, t_end_s: float,
                       params: AppleWatchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Wrist acceleration (g): gravity orientation changing at posture shifts, movement noise by stage.

    Returns ``(t_s, xyz)`` with jittered sampling at about ``params.motion_sfreq_hz`` and a few gaps.
    """
    p = params or AppleWatchParams()
    dt = 1.0 / p.motion_sfreq_hz
    n = int((t_end_s - t_start_s) / dt)
    t = t_start_s + np.cumsum(dt * (1 + 0.03 * rng.standard_normal(n)).clip(0.5, 1.5))
    keep = np.ones(n, dtype=bool)
    for _ in range(rng.poisson(3)):
        i = int(rng.integers(0, n))
        keep[i:i + int(rng.integers(5, 100))] = False
    t = t[keep & (t < t_end_s)]
    mv_t = np.arange(night.movement_1hz.size, dtype=np.float64)
    mv = np.interp(t, mv_t, night.movement_1hz, left=0.08, right=0.08)
    # Orientation segments between posture shifts (and frequent changes before/after the night).
    extra = np.concatenate([np.arange(t_start_s, 0, 60.0), np.arange(night.duration_s, t_end_s, 60.0)])
    shifts = np.sort(np.concatenate([night.posture_shift_s, extra]))
    seg = np.searchsorted(shifts, t)
    g = _random_unit_vectors(shifts.size + 1, rng)[seg]
    # Slow wobble (breathing, small drifts) and movement noise.
    phase = np.interp(t, night.hr_grid_t_s, night.resp_phase_grid)
    wobble = 0.003 * np.sin(2 * np.pi * phase)[:, None]
    noise = (0.004 + mv[:, None]) * rng.standard_normal((t.size, 3))
    xyz = g * (1.0 + wobble) + noise
    return t, xyz
