"""The cluster tier's tools: the proxy, the supervisor, `p2p cluster check|up` and its plan."""
