"""Offline work: datasets, training, leave-one-dataset-out, metrics and reports. The daemon never imports it."""
