"""Errors: one small hierarchy, so callers can catch what they can act on."""


class P2PError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(P2PError):
    """A configuration file, key or CLI value is invalid."""


class DatasetError(P2PError):
    """A dataset path, file or record is missing or malformed."""


class CheckpointError(P2PError):
    """A checkpoint is missing, tampered with, or does not match its metadata."""


class ProtocolError(P2PError):
    """A wire message breaks the contract; `reason` names the counter it is dropped under."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
