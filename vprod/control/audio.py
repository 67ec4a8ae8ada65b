"""Audio analysis: level, band energies, onsets and tempo from an input device or a file, as modulation sources.

    [audio]
    file = "loop.wav"        # WAV/FLAC, relative to the preset; played in real time (or: device = "default")
    loop = true              # start the file again at its end
    gain = 1.0               # linear input gain before analysis
    bands = [20, 250, 2500, 16000]   # band edges in Hz: here three bands, band0 (low), band1 (mid), band2 (high)
    tempo = true             # a confident BPM estimate drives the shared tempo (not while MIDI clock does)

`vprod run --audio-device NAME` / `--audio-file FILE` override the preset's source (and hold across preset
switches). Analysis runs on its own thread: hops of 256 samples (5.3 ms at 48 kHz), a 2048-sample window for
level and bands, a 512-sample window for the onset detector, numpy FFT only. Each frame the loop thread publishes
the newest features (never waiting for the analysis) to

    ctx.signals["audio"]      {"level", "db", "band0".., "onset", "onset_env", "bpm", "bpm_confidence",
                               "beat_phase"}
    ctx.signals["audio_vec"]  [level, band0, band1, band2, onset, onset_env, beat_phase, bpm / 240]

(the world model's 8-float audio token). Level and bands are 0..1 (dBFS mapped from -60 → 0 to 0 → 1).
`onset` is 1 on the first frame after an onset was detected (spectral flux over an adaptive threshold), else 0;
`onset_env` jumps to 1 there and decays (e^-t/250 ms). `bpm` comes from the autocorrelation of the onset strength
over the last 8 s (60..200 BPM), 0 until the analysis is confident; `beat_phase` (0..1) locks to the onsets.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..presets import register_section
from . import register_surface
from .badinput import BadInput

log = logging.getLogger("vprod.control.audio")

HOP = 256  # samples between analyses
WINDOW = 2048  # level and band window
ONSET_WINDOW = 512  # onset detector window: short, so onsets are timed to a hop or two
DB_FLOOR = -60.0  # dBFS mapped to 0 (0 dBFS maps to 1)
ONSET_DECAY_S = 0.25
BPM_MIN, BPM_MAX = 60.0, 200.0
BPM_HISTORY_S = 8.0
BPM_EVERY_S = 0.5
BPM_CONFIDENT = 0.2  # autocorrelation at the beat lag (0..1) above which the estimate is used
DEFAULT_BANDS = (20.0, 250.0, 2500.0, 16000.0)


def to_unit(db: float) -> float:
    """dBFS → 0..1 (DB_FLOOR → 0, 0 dBFS → 1)."""
    return min(max((db - DB_FLOOR) / -DB_FLOOR, 0.0), 1.0)


def _log_filterbank(sr: float, n_fft: int, n_bands: int) -> np.ndarray:
    """(bins, bands) matrix averaging rfft power bins into bands evenly spaced in log frequency (50 Hz..16 kHz);
    each band holds at least one bin."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = np.geomspace(50.0, min(16000.0, sr / 2), n_bands + 1)
    fb = np.zeros((freqs.size, n_bands), np.float32)
    for b in range(n_bands):
        idx = np.nonzero((freqs >= edges[b]) & (freqs < edges[b + 1]))[0]
        if idx.size == 0:
            idx = [int(np.argmin(np.abs(freqs - np.sqrt(edges[b] * edges[b + 1]))))]
        fb[idx, b] = 1.0 / len(idx)
    return fb


def _db(power: float) -> float:
    return 10.0 * math.log10(max(power, 1e-12))


@dataclass
class Snapshot:
    """The newest features, replaced whole by the analysis thread (readers never see a half-written one)."""

    level: float = 0.0
    db: float = DB_FLOOR
    bands: tuple[float, ...] = ()
    onsets: int = 0  # onsets detected so far (a reader compares counts, so no onset is missed between frames)
    onset_time: float = -1e9  # monotonic time of the newest onset
    bpm: float = 0.0
    bpm_confidence: float = 0.0
    beat_anchor: float | None = None  # monotonic time of a beat (phase 0)
    time: float = 0.0  # monotonic time of the newest analysed sample


