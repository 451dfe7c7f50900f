"""Fleet: a synthetic wearable fleet for load and fault tests — realistic PPG for thousands of devices from one process.

Each device has its own heart rate with variability, a systolic wave and a dicrotic wave whose size follows
its blood pressure, respiratory baseline wander, sensor noise, occasional motion artefacts and dropouts, an
SBP/DBP trajectory (sent as `ref`: a slow drift, or a cold-pressor-like rise, `SCENARIOS`), and one of several
sampling rates. Generation is vectorised over the devices of each rate; `Fleet.tick()` is deterministic for a seed
and touches no socket.

With `ecg`, each device also sends an ECG (`ecg.<device>`, at `ecg_hz`): an R peak per beat, the PPG's upstroke
arriving `pat_ms` after it, and that arrival time following the pressure: shorter by `pat_ms_per_mmhg` for each
mmHg of SBP above the device's baseline (the population's slope fitted on stress_beats_zjx, assets/tracking.json,
is about 2.3 ms per mmHg with the rate held; the simulation is built with it, so it shows the mechanism, and
measures nothing).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2p_stream.errors import ConfigError
from p2p_stream.tools.common import command, parent_parser, setup_logging
from p2p_stream.wire.protocol import DEVICE_RE

log = logging.getLogger(__name__)


@dataclass
class FleetConfig:
    devices: int = 100
    rates_hz: tuple[float, ...] = (100.0, 125.0, 200.0)  # assigned round-robin
    chunk_s: float = 0.2  # seconds of samples per message
    hr_bpm: tuple[float, float] = (55.0, 95.0)  # per-device mean heart rate, uniform in this range
    hrv: float = 0.04  # beat-to-beat variability, fraction of the mean rate
    resp_hz: tuple[float, float] = (0.2, 0.33)  # breathing rate range
    wander: float = 0.15  # respiratory baseline amplitude, fraction of the pulse amplitude
    noise: float = 0.02  # sensor noise SD, fraction of the pulse amplitude
    motion_per_min: float = 0.0  # motion artefacts per device per minute (1–3 s each)
    dropout_per_min: float = 0.0  # dropouts per device per minute (0.5–2 s of lost messages)
    sbp_mmhg: tuple[float, float] = (100.0, 160.0)  # per-device baseline SBP range
    stagger_s: float = 0.0  # devices join at random times within this span, as real ones do (not all at once)
    seed: int = 0
    ids: tuple[str, ...] = ()  # the devices' ids, one per device; () = sim00000, sim00001, …
    scenario: str = "drift"  # the pressure's course, a SCENARIOS key
    ecg: bool = False  # also send an ECG whose R peaks lead the PPG by the pulse arrival time
    ecg_hz: float = 250.0
    pat_ms: float = 220.0  # arrival time at the device's baseline pressure
    pat_ms_per_mmhg: float = 2.3  # shorter by this per mmHg of SBP above it


def _drift(t: float, period_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A slow sine: ±8 mmHg SBP, ±4 DBP, over each device's own period."""
    drift = np.sin(2 * np.pi * t / period_s)
    return 8 * drift, 4 * drift


