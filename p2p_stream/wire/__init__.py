"""The wire contract (../shared/PROTOCOL.md): message formats, the estimate declared once, a client's probe.

Below the daemon and the tools alike: both import it, it imports neither.
"""
