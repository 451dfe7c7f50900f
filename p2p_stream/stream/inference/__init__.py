"""Inference: finished windows batched, run through a backend, calibrated, smoothed and published."""
