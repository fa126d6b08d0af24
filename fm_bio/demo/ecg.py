"""Fast synthetic ECG placed at given beat times.

One clean beat is simulated per subject with neurokit2's ECGSYN model (a few seconds, subject-specific
P/Q/R/S/T amplitudes and widths), cut into a template, and then placed at the subject's own R-peak
times by time-warping: the QRS keeps its width, the ST-T part stretches with the RR interval
(Bazett-like, ``sqrt(RR)``). Everything is vectorised over samples (no loop per sample or per beat),
so an 8-h night at 256 Hz takes about a second. Baseline wander, muscle noise during wake and
movement, mild powerline hum and a few electrode artefact bursts are added on top.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EcgTraits:
    """Per-subject ECG morphology and noise (amplitudes in mV).

    Attributes
    ----------
    r_amplitude_mv : height of the R peak above the baseline.
    p_wave_scale, t_wave_scale, s_wave_scale : relative size of the P, T and S waves (1 = ECGSYN default).
    qrs_width_scale : relative QRS width (1 = ECGSYN default).
    baseline_wander_mv : standard deviation of the slow baseline wander.
    noise_mv : standard deviation of the broadband (muscle/amplifier) noise during quiet sleep.
    powerline_mv : amplitude of the 60-Hz hum.
    artefact_bursts_per_hour : rate of short electrode artefact bursts.
    """

    r_amplitude_mv: float = 1.0
    p_wave_scale: float = 1.0
    t_wave_scale: float = 1.0
    s_wave_scale: float = 1.0
    qrs_width_scale: float = 1.0
    baseline_wander_mv: float = 0.05
    noise_mv: float = 0.01
    powerline_mv: float = 0.005
    artefact_bursts_per_hour: float = 0.5


@dataclass(frozen=True)
class BeatTemplate:
    """One beat, R peak at ``t_s == 0``, baseline 0, R amplitude 1, simulated at RR = 1 s."""

    t_s: np.ndarray
    value: np.ndarray
    qrs_half_width_s: float = 0.05


TEMPLATE_PRE_S = 0.40
"""Template span before the R peak (P wave and PR segment)."""
TEMPLATE_POST_S = 0.60
"""Template span after the R peak at RR = 1 s (ST segment and T wave)."""


def make_beat_template(traits: EcgTraits, seed: int, sfreq_hz: int = 1024) -> BeatTemplate:
    """Simulate a few clean beats with neurokit2 ECGSYN at 60 bpm and cut the median beat.

    Parameters
    ----------
    traits : morphology of the subject.
    seed : seed of ECGSYN's own random generator.
    sfreq_hz : sampling rate of the template (fine, since beats are placed with sub-sample precision).
    """
    import neurokit2 as nk  # heavy import, only when an ECG is made

    ai = (1.2 * traits.p_wave_scale, -5.0, 30.0, -7.5 * traits.s_wave_scale, 0.75 * traits.t_wave_scale)
    w = traits.qrs_width_scale
    bi = (0.25, 0.1 * w, 0.1 * w, 0.1 * w, 0.4)
    sig = nk.ecg_simulate(duration=8, sampling_rate=sfreq_hz, heart_rate=60, heart_rate_std=0,
                          method="ecgsyn", noise=0, random_state=seed, ai=ai, bi=bi)
    sig = np.asarray(sig, dtype=np.float64)
    pre, post = int(TEMPLATE_PRE_S * sfreq_hz), int(TEMPLATE_POST_S * sfreq_hz)
    # R peaks: maxima of 1-s windows (the rate is 60 bpm).
    peaks = []
    for a in range(sfreq_hz, len(sig) - 2 * sfreq_hz, sfreq_hz):
        b = a + sfreq_hz
        peaks.append(a + int(np.argmax(sig[a:b])))
    peaks = [p for p in peaks if p - pre >= 0 and p + post < len(sig)]
    beats = np.stack([sig[p - pre:p + post] for p in peaks])
    beat = np.median(beats, axis=0)
    # Baseline from the TP segment at both ends, then taper the ends to exactly zero.
    edge = int(0.03 * sfreq_hz)
    beat = beat - np.median(np.concatenate([beat[:edge], beat[-edge:]]))
    taper = np.ones_like(beat)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, 2 * edge))
    taper[: 2 * edge] = ramp
    taper[-2 * edge:] = ramp[::-1]
    beat = beat * taper
    beat = beat / beat[pre]
    t = (np.arange(beat.size) - pre) / sfreq_hz
    return BeatTemplate(t_s=t, value=beat, qrs_half_width_s=0.05 * w)


def _lowpass_noise(n: int, fs_hz: float, cutoff_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise band-limited to ``[0, cutoff_hz]`` (FFT filter)."""
    x = rng.standard_normal(n)
    f = np.fft.rfftfreq(n, 1 / fs_hz)
    X = np.fft.rfft(x)
    X[f > cutoff_hz] = 0
    X[0] = 0
    y = np.fft.irfft(X, n)
    s = y.std()
    return y / s if s > 0 else y