class Analyzer:
    """Turns a mono sample stream into features, hop by hop. Pure computation: no threads, no devices, no clock
    of its own (each block comes with the monotonic time of its last sample), so tests feed it a file directly."""

    def __init__(self, samplerate: float, bands=DEFAULT_BANDS, gain: float = 1.0):
        self.sr = float(samplerate)
        self.gain = float(gain)
        self.hop_rate = self.sr / HOP
        self._buf = np.zeros(WINDOW, np.float32)  # the newest WINDOW samples
        self._pending = np.zeros(0, np.float32)
        self._win = np.hanning(WINDOW).astype(np.float32)
        # Power per rfft bin, scaled so that the bins sum to the mean square of the signal (Parseval, Hann-corrected).
        self._pscale = 2.0 / (WINDOW * float(np.sum(self._win ** 2)))
        freqs = np.fft.rfftfreq(WINDOW, 1.0 / self.sr)
        edges = [min(float(e), self.sr / 2) for e in bands]
        self.band_edges = edges
        self._band_idx = [(int(np.searchsorted(freqs, lo)), max(int(np.searchsorted(freqs, hi)),
                                                                int(np.searchsorted(freqs, lo)) + 1))
                          for lo, hi in zip(edges[:-1], edges[1:])]
        self._owin = np.hanning(ONSET_WINDOW).astype(np.float32)
        self._oscale = 2.0 / float(np.sum(self._owin))  # a full-scale sine's bin → 1
        self._fbank = _log_filterbank(self.sr, ONSET_WINDOW, 24)
        self._prev_log: tuple[np.ndarray, np.ndarray] | None = None
        n_hist = int(BPM_HISTORY_S * self.hop_rate)
        self._flux = np.zeros(n_hist, np.float32)  # onset strength history (a ring)
        self._flux_i = 0
        self._flux_n = 0
        self._recent = np.zeros(int(0.5 * self.hop_rate), np.float32)  # for the adaptive threshold
        self._peak = 0.0  # slowly decaying maximum flux: the threshold's floor follows the material's loudness
        self._peak_decay = math.exp(-1.0 / (5.0 * self.hop_rate))
        self._prev_flux = 0.0
        self._since_onset = 10**9
        self._min_gap = int(0.08 * self.hop_rate)  # hops: no two onsets closer than 80 ms
        self._since_bpm = 0
        self._bpm_hist: list[float] = []
        self.hops = 0
        self.onset_hops: list[int] = []  # hop index of every onset (tests and status)
        self.busy_s = 0.0  # CPU seconds spent analysing (status: per hop and share of real time)
        self.snap = Snapshot(bands=tuple(0.0 for _ in self._band_idx))

    # --- input ---
    def feed(self, block: np.ndarray, t_end: float) -> None:
        """Analyse a block of mono float samples whose last sample was heard at monotonic time `t_end`."""
        t0 = time.thread_time()  # CPU time of this thread: what the analysis costs, not waits for the GIL
        x = np.asarray(block, np.float32).reshape(-1)
        if self.gain != 1.0:
            x = x * self.gain
        data = np.concatenate((self._pending, x)) if self._pending.size else x
        n_hops = data.size // HOP
        for i in range(n_hops):
            chunk = data[i * HOP:(i + 1) * HOP]
            left = data.size - (i + 1) * HOP  # samples after this hop in the block
            self._hop(chunk, t_end - left / self.sr)
        self._pending = data[n_hops * HOP:].copy()
        self.busy_s += time.thread_time() - t0

    # --- one hop ---
    def _hop(self, chunk: np.ndarray, t: float) -> None:
        buf = self._buf
        buf[:-HOP] = buf[HOP:]
        buf[-HOP:] = chunk
        np.nan_to_num(buf[-HOP:], copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        self.hops += 1
        s = self.snap
        mean_sq = float(np.dot(buf, buf)) / WINDOW
        db = _db(mean_sq)
        power = np.abs(np.fft.rfft(buf * self._win)) ** 2 * self._pscale
        bands = tuple(to_unit(_db(float(power[a:b].sum()))) for a, b in self._band_idx)

        flux = self._onset_strength(buf[-ONSET_WINDOW:])
        onsets, onset_time, anchor = s.onsets, s.onset_time, s.beat_anchor
        if self._is_onset(flux):
            onsets += 1
            # The onset lies in the newest hop (the flux rises as soon as it enters the short window): its middle.
            onset_time = t - 0.5 * HOP / self.sr
            self.onset_hops.append(self.hops - 1)
            anchor = self._lock_phase(onset_time, anchor)
        bpm, conf = s.bpm, s.bpm_confidence
        self._since_bpm += 1
        if self._since_bpm >= BPM_EVERY_S * self.hop_rate and self._flux_n >= 4 * self.hop_rate:
            self._since_bpm = 0
            bpm, conf = self._estimate_bpm()
            if conf < BPM_CONFIDENT:
                bpm, anchor = 0.0, None
        self.snap = Snapshot(to_unit(db), db, bands, onsets, onset_time, bpm, conf, anchor, t)

    def _onset_strength(self, frame: np.ndarray) -> float:
        """Spectral flux: the mean rise of log-magnitude, over 24 log-spaced bands, above the two hops before."""
        mag = np.abs(np.fft.rfft(frame * self._owin)) * self._oscale
        # Bands on a log scale (summing bins steadies noise), compressed like dB/20 with a floor at -60 dB.
        logm = np.log10(1.0 + 1000.0 * np.sqrt(mag * mag @ self._fbank))
        prev, self._prev_log = self._prev_log, (self._prev_log[1], logm) if self._prev_log else (logm, logm)
        if prev is None:
            return 0.0
        # Against the louder of the two hops before (as SuperFlux does): noise rarely rises above both.
        d = logm - np.maximum(prev[0], prev[1])
        flux = float(d[d > 0].sum()) / logm.size
        self._flux[self._flux_i] = flux
        self._flux_i = (self._flux_i + 1) % self._flux.size
        self._flux_n = min(self._flux_n + 1, self._flux.size)
        return flux

    def _is_onset(self, flux: float) -> bool:
        """A rise of the flux above an adaptive threshold: the median of the last 0.5 s plus a floor that follows
        the loudest recent onsets (so steady noise and quiet material both work), at most one per 80 ms."""
        recent = self._recent
        recent[:-1] = recent[1:]
        recent[-1] = flux
        self._peak = max(flux, self._peak * self._peak_decay)
        thr = float(np.median(recent)) + max(0.02, 0.35 * self._peak)
        rising = flux > self._prev_flux
        self._prev_flux = flux
        self._since_onset += 1
        if flux > thr and rising and self._since_onset >= self._min_gap:
            self._since_onset = 0
            return True
        return False

    def _estimate_bpm(self) -> tuple[float, float]:
        """Tempo from the autocorrelation of the onset strength: the strongest lag in 60..200 BPM (weighted
        towards 120 BPM against octave errors), refined from the peaks at its multiples."""
        n = self._flux_n
        x = np.roll(self._flux, -self._flux_i)[-n:].astype(np.float64)
        x -= x.mean()
        nfft = 1 << int(math.ceil(math.log2(2 * n)))
        spec = np.fft.rfft(x, nfft)
        ac = np.fft.irfft(spec * np.conj(spec), nfft)[:n]
        if ac[0] <= 0:
            return 0.0, 0.0
        ac /= ac[0]
        lo = max(2, int(60.0 * self.hop_rate / BPM_MAX))
        hi = min(n // 2, int(math.ceil(60.0 * self.hop_rate / BPM_MIN)) + 1)
        if hi <= lo + 2:
            return 0.0, 0.0
        lags = np.arange(lo, hi)
        # A peak between two integer lags splits its height: score a lag with its higher neighbour added.
        mass = ac[lo:hi] + np.maximum(ac[lo - 1:hi - 1], ac[lo + 1:hi + 1])
        bpms = 60.0 * self.hop_rate / lags
        prior = np.exp(-0.5 * np.log2(bpms / 120.0) ** 2)  # one octave's standard deviation
        i = int(np.argmax(mass * prior))
        half = int(round(lags[i] / 2)) - lo
        if half >= 1 and mass[half - 1:half + 2].max() >= 0.9 * mass[i]:  # beats at twice the tempo: take them
            i = half - 1 + int(np.argmax(mass[half - 1:half + 2]))
        best = int(lags[i])
        conf = float(mass[i]) / 2
        # Refine: the k-th multiple of the period is a peak too; a line through them gives a finer period.
        ks, peaks = [], []
        for k in range(1, 8):
            c = int(round(k * best if not peaks else k * peaks[-1] / ks[-1]))
            if c + 2 >= n:
                break
            w = max(2, k)
            a, b = c - w, c + w + 1
            j = a + int(np.argmax(ac[a:b]))
            if 0 < j < n - 1:
                y0, y1, y2 = ac[j - 1], ac[j], ac[j + 1]
                den = y0 - 2 * y1 + y2
                j = j + (0.5 * (y0 - y2) / den if den < 0 else 0.0)
            ks.append(k)
            peaks.append(float(j))
        period = float(np.dot(ks, peaks) / np.dot(ks, ks))  # least squares through the origin
        bpm = 60.0 * self.hop_rate / period
        self._bpm_hist = (self._bpm_hist + [bpm])[-3:]
        return float(np.median(self._bpm_hist)), conf

    def _lock_phase(self, onset_time: float, anchor: float | None) -> float | None:
        """Beat phase follows the onsets: an onset near a predicted beat pulls the beat grid halfway to it."""
        bpm = self.snap.bpm
        if bpm <= 0:
            return None
        period = 60.0 / bpm
        if anchor is None:
            return onset_time
        err = (onset_time - anchor) / period
        err -= round(err)
        if abs(err) < 0.2:
            return anchor + 0.5 * err * period + round((onset_time - anchor) / period) * period
        return anchor

    # --- reading (any thread) ---
    @staticmethod
    def beat_phase(snap: Snapshot, now: float) -> float:
        if snap.bpm <= 0 or snap.beat_anchor is None:
            return 0.0
        return ((now - snap.beat_anchor) * snap.bpm / 60.0) % 1.0


# --- inputs ---
class FileInput:
    """A WAV/FLAC file read block by block; the reader thread plays it in real time. Mixed down to mono."""

    paced_by_device = False

    def __init__(self, path: Path, loop: bool = True):
        self.path = Path(path)
        self.loop = loop
        self.samplerate = 0.0
        self._f = None

    def describe(self) -> str:
        return f"file {self.path}{' (loop)' if self.loop else ''}"

    def open(self) -> None:
        import soundfile as sf

        try:
            self._f = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise RuntimeError(f"cannot read audio file {self.path}: {e}") from None
        self.samplerate = float(self._f.samplerate)
        if self._f.frames == 0:
            self.close()
            raise RuntimeError(f"audio file {self.path} has no samples")

    def read(self, n: int) -> np.ndarray | None:
        """The next n samples (fewer at the end); None once the file is over and does not loop."""
        data = self._f.read(n, dtype="float32", always_2d=True)
        if len(data) < n and self.loop:
            self._f.seek(0)
            more = self._f.read(n - len(data), dtype="float32", always_2d=True)
            data = np.concatenate((data, more)) if len(data) else more
        if len(data) == 0:
            return None
        return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class DeviceInput:
    """A capture device through PortAudio (sounddevice), read in blocks of 16-bit samples on the reader thread."""

    paced_by_device = True

    def __init__(self, device: str | int = "default", samplerate: float | None = None, channels: int = 1):
        self.device = device
        self.samplerate = float(samplerate or 0)  # 0: the device's default rate
        self.channels = int(channels)
        self._stream = None
        self.overflows = 0

    def describe(self) -> str:
        return f"device {self.device!r}"

    def open(self) -> None:
        import sounddevice as sd

        dev: str | int | None = self.device
        if isinstance(dev, str) and dev.strip().isdigit():
            dev = int(dev)
        if dev == "default":
            dev = None
        try:
            if not self.samplerate:
                self.samplerate = float(sd.query_devices(dev, "input")["default_samplerate"])
            sd.check_input_settings(device=dev, channels=self.channels, samplerate=self.samplerate, dtype="int16")
            # 16-bit, as capture hardware delivers it (ALSA's file plugin, used in the tests, also needs it).
            self._stream = sd.InputStream(device=dev, channels=self.channels, samplerate=self.samplerate,
                                          dtype="int16")
            self._stream.start()
        except (ValueError, sd.PortAudioError) as e:
            self.close()
            try:
                devices = [f"{i}: {d['name']}" for i, d in enumerate(sd.query_devices())
                           if d["max_input_channels"] > 0]
            except sd.PortAudioError:
                devices = []
            raise RuntimeError(f"no usable audio input device {self.device!r}: {e} "
                               f"(input devices: {'; '.join(devices) or 'none'})") from None

    def read(self, n: int) -> np.ndarray:
        data, overflowed = self._stream.read(n)
        if overflowed:
            self.overflows += 1
        x = data.astype(np.float32) * (1.0 / 32768.0)
        return x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception:  # noqa: BLE001 - a device that vanished cannot be closed cleanly
                pass
            self._stream = None


# --- configuration ---
@dataclass
class AudioConfig:
    """The effective [audio] settings (the preset's, with --audio-device / --audio-file taking precedence)."""

    device: str | int | None = None  # None with file None: no audio
    file: Path | None = None
    loop: bool = True
    gain: float = 1.0
    bands: tuple[float, ...] = DEFAULT_BANDS
    tempo: bool = True
    samplerate: int | None = None  # None: the device's default rate
    channels: int = 1

    @property
    def active(self) -> bool:
        return self.device is not None or self.file is not None

    def make_input(self):
        if self.file is not None:
            return FileInput(self.file, self.loop)
        return DeviceInput(self.device, self.samplerate, self.channels)


AUDIO_KEYS = {
    "enabled": "false turns the analysis off",
    "device": "capture device: a sounddevice name (or part of it), an index, or \"default\"",
    "file": "a WAV/FLAC file (relative to the preset) played in real time instead of a device",
    "loop": "play the file again from the start at its end (default true)",
    "gain": "linear gain before analysis (default 1.0)",
    "bands": "band edges in Hz, ascending: N+1 edges make N bands (default [20, 250, 2500, 16000])",
    "tempo": "let a confident BPM estimate drive the shared tempo (default true; MIDI clock wins)",
    "samplerate": "device sample rate in Hz (default: the device's own)",
    "channels": "device channels, mixed to mono (default 1)",
}


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(section: Any, name: str = "audio") -> list[tuple[str, str]]:
    """Check an [audio] table; (key, message) per error."""
    if not isinstance(section, dict):
        return [(name, "must be a table: [audio]")]
    errs = []
    for k, v in section.items():
        key = f"{name}.{k}"
        if k not in AUDIO_KEYS:
            errs.append((key, f"unknown key (allowed: {', '.join(sorted(AUDIO_KEYS))})"))
        elif k in ("enabled", "loop", "tempo") and not isinstance(v, bool):
            errs.append((key, f"{v!r} must be true or false"))
        elif k == "device" and not (isinstance(v, str) and v or isinstance(v, int) and not isinstance(v, bool)
                                    and v >= 0):
            errs.append((key, f"{v!r} must be a device name, an index ≥ 0, or \"default\""))
        elif k == "file" and not (isinstance(v, str) and v):
            errs.append((key, f"{v!r} must be a path to a WAV/FLAC file"))
        elif k == "gain" and not (_is_num(v) and 0 <= v <= 1000):
            errs.append((key, f"{v!r} must be a number 0..1000 (linear gain)"))
        elif k == "samplerate" and not (isinstance(v, int) and not isinstance(v, bool) and 8000 <= v <= 192000):
            errs.append((key, f"{v!r} must be an integer 8000..192000 (Hz)"))
        elif k == "channels" and not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 64):
            errs.append((key, f"{v!r} must be an integer 1..64"))
        elif k == "bands":
            ok = (isinstance(v, list) and 2 <= len(v) <= 9 and all(_is_num(e) and 0 <= e <= 96000 for e in v)
                  and all(a < b for a, b in zip(v, v[1:])))
            if not ok:
                errs.append((key, f"{v!r} must be 2..9 ascending band edges in Hz (0..96000), "
                                  "e.g. [20, 250, 2500, 16000] for low, mid, high"))
    if "device" in section and "file" in section:
        errs.append((f"{name}.file", "give either device or file, not both"))
    return errs


def config_for(preset, extra: dict) -> AudioConfig:
    """The effective audio settings for a preset (already validated) and the command line's overrides."""
    sec = dict(preset.data.get("audio") or {}) if preset is not None else {}
    cli_dev, cli_file = extra.get("audio_device"), extra.get("audio_file")
    cfg = AudioConfig(loop=sec.get("loop", True), gain=float(sec.get("gain", 1.0)),
                      bands=tuple(float(b) for b in sec.get("bands", DEFAULT_BANDS)), tempo=sec.get("tempo", True),
                      samplerate=sec.get("samplerate"), channels=int(sec.get("channels", 1)))
    if cli_file:
        cfg.file = Path(cli_file).expanduser().resolve()
    elif cli_dev is not None:
        cfg.device = cli_dev
    elif sec and sec.get("enabled", True):
        if "file" in sec:
            from ..engine.element import resolve_path

            cfg.file = resolve_path(sec["file"], str(preset.dir))[0]
        else:
            cfg.device = sec.get("device", "default")
    return cfg


# --- the control ---
class AudioControl:
    """Runs the analysis thread for the current preset's [audio] (or the command line's source) and publishes the
    newest features into every frame's ctx.signals. Present even when idle, so a preset switch can start it."""

    name = "audio"
    BLOCK = 512  # samples per read: ~10 ms, the file's real-time pacing step
    STALE_S = 1.0  # features older than this (a stalled device) are no longer published

    def __init__(self, daemon, cfg: AudioConfig):
        self.daemon = daemon
        self.cfg = cfg
        self.state = "off"
        self.error = ""
        self.analyzer: Analyzer | None = None
        self.input = None
        self.bad = BadInput("audio", log)
        self.features: dict[str, float] = {}
        self._seen_onsets = 0
        self._seen_analyzer: Analyzer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # start/stop/restart (preset switches come from other threads)
        self.tempo_sets = 0
        self.restarts = 0

    # --- lifecycle ---
    def describe(self) -> str:
        if not self.cfg.active:
            return "audio          off (no [audio] in the preset, no --audio-device/--audio-file)"
        src = self.cfg.file if self.cfg.file is not None else f"device {self.cfg.device!r}"
        return f"audio          {src}: {self.state}{(' — ' + self.error) if self.error else ''}"

    def start(self) -> None:
        engine = self.daemon.engine
        if self.publish not in engine.modulators:
            engine.modulators.insert(0, self.publish)  # before the modulators that read the features
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if not self.cfg.active:
            self.state = "off"
            return
        self._stop = threading.Event()
        self.state, self.error = "starting", ""
        self._thread = threading.Thread(target=self._run, args=(self.cfg, self._stop), name="audio", daemon=True)
        self._thread.start()

    def _stop_locked(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)
            self._thread = None
        self.analyzer = None
        self.state = "off"

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()
        self.state = "stopped"

    def on_preset(self, preset) -> None:
        """A new preset: restart the analysis only if its audio settings differ (no gap otherwise)."""
        cfg = config_for(preset, self.daemon.config.extra)
        with self._lock:
            if cfg == self.cfg and (self._thread is not None or not cfg.active):
                return
            self._stop_locked()
            self.cfg = cfg
            self.restarts += 1
            self._start_locked()
            log.info("audio: %s", self.describe().split(None, 1)[1])

    # --- the analysis thread ---
    def _run(self, cfg: AudioConfig, stop: threading.Event) -> None:
        backoff = 1.0
        logged = ""
        while not stop.is_set():
            src = cfg.make_input()
            try:
                src.open()
            except Exception as e:  # noqa: BLE001 - reported once, retried with a back-off, the video goes on
                msg = str(e) or type(e).__name__
                if msg != logged:
                    log.error("audio is off: %s (retrying every %g s at most)", msg, 30)
                    logged = msg
                self.state, self.error = "error", msg
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if logged:
                log.info("audio: %s opened", src.describe())
            logged, backoff = "", 1.0
            self.input = src
            an = Analyzer(src.samplerate, cfg.bands, cfg.gain)
            self.analyzer = an
            self.state, self.error = "running", ""
            try:
                self._play(src, an, cfg, stop)
            except Exception as e:  # noqa: BLE001 - a device that vanishes: report, reopen
                msg = f"{src.describe()} failed: {type(e).__name__}: {e}"
                log.error("audio: %s (reopening)", msg)
                self.state, self.error = "error", msg
                stop.wait(backoff)
            finally:
                src.close()
            if self.state == "ended":
                stop.wait()  # a file that does not loop: the last features fade, nothing more to do

    def _play(self, src, an: Analyzer, cfg: AudioConfig, stop: threading.Event) -> None:
        """Read, pace to the wall clock, analyse. A file is played in real time; a device paces itself, and one
        that delivers faster than real time (a virtual device with no clock) is slowed to it."""
        sr = src.samplerate
        t_start = time.monotonic()
        n = 0
        next_tempo = 0.0
        while not stop.is_set():
            block = src.read(self.BLOCK)
            if block is None:
                self.state = "ended"
                return
            n += len(block)
            due = t_start + n / sr  # when the last sample of this block is heard
            ahead = due - time.monotonic()
            if ahead > (0.1 if src.paced_by_device else 0.0):
                stop.wait(ahead)
            elif ahead < -0.5:  # a stall (or a slow machine): carry on from now rather than rush to catch up
                t_start += -ahead
                due = t_start + n / sr
            an.feed(block, due if not src.paced_by_device else min(due, time.monotonic()))
            now = time.monotonic()
            if cfg.tempo and now >= next_tempo:
                next_tempo = now + 1.0
                self._feed_tempo(an.snap)

    def _feed_tempo(self, s: Snapshot) -> None:
        tempo = getattr(self.daemon, "tempo", None)
        if tempo is None or s.bpm <= 0 or s.bpm_confidence < BPM_CONFIDENT:
            return
        if tempo.source.startswith("midi"):
            return  # MIDI clock is the master when it runs
        if tempo.source == "audio" and abs(tempo.bpm - s.bpm) < 0.5:
            return
        tempo.set(s.bpm, "audio", beat_at=s.beat_anchor)
        self.tempo_sets += 1

    # --- the frame loop's side ---
    def publish(self, ctx) -> None:
        """Called on the loop thread before rendering: the newest features into ctx.signals (no waiting)."""
        an = self.analyzer
        if an is None:
            return
        try:
            self._publish(ctx, an)
        except Exception as e:  # noqa: BLE001 - never stops the frame loop
            self.bad.report("publish", f"{type(e).__name__}: {e}")

    def _publish(self, ctx, an: Analyzer) -> None:
        s = an.snap
        if an is not self._seen_analyzer:  # a new analysis (reopened, restarted): its count starts again
            self._seen_analyzer, self._seen_onsets = an, s.onsets
        now = time.monotonic()
        if now - s.time > self.STALE_S:
            return
        onset = 1.0 if s.onsets != self._seen_onsets else 0.0
        self._seen_onsets = s.onsets
        env = math.exp(-max(0.0, now - s.onset_time) / ONSET_DECAY_S) if s.onsets else 0.0
        phase = Analyzer.beat_phase(s, now)
        b = s.bands
        f = {"level": s.level, "db": s.db, "onset": onset, "onset_env": env, "bpm": s.bpm,
             "bpm_confidence": s.bpm_confidence, "beat_phase": phase}
        for i, v in enumerate(b):
            f[f"band{i}"] = v
        ctx.signals["audio"] = f
        ctx.signals["audio_vec"] = [s.level, b[0] if b else 0.0, b[1] if len(b) > 1 else 0.0,
                                    b[-1] if len(b) > 2 else 0.0, onset, env, phase, min(s.bpm / 240.0, 1.0)]
        self.features = f

    def status(self) -> dict:
        an = self.analyzer
        st = {"state": self.state, "source": (str(self.cfg.file) if self.cfg.file is not None else self.cfg.device),
              "error": self.error, "features": {k: round(v, 4) for k, v in self.features.items()},
              "tempo_sets": self.tempo_sets, "restarts": self.restarts}
        if an is not None:
            audio_s = an.hops * HOP / an.sr
            st.update(samplerate=an.sr, bands_hz=an.band_edges, hops=an.hops, onsets=len(an.onset_hops),
                      analysis_us_per_hop=round(an.busy_s / an.hops * 1e6, 1) if an.hops else None,
                      analysis_cpu_share=round(an.busy_s / audio_s, 4) if audio_s else None)
        if isinstance(self.input, DeviceInput):
            st["overflows"] = self.input.overflows
        tempo = getattr(self.daemon, "tempo", None)
        if tempo is not None:
            st["tempo"] = tempo.status()
        st.update(self.bad.status())
        return st


def _factory(daemon, preset):
    return AudioControl(daemon, config_for(preset, daemon.config.extra))


register_section("audio", "audio analysis: [audio] device or file, gain, bands, tempo", validate)
register_surface("audio", _factory)
