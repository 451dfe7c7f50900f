"""The streaming path: wearable → SUB → ring buffer → window → quality gate → batch → model → PUB.

daemon.py    the stages wired: build → bind → run → ingest
parts.py     the parts, built from the config with no socket open
sockets.py   the ZeroMQ side: ingest SUB, estimates PUB, control REP, CURVE, socket monitors
counters.py  what the heartbeat reports
ingest/      a message to windows: the router, ring buffers, the device table, arrival, budgets, bounds
inference/   windows to estimates: the batcher and the worker (the backend: ../backends/)
state/       what a client changes: calibrations, smoothing, control, the durable store
cluster/     membership, ownership, following the live set
security/    CURVE and which devices each client key may act for
"""
