"""The daemon's answers to control requests: `control.ControlState` over its device table, calibrations, smoothing
and state store, with each client key held to its devices (CURVE) and to its quota of state changes."""

from __future__ import annotations

import time
from collections.abc import Callable

from p2p_stream.errors import P2PError
from p2p_stream.stream.ingest.devices import DeviceTable
from p2p_stream.stream.security.grants import DeviceGrants
from p2p_stream.stream.state import control
from p2p_stream.stream.state.calibration import Calibrations
from p2p_stream.stream.state.quotas import ControlQuotas
from p2p_stream.stream.state.sessions import Position
from p2p_stream.stream.state.smoothing import Smoother
from p2p_stream.stream.state.store import StateStore

Refuse = Callable[[str, "str | None", str], None]  # (reason, client key, device): counted and logged


class DaemonControl:
    """`on_control(frames, user)` → the reply map; `status`, `known`, `forget`, `calibrate`, `history` are what the
    control protocol (`control.handle`) acts on."""

    def __init__(
        self,
        *,
        devices: DeviceTable,
        calibrations: Calibrations,
        smoother: Smoother,
        store: StateStore | None,
        grants: DeviceGrants,
        status: Callable[[], dict],
        refuse: Refuse,
        quotas: ControlQuotas | None = None,
    ) -> None:
        """`grants`: with CURVE, which devices each client key may act for (`open` without: every client may act for
        every device); `status`: the heartbeat map; `refuse`: counts and logs a refused request; `quotas`: state
        changes per key and per device (None: unbounded, for tests of other things)."""
        self.devices, self.calibrations, self.smoother, self.store = devices, calibrations, smoother, store
        self.grants, self.status, self.refuse, self.quotas = grants, status, refuse, quotas
        self.client: str | None = None  # the client key of the request being answered (with CURVE), for the audit

    def on_control(self, frames: list[bytes] | dict, user: str | None = None) -> dict:
        """A control request → its reply map (`control.handle`); every failure is an `ok: false` reply. With CURVE,
        a command naming a device `user`'s key may not act for is refused and counted `unauthorized_device`."""
        self.client = user
        if self.grants.open:
            return control.handle(frames, self)
        grants = self.grants

        def allowed(device: str) -> bool:
            if grants.allows(user, device):
                return True
            self.refuse("unauthorized_device", user, device)
            return False

        return control.handle(frames, self, allowed)

    def known(self, device: str) -> bool:
        stream = self.devices.streams.get(device)
        return stream is not None and stream.next_t0 is not None

    def admit(self, device: str) -> str | None:
        why = self.quotas.take(self.client, device, time.monotonic()) if self.quotas is not None else None
        if why is not None:
            self.refuse("over_quota", self.client, device)
        return why

    def forget(self, device: str) -> bool:
        if self.store is not None:  # for good, on disk first: a restart or its return must not bring it back
            # StoreError: nothing forgotten, the client hears why. An id neither streaming nor stored: no audit row.
            self.store.forget(device, self.client, known=device in self.devices.streams)
        return self.drop(device)

    def drop(self, device: str) -> bool:
        """What this daemon holds of the device — buffer, calibration, smoothing — gone (a `forget` here or on
        another daemon sharing the store); whether it was streaming."""
        # Its windows still queued or at the backend are of this generation: they must not rebuild its state.
        stream = self.devices.streams.get(device)
        generation = stream.generation if stream is not None else None
        known = self.devices.forget(device)
        self.grants.release([device])
        self.calibrations.forget(device, generation)
        self.smoother.forget(device, generation)
        return known

    def end_session(self, device: str) -> int | None:
        stream = self.devices.streams.get(device)
        if stream is None or stream.session is None:
            return None
        if self.store is not None:  # on disk with its audit row first (StoreError: the session goes on)
            self.store.end_session(device, stream.session, self.client)
        return self.devices.end_session(device)  # a new generation: calibration and smoothing start again

    def calibrate(self, device: str, sbp: float, dbp: float, wearer: str | None = None) -> dict:
        stream = self.devices.streams[device]  # `control.handle` asked `known(device)` first
        session = stream.session
        if wearer is not None and (session is None or session.wearer != wearer):
            raise WrongWearer(
                f"{device!r} is worn in another session now (wearer {session.wearer if session else None!r}, not "
                f"{wearer!r}): the reading would go to someone else"
            )
        # The reading's time on the device's clock, which its estimates' `t` use: its latest sample.
        # For the stream sending now: estimates of a stream before it (another wearer) never form its reference.
        t_cal = stream.next_t0 - 1.0 / stream.fs
        key = None
        if self.store is not None:  # on disk with its audit row before it is applied (StoreError: not applied at all)
            at = Position(stream.last_seq if stream.last_seq is not None else 0, t_cal)
            key = self.store.add_calibration(device, session, (sbp, dbp), t_cal, at, self.client)
        sid = session.id if session is not None else 0
        applied = self.calibrations.calibrate(device, sbp, dbp, t_cal, stream.generation, key=key, session=sid)
        return {"applied": applied, "session": sid}

    def history(self, device: str, limit: int) -> list[dict] | None:
        if self.store is None:
            return None
        rows = self.store.history(device, limit)
        for row in rows:  # the key file's name where this daemon still allows the key (a revoked one: its key only)
            name = self.grants.name(row["client"]) if row["client"] is not None else None
            if name is not None and name != row["client"]:
                row["client_name"] = name
        return rows


class WrongWearer(P2PError):
    """A `calibrate` named a wearer whose session is not the device's now."""
