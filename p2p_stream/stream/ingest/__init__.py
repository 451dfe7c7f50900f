"""Ingest: a wearable's message to finished windows — ring buffers, the device table, arrival, budgets, bounds."""