def _cold_pressor(t: float, period_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each 240 s: 30 s at rest, a rise of 30 mmHg SBP (15 DBP) over 30 s, a minute held, 30 s back down, 90 s at
    rest: the course of stress_beats_zjx's cold pressor blocks, condensed."""
    phase = t % 240.0
    rise = np.interp(phase, (0.0, 30.0, 60.0, 120.0, 150.0, 240.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0))
    return np.full_like(period_s, 30.0 * rise), np.full_like(period_s, 15.0 * rise)


SCENARIOS = {"drift": _drift, "cold-pressor": _cold_pressor}  # t, per-device period → (ΔSBP, ΔDBP) from baseline


@dataclass
class Message:
    device: str
    seq: int
    t0: float  # seconds since the fleet started (add a wall-clock offset to publish)
    fs: float
    ppg: np.ndarray  # float32
    ref: tuple[float, float]
    ecg: np.ndarray | None = None  # float32 at the config's `ecg_hz`, covering the same time as `ppg`


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        c = self.config = config
        rng = self.rng = np.random.default_rng(c.seed)
        n = c.devices
        self.ids = list(c.ids) if c.ids else [f"sim{i:05d}" for i in range(n)]
        if len(self.ids) != n:
            raise ConfigError(f"the fleet has {n} devices but {len(self.ids)} ids")
        self.fs = np.array([c.rates_hz[i % len(c.rates_hz)] for i in range(n)])
        self.samples = np.round(self.fs * c.chunk_s).astype(int)
        self.hr0 = rng.uniform(*c.hr_bpm, n)  # bpm
        self.resp = rng.uniform(*c.resp_hz, n)  # Hz
        self.sbp0 = rng.uniform(*c.sbp_mmhg, n)
        self.dbp0 = 0.55 * self.sbp0 + rng.normal(0, 4, n)
        self.bp_period_s = rng.uniform(120, 600, n)  # slow BP drift
        self.amplitude = rng.uniform(200, 800, n)  # ADC counts
        self.offset = rng.uniform(1000, 3000, n)
        self.phase = rng.uniform(0, 1, n)  # cardiac phase, cycles
        self.ecg_phase = self.phase.copy()  # the ECG's, ahead of the PPG's by the arrival time
        self.hr_walk = np.zeros(n)
        self.seq = np.zeros(n, dtype=np.int64)
        self.t = 0.0  # seconds since start
        self.motion_left = np.zeros(n)  # seconds of artefact left
        self.dropout_left = np.zeros(n)
        self.joins_at = rng.uniform(0, c.stagger_s, n) if c.stagger_s > 0 else np.zeros(n)

    def bp(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Each device's true SBP, DBP at time t (s)."""
        if self.config.scenario not in SCENARIOS:
            raise ConfigError(f"scenario must be one of {', '.join(SCENARIOS)}, got {self.config.scenario!r}")
        d_sbp, d_dbp = SCENARIOS[self.config.scenario](t, self.bp_period_s)
        return self.sbp0 + d_sbp, self.dbp0 + d_dbp

    def arrival_s(self, sbp: np.ndarray) -> np.ndarray:
        """Each device's pulse arrival time at pressure `sbp`, s."""
        return (self.config.pat_ms - self.config.pat_ms_per_mmhg * (sbp - self.sbp0)) / 1000.0

    def _waveform(self, phase: np.ndarray, sbp: np.ndarray) -> np.ndarray:
        """One beat's shape at cardiac phase (cycles): systolic peak, notch, dicrotic wave (larger at low SBP)."""
        p = phase % 1.0
        dicrotic = np.clip(0.6 - 0.003 * (sbp - 100), 0.2, 0.6)[:, None]
        return np.exp(-((p - 0.15) ** 2) / 0.004) + dicrotic * np.exp(-((p - 0.42) ** 2) / 0.008)

    @staticmethod
    def _ecg(phase: np.ndarray) -> np.ndarray:
        """One beat of ECG at cardiac phase (cycles), its R peak at the PPG pulse's foot (its upstroke's tangent meets
        the baseline about a σ before the steepest point, 0.06), so the arrival time is the lag: a P wave, a narrow
        QRS, a T wave, in mV."""
        p = (phase - 0.06 + 0.5) % 1.0 - 0.5  # phase from the R peak, in (-0.5, 0.5]
        return (
            0.15 * np.exp(-((p + 0.16) ** 2) / 0.0008)
            - 0.1 * np.exp(-((p + 0.02) ** 2) / 0.00005)
            + 1.2 * np.exp(-(p**2) / 0.00006)
            - 0.2 * np.exp(-((p - 0.025) ** 2) / 0.00006)
            + 0.3 * np.exp(-((p - 0.3) ** 2) / 0.004)
        )

    def tick(self) -> list[Message]:
        """The next `chunk_s` of every device (minus those in a dropout)."""
        c, rng, n = self.config, self.rng, self.config.devices
        dt = c.chunk_s
        sbp, dbp = self.bp(self.t)
        # Heart rate: a bounded random walk around the device's mean (HRV), faster when BP is higher.
        self.hr_walk = 0.9 * self.hr_walk + rng.normal(0, c.hrv * np.sqrt(1 - 0.9**2), n)  # stationary SD = hrv
        hr = self.hr0 * (1 + self.hr_walk) * (1 + 0.002 * (sbp - self.sbp0))
        # Faults start at Poisson rates and last a random while.
        starting = rng.random(n) < c.motion_per_min / 60 * dt
        self.motion_left[starting] = rng.uniform(1, 3, starting.sum())
        starting = rng.random(n) < c.dropout_per_min / 60 * dt
        self.dropout_left[starting] = rng.uniform(0.5, 2, starting.sum())
        ecg = self._ecg_tick(hr, sbp) if c.ecg else None
        out: list[Message] = []
        for fs in np.unique(self.fs):
            idx = np.flatnonzero(self.fs == fs)
            k = int(round(fs * dt))
            steps = np.arange(1, k + 1) / fs  # (k,)
            phase = self.phase[idx, None] + hr[idx, None] / 60.0 * steps  # (m, k)
            t = self.t + steps - 1 / fs
            beat = self._waveform(phase, sbp[idx])
            wander = c.wander * np.sin(2 * np.pi * self.resp[idx, None] * t)
            x = beat + wander + c.noise * rng.standard_normal(beat.shape)
            moving = self.motion_left[idx] > 0
            if moving.any():
                jolt = np.cumsum(rng.normal(0, 0.3, (moving.sum(), k)), axis=1)
                x[moving] += jolt + 0.8 * rng.standard_normal((moving.sum(), k))
            x = self.offset[idx, None] + self.amplitude[idx, None] * x
            self.phase[idx] = phase[:, -1] % 1.0
            for row, i in enumerate(idx):
                if self.t < self.joins_at[i]:
                    continue  # not switched on yet: no message, no number used
                if self.dropout_left[i] <= 0:
                    ref = (round(float(sbp[i]), 1), round(float(dbp[i]), 1))
                    out.append(
                        Message(self.ids[i], int(self.seq[i]), self.t, float(fs), x[row].astype(np.float32), ref,
                                ecg=None if ecg is None else ecg[i])
                    )  # fmt: skip
                self.seq[i] += 1  # a dropped message still uses its number: the daemon sees the gap
        self.motion_left = np.maximum(self.motion_left - dt, 0)
        self.dropout_left = np.maximum(self.dropout_left - dt, 0)
        self.t += dt
        return out

    def _ecg_tick(self, hr: np.ndarray, sbp: np.ndarray) -> np.ndarray:
        """Every device's next `chunk_s` of ECG (n, k): its phase runs ahead of the PPG's by the arrival time at
        this tick's pressure, in cycles at this tick's rate."""
        c = self.config
        k = int(round(c.ecg_hz * c.chunk_s))
        steps = np.arange(1, k + 1) / c.ecg_hz
        ahead = self.arrival_s(sbp) * hr / 60.0  # cycles
        # the PPG's sample at self.t + τ has phase self.phase + hr/60 · (τ + 1/fs): the ECG's at the same time, ahead
        phase = (self.phase + ahead + hr / 60.0 / self.fs)[:, None] + hr[:, None] / 60.0 * (steps - 1 / c.ecg_hz)
        noise = 0.02 * self.rng.standard_normal((len(hr), k))
        return (self._ecg(phase) + noise).astype(np.float32)


def run(fleet: Fleet, sock, duration_s: float | None, t_wall0: float | None = None, stop=None) -> int:
    """Publish ticks paced in real time (until `stop`, a threading.Event, is set, when given); logs "Congestion"
    when generating and sending overruns a tick."""
    from p2p_stream.wire.protocol import encode_ingest

    dt = fleet.config.chunk_s
    start = time.monotonic()
    t_wall0 = time.time() if t_wall0 is None else t_wall0
    sent = ticks = 0
    while (duration_s is None or fleet.t < duration_s) and not (stop is not None and stop.is_set()):
        for m in fleet.tick():
            sock.send_multipart(encode_ingest(m.device, m.seq, t_wall0 + m.t0, m.fs, m.ppg, ref=m.ref))
            sent += 1
            if m.ecg is not None:  # the second channel: its own topic, the same clock
                sock.send_multipart(encode_ingest(m.device, m.seq, t_wall0 + m.t0, fleet.config.ecg_hz, m.ecg,
                                                  channel="ecg"))  # fmt: skip
                sent += 1
        ticks += 1
        lag = time.monotonic() - (start + ticks * dt)
        if lag > 0:
            if lag > dt:
                log.warning("Congestion: %.2f s behind real time with %d devices", lag, fleet.config.devices)
        else:
            time.sleep(-lag)
    return sent


def read_ids(path: str) -> tuple[str, ...]:
    """Device ids, one per line (blank lines skipped); a ConfigError naming the first that is not an id."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split()
    except OSError as exc:
        raise ConfigError(f"--ids: cannot read {path} ({exc})") from exc
    for line in lines:
        if not DEVICE_RE.fullmatch(line):
            raise ConfigError(f"--ids: {line[:80]!r} in {path} is not a device id (1–64 characters of [A-Za-z0-9_.:-])")
    if not lines or len(set(lines)) != len(lines):
        raise ConfigError(f"--ids: {path} must list at least one device id, each once")
    return tuple(lines)


@command
def main(argv: list[str] | None = None, prog: str = "fleet.py") -> int:
    from p2p_stream.tools.bridges.replay import add_publisher_args, check_publisher_args, run_publisher

    d = FleetConfig()  # the defaults, declared once
    p = argparse.ArgumentParser(prog=prog, description=__doc__, parents=[parent_parser(log_level="INFO")])
    p.add_argument(
        "--devices", type=int, default=d.devices, metavar="N", help="wearables to simulate (default %(default)s)"
    )
    p.add_argument(
        "--rates",
        default=",".join(f"{r:g}" for r in d.rates_hz),
        help="sampling rates, Hz, assigned round-robin (default %(default)s)",
    )
    p.add_argument(
        "--chunk-s", type=float, default=d.chunk_s, help="seconds of samples per message (default %(default)s)"
    )
    p.add_argument(
        "--motion-per-min", type=float, default=d.motion_per_min, help="motion artefacts per device per minute"
    )
    p.add_argument("--dropout-per-min", type=float, default=d.dropout_per_min, help="dropouts per device per minute")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--scenario", choices=tuple(SCENARIOS), default=d.scenario,
        help="the pressure's course: a slow drift, or a cold-pressor-like rise of 30 mmHg, 30 s in and every 4 minutes "
        "(default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--ecg", action="store_true",
        help=f"also send an ECG on ecg.<device> at {d.ecg_hz:g} Hz, its R peaks leading the PPG by a pulse arrival "
        f"time that falls {d.pat_ms_per_mmhg:g} ms per mmHg of SBP",
    )  # fmt: skip
    p.add_argument(
        "--ids", metavar="FILE", help="the devices' ids, one per line (their number sets --devices); default sim00000…"
    )
    add_publisher_args(p)
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    curve = check_publisher_args(args)
    try:
        rates = tuple(float(r) for r in args.rates.split(","))
    except ValueError:
        raise ConfigError(
            f"--rates must be comma-separated numbers in Hz, e.g. 100,125,200; got {args.rates!r}"
        ) from None
    if args.devices < 1 or args.chunk_s <= 0 or any(r <= 0 for r in rates):
        raise ConfigError(
            f"--devices must be ≥ 1, --chunk-s and every rate > 0; got {args.devices}, {args.chunk_s} and {args.rates}"
        )
    ids = read_ids(args.ids) if args.ids else ()
    config = FleetConfig(
        devices=len(ids) or args.devices,
        ids=ids,
        rates_hz=rates,
        chunk_s=args.chunk_s,
        seed=args.seed,
        motion_per_min=args.motion_per_min,
        dropout_per_min=args.dropout_per_min,
        scenario=args.scenario,
        ecg=args.ecg,
    )

    def publish(sock) -> int:
        log.info("fleet: %d devices at %s Hz to %s", args.devices, args.rates, args.ingest)
        return run(Fleet(config), sock, args.duration_s)

    return run_publisher(args.ingest, publish, args.wait_s, curve)


if __name__ == "__main__":
    sys.exit(main())