def synthesize_ecg(beat_times_s: np.ndarray, duration_s: float, sfreq_hz: float, template: BeatTemplate,
                   traits: EcgTraits, rng: np.random.Generator, *, beat_amplitude: np.ndarray | None = None,
                   movement_1hz: np.ndarray | None = None, resp_phase_1hz: np.ndarray | None = None,
                   chunk_s: float = 1800.0) -> np.ndarray:
    """Place ``template`` at ``beat_times_s`` and add realistic noise.

    Parameters
    ----------
    beat_times_s : sorted R-peak times in seconds; should extend a little beyond ``[0, duration_s]``.
    duration_s : length of the signal in seconds.
    sfreq_hz : sampling rate of the output.
    template : the subject's beat (``make_beat_template``).
    traits : amplitudes of the beat and of the noise sources.
    rng : random generator for the noise.
    beat_amplitude : per-beat multiplier of the R amplitude (e.g. respiratory modulation); default 1.
    movement_1hz : movement intensity per second (0 = still); drives muscle noise and motion artefacts.
    resp_phase_1hz : respiratory phase (cycles) per second; adds a respiration-locked baseline sway.
    chunk_s : samples are synthesised in chunks of this length to bound memory.

    Returns
    -------
    float32 array of ``round(duration_s * sfreq_hz)`` samples in mV.
    """
    beats = np.asarray(beat_times_s, dtype=np.float64)
    n = int(round(duration_s * sfreq_hz))
    if beat_amplitude is None:
        beat_amplitude = np.ones(beats.size)
    amp = np.asarray(beat_amplitude, dtype=np.float64) * traits.r_amplitude_mv
    rr = np.diff(beats)
    rr_after = np.concatenate([rr, [rr[-1] if rr.size else 1.0]])
    # Bazett-like stretch of ST-T: template was made at RR = 1 s.
    stretch = np.clip(np.sqrt(rr_after), 0.55, 1.35)
    qrs = template.qrs_half_width_s
    t_tpl, v_tpl = template.t_s, template.value
    post_mask = t_tpl >= 0
    post_t, post_v = t_tpl[post_mask], v_tpl[post_mask]
    pre_t, pre_v = -t_tpl[~post_mask][::-1], v_tpl[~post_mask][::-1]  # increasing "time before R"
    pre_t = np.concatenate([[0.0], pre_t])
    pre_v = np.concatenate([[post_v[0]], pre_v])

    # Slow components on a coarse grid (4 Hz), interpolated per chunk.
    fs_slow = 4.0
    n_slow = int(np.ceil(duration_s * fs_slow)) + 2
    t_slow = np.arange(n_slow) / fs_slow
    wander = traits.baseline_wander_mv * _lowpass_noise(n_slow, fs_slow, 0.15, rng)
    if resp_phase_1hz is not None and len(resp_phase_1hz) > 1:
        phase = np.interp(t_slow, np.arange(len(resp_phase_1hz)), resp_phase_1hz)
        wander = wander + 0.4 * traits.baseline_wander_mv * np.sin(2 * np.pi * phase)
    if movement_1hz is not None and len(movement_1hz) > 1:
        mv = np.interp(t_slow, np.arange(len(movement_1hz)), movement_1hz)
    else:
        mv = np.zeros(n_slow)
    motion = 0.6 * mv * _lowpass_noise(n_slow, fs_slow, 1.5, rng)  # electrode motion artefact, mV
    emg_env = traits.noise_mv * (1.0 + 6.0 * mv)
    hum_amp = traits.powerline_mv * (1 + 0.3 * _lowpass_noise(n_slow, fs_slow, 0.01, rng))
    hum_phase = rng.uniform(0, 2 * np.pi)
    # Artefact bursts: a few seconds of large electrode-motion noise (0.5-8 Hz) under a smooth window.
    n_burst = rng.poisson(traits.artefact_bursts_per_hour * duration_s / 3600.0)
    bursts = []
    for _ in range(n_burst):
        dur = rng.uniform(1.5, 8.0)
        shape = _lowpass_noise(int(dur * 64) + 1, 64.0, 8.0, rng) * rng.uniform(0.3, 1.2)
        bursts.append((rng.uniform(0, max(1.0, duration_s - 10)), dur, shape))

    out = np.empty(n, dtype=np.float32)
    step = int(chunk_s * sfreq_hz)
    for a in range(0, n, step):
        b = min(n, a + step)
        t = np.arange(a, b) / sfreq_hz
        k = np.searchsorted(beats, t, side="right") - 1  # last beat at or before t
        k_prev = np.clip(k, 0, beats.size - 1)
        k_next = np.clip(k + 1, 0, beats.size - 1)
        # After-R part of the last beat (QRS unwarped, ST-T stretched).
        tau = t - beats[k_prev]
        tau = np.where(tau < qrs, tau, qrs + (tau - qrs) / stretch[k_prev])
        x = np.interp(tau, post_t, post_v, left=0.0, right=0.0) * amp[k_prev]
        x = np.where(k >= 0, x, 0.0)
        # Before-R part of the next beat (P wave, PR segment).
        tau = beats[k_next] - t
        y = np.interp(tau, pre_t, pre_v, left=0.0, right=0.0) * amp[k_next]
        x += np.where(tau > 0, y, 0.0)
        # Noise.
        x += np.interp(t, t_slow, wander + motion)
        x += np.interp(t, t_slow, emg_env) * rng.standard_normal(t.size)
        x += np.interp(t, t_slow, hum_amp) * np.sin(2 * np.pi * 60.0 * t + hum_phase)
        for t0, dur, shape in bursts:
            if t0 + dur < t[0] or t0 > t[-1]:
                continue
            m = (t >= t0) & (t < t0 + dur)
            u = t[m] - t0
            x[m] += np.sin(np.pi * u / dur) ** 2 * np.interp(u, np.arange(shape.size) / 64.0, shape)
        out[a:b] = x
    return out
