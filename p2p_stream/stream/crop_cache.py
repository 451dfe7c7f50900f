"""Crop cache: per device, the network's features of the crops its latest window holds, so that the next window
computes only the crops that are new (issue 17: 10 s windows every 2 s share four of their five 2 s crops).

A crop's model input depends on its own raw samples and nothing else (ppg/crops.py), and a window's position in
its device's stream (`Window.end`) never repeats within one DeviceStream, so (generation, rate, where the crop
ends) names one crop's samples: the features kept under it are the features the crop would get again, and a
window answered from them equals `Estimator.predict` on its samples. Used from the inference thread only.

Bounded: a device keeps only the crops of its latest window (a later window starts later, so nothing older can
be wanted again), and at most `capacity` devices are kept, the one heard least recently dropped first; a device
that leaves and comes back is a new generation, so nothing of its old stream is taken for the new one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from p2p_stream.model.estimator import Estimator
from p2p_stream.ppg.crops import crop_length, crop_starts
from p2p_stream.stream.ring_buffer import Window


@dataclass
class _Device:
    tag: tuple[int, float]  # (generation, fs): the stream the positions below belong to
    width: int  # raw samples per crop at that rate
    features: dict[int, np.ndarray] = field(default_factory=dict)  # where a crop ends → its features (D,)


class CropCache:
    """`infer(windows, meta)`: the estimator's answer for windows that passed the gate, each crop computed once."""

    def __init__(self, estimator: Estimator, capacity: int) -> None:
        if not estimator.caches_crops:
            raise ValueError(f"{estimator.name} does not average crops with features to keep; nothing to cache")
        self.est, self.capacity = estimator, capacity
        self.devices: OrderedDict[str, _Device] = OrderedDict()
        self.computed = 0  # crops that went through the network
        self.reused = 0  # crops answered from what an earlier window (or one before it in the batch) computed

    def _device(self, w: Window, width: int) -> _Device:
        entry = self.devices.get(w.device)
        if entry is None or entry.tag != (w.generation, w.fs) or entry.width != width:
            entry = self.devices[w.device] = _Device((w.generation, w.fs), width)
        self.devices.move_to_end(w.device)
        while len(self.devices) > self.capacity:
            self.devices.popitem(last=False)
        return entry

    def infer(self, windows: Sequence[Window], meta_features: np.ndarray) -> np.ndarray:
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
        self.reused += sum(len(r) for r in refs) - len(rows)
        h = np.stack([fresh[r] if isinstance(r, int) else r for mine in refs for r in mine])
        out = self.est.infer_embedded(h, [len(r) for r in refs], meta_features)
        for w in windows:  # keep only what the device's latest window holds: nothing older can come back
            entry = self.devices.get(w.device)
            if entry is not None and w.end >= 0 and entry.tag == (w.generation, w.fs):
                first = w.end - len(w.x)
                for end in [e for e in entry.features if e - entry.width < first]:
                    del entry.features[end]
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
