"""State a client changes: calibrations, smoothing, the control protocol and the durable store."""
