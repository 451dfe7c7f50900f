"""User-facing tools; no core module imports them.

cli/        the p2p command and its verbs (daemon, train, eval, keys, ctl)
dashboard/  the live terminal dashboard
recording/  the recorder and reading its files back
cluster/    the proxy, the supervisor, p2p cluster check|up
bridges/    wearables in: LSL, replay, the simulated fleet, conversion to the replay CSV
demo.py     daemon + replay + dashboard, the README's first command
common.py   what every tool shares: the parent parser, flag aliases, one error handler
"""
