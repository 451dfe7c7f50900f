"""Ingest router: which handler takes a message, by its topic's prefix; the SUB subscribes to exactly these.

A new kind of message from the wearables (a second channel) is one `register(prefix, handler)` in the daemon: the
subscription, the dispatch and the counting of what matches no prefix follow from it.
"""

from __future__ import annotations

from collections.abc import Callable

from p2p_stream.errors import ProtocolError

Handler = Callable[[list[bytes], float, "str | None"], None]  # (frames, arrival, client key); raises on bad input


class IngestRouter:
    def __init__(self) -> None:
        self._routes: list[tuple[bytes, Handler]] = []

    def register(self, prefix: bytes, handler: Handler) -> None:
        """Messages whose topic starts with `prefix` go to `handler`; prefixes may not overlap (one handler each)."""
        for known, _ in self._routes:
            if known.startswith(prefix) or prefix.startswith(known):
                raise ValueError(f"topic prefix {prefix!r} overlaps {known!r}")
        self._routes.append((prefix, handler))

    @property
    def prefixes(self) -> list[bytes]:
        return [prefix for prefix, _ in self._routes]

    def route(self, frames: list[bytes]) -> Handler:
        """The handler for `[topic, payload]`; ProtocolError (`bad_frames`, `bad_topic`) when there is none."""
        if len(frames) != 2:
            raise ProtocolError("bad_frames", f"expected 2 frames [topic, payload], got {len(frames)}")
        topic = frames[0]
        for prefix, handler in self._routes:
            if topic.startswith(prefix):
                return handler
        known = " or ".join(repr(p.decode()) for p in self.prefixes)
        raise ProtocolError("bad_topic", f"topic {topic[:80]!r} does not start with {known}")
