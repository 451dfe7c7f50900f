"""Inference backends: where prepared windows become SBP/DBP — in the daemon's process or on Ray Serve."""
