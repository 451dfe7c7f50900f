"""User-facing tools: the command line, dashboard, demo, simulators, proxy and keys; no core module imports them."""
