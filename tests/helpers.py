"""Test helpers that are not fixtures: where the real data lies, one real PPG-BP segment, a simulated PPG, a small
real filesystem to fill.

Import them from here (`from helpers import simulated_ppg`); conftest.py holds fixtures only.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
SAMPLE = HERE / "data" / "ppg_bp_sample"  # the bundled real PPG-BP sample
SHARED_DATA = HERE.parent.parent / "shared" / "data"  # the full datasets, where this machine has them


def read_segment(name: str) -> np.ndarray:
    """One real PPG-BP segment (1 kHz raw ADC counts) from the bundled sample."""
    return np.array((SAMPLE / "0_subject" / f"{name}.txt").read_text().split(), dtype=np.float64)


def simulated_ppg(hr_bpm: float, seconds: float, fs: float, seed: int = 0, noise: float = 2.0) -> np.ndarray:
    """Systolic wave plus a smaller, later dicrotic wave per beat, with sensor noise (raw-count scale)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * fs))) / fs
    phase = (t * hr_bpm / 60.0) % 1.0
    beat = np.exp(-((phase - 0.15) ** 2) / 0.005) + 0.4 * np.exp(-((phase - 0.45) ** 2) / 0.01)
    return 1000 + 200 * beat + noise * rng.normal(size=t.size)


@contextmanager
def small_filesystem(folder: Path, size: str = "4m") -> Iterator[Path]:
    """A real filesystem of `size` (a tmpfs) mounted on `folder`: what a full or read-only disk is. Unmounted at exit
    whatever happens; the test is skipped, saying why, where mounting is not permitted (not root, no CAP_SYS_ADMIN)."""
    folder.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
    except FileNotFoundError:
        pytest.skip("no `mount` command here: a real full disk needs a small tmpfs mounted for the test")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{done.stderr.strip() or done.returncode}")  # fmt: skip
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # busy: detach it now, freed later


def fill(folder: Path) -> Path:
    """A filler file that takes every free byte of `folder`'s disk (delete it to free the space); its path."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 4096
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]  # the last few bytes too
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0
    return filler
