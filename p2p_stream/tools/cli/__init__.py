"""The command line: `p2p <verb>` and its verbs (daemon, train, eval, keys, ctl)."""
