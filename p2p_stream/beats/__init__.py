"""Beats: R peaks of an ECG, feet and peaks of a PPG, and the pulse arrival time between them, found incrementally
as samples stream in (each sample filtered once, each beat reported once), with causal filters whose delay is
corrected. The definitions follow stress_beats_zjx (offline/datasets/stress_beats.py), on which the tracking model
was fitted: the PPG foot by the intersecting tangent, the arrival time from the R peak to that foot."""
