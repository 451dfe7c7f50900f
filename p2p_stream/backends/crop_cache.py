"""Crop cache: per device, the network's features of the crops its latest window holds, so that the next window
computes only the crops that are new (10 s windows every 2 s share four of their five 2 s crops).

A crop's model input depends on its own raw samples and nothing else (ppg/crops.py), and a window's position in
its device's stream (`Item.end`) never repeats within one DeviceStream, so (generation, rate, where the crop
ends) names one crop's samples: the features kept under it are the features the crop would get again, and a
window answered from them equals `Estimator.predict` on its samples (to float rounding: batches differ). Used from
the one thread (or child process) where its backend runs the network.

Bounded: a device keeps only crops that lie inside its latest window (a later window starts later, so nothing
older can be wanted again), and at most `PER_WINDOW` times as many as that window has (a hop that is not a whole
number of crops leaves crops of several phases inside one window: the newest are kept); at most `capacity`
devices are kept, the one heard least recently dropped first. A device that leaves and comes back is a new
generation, so nothing of its old stream is taken for the new one. At the defaults that is 10,000 devices × 10
crops × 128 float32 features (~0.65 kB each with their keys): about 65 MB at most (docs/reliability.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from p2p_stream.backends.base import Item
from p2p_stream.model.estimator import Estimator
from p2p_stream.ppg.crops import crop_length, crop_starts

PER_WINDOW = 2  # crops a device keeps, at most, per crop of its latest window


@dataclass
class _Device:
    tag: tuple[int, float]  # (generation, fs): the stream the positions below belong to
    width: int  # raw samples per crop at that rate
    features: dict[int, np.ndarray] = field(default_factory=dict)  # where a crop ends → its features (D,)

    def keep(self, at_most: int, first: int | None = None) -> None:
        """Drop the crops that start before stream position `first` (nothing older can be wanted again), then all but
        the newest `at_most`."""
        ends = sorted(e for e in self.features if first is None or e - self.width >= first)
        kept = set(ends[-at_most:]) if at_most > 0 else set()
        for end in [e for e in self.features if e not in kept]:
            del self.features[end]


class CropCache:
    """`infer(windows, meta)`: the estimator's answer for windows that passed the gate, each crop computed once."""

    def __init__(self, estimator: Estimator, capacity: int, window_s: float) -> None:
        """At most `capacity` devices; `window_s`, the daemon's windows, bounds what crops cut ahead may keep."""
        if not estimator.caches_crops:
            raise ValueError(f"{estimator.name} does not average crops with features to keep; nothing to cache")
        self.est, self.capacity = estimator, capacity
        self.max_ahead = PER_WINDOW * (int(np.ceil(window_s / estimator.crop_s)) + 1)  # crops kept from `warm`
        self.devices: OrderedDict[str, _Device] = OrderedDict()
        self.computed = 0  # crops that went through the network
        self.warmed = 0  # of them, crops cut ahead of their window (`warm`)
        self.reused = 0  # crops a window took from what was computed before it (ahead, or for an earlier window)

    def warm(self, crops: Sequence[Item]) -> None:
        """Crops cut ahead of their first window (`Request.ahead`): their features computed and kept, nothing
        answered."""
        todo = []
        for w in crops:
            entry = self._device(w, len(w.x))
            if w.end not in entry.features:
                todo.append((entry, w))
        for (entry, w), h in zip(todo, self._embed([w.x for _, w in todo], [w.fs for _, w in todo])):
            entry.features[w.end] = h
            entry.keep(self.max_ahead)  # a device whose runs never reach a window keeps no more than this
        self.computed += len(todo)
        self.warmed += len(todo)

    def _device(self, w: Item, width: int) -> _Device:
        entry = self.devices.get(w.device)
        if entry is None or entry.tag != (w.generation, w.fs) or entry.width != width:
            entry = self.devices[w.device] = _Device((w.generation, w.fs), width)
        self.devices.move_to_end(w.device)
        while len(self.devices) > self.capacity:
            self.devices.popitem(last=False)
        return entry

    def infer(self, windows: Sequence[Item], meta_features: np.ndarray) -> np.ndarray:
        """Windows with samples (N) and their meta features (N, 4) → (N, 6) mmHg, `estimator.OUTPUTS`."""
        rows: list[np.ndarray] = []  # raw crops to compute
        rates: list[float] = []
        where: list[tuple[_Device | None, int]] = []  # for each: its device's entry and where it ends
        pending: dict[tuple[int, int], int] = {}  # (id(entry), end) → its row: crops two windows of a batch share
        refs: list[list[np.ndarray | int]] = []  # per window: kept features, or the row that computes them
        for w in windows:
            n = len(w.x)
            width = min(crop_length(self.est.crop_s, w.fs), n)
            entry = self._device(w, width) if w.end >= 0 else None
            first = w.end - n  # the stream position of the window's first sample
            mine: list[np.ndarray | int] = []
            for start in crop_starts(n, width).tolist():
                end = first + start + width
                if entry is not None and end in entry.features:
                    mine.append(entry.features[end])
                    continue
                key = (id(entry), end)
                if entry is not None and key in pending:
                    mine.append(pending[key])
                    continue
                pending[key] = len(rows)
                mine.append(len(rows))
                rows.append(w.x[start : start + width])
                rates.append(w.fs)
                where.append((entry, end))
            refs.append(mine)
        fresh = self._embed(rows, rates)
        for (entry, end), h in zip(where, fresh):
            if entry is not None:
                entry.features[end] = h
        self.computed += len(rows)
        self.reused += sum(len(r) for r in refs) - len(rows)  # features found, kept or computed for another window
        h = np.stack([fresh[r] if isinstance(r, int) else r for mine in refs for r in mine])
        out = self.est.infer_embedded(h, [len(r) for r in refs], meta_features)
        for w, mine in zip(windows, refs):  # keep only what the device's latest window holds: nothing older comes back
            entry = self.devices.get(w.device)
            if entry is not None and w.end >= 0 and entry.tag == (w.generation, w.fs):
                entry.keep(PER_WINDOW * len(mine), first=w.end - len(w.x))
        return out

    def _embed(self, rows: list[np.ndarray], rates: list[float]) -> list[np.ndarray]:
        """Raw crops → their features, prepared alone and run through the network in one pass per input width."""
        if not rows:
            return []
        inputs = self.est.prepare_crops(rows, rates)
        out: list[np.ndarray] = [np.empty(0)] * len(rows)
        by_width: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            by_width.setdefault(len(x), []).append(i)
        for group in by_width.values():
            h = self.est.embed_crops(np.stack([inputs[i] for i in group]), batch_size=max(len(group), 1))
            for i, row in zip(group, h):
                out[i] = row
        return out

    def kept(self) -> int:
        """Crop features held, over all devices (what the bound is about)."""
        return sum(len(d.features) for d in self.devices.values())
