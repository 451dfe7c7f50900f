"""The streaming path: wearable → SUB → ring buffer → window → quality gate → batch → model → PUB."""
