"""The daemon's answers to control requests: `control.ControlState` over its device table, calibrations, smoothing
and state store, with each client key held to its devices (CURVE)."""

from __future__ import annotations

from collections.abc import Callable

from p2p_stream.stream.ingest.devices import DeviceTable
from p2p_stream.stream.security.grants import DeviceGrants
from p2p_stream.stream.state import control
from p2p_stream.stream.state.calibration import Calibrations
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
    ) -> None:
        """`grants`: with CURVE, which devices each client key may act for (`open` without: every client may act for
        every device); `status`: the heartbeat map; `refuse`: counts and logs a refused request."""
        self.devices, self.calibrations, self.smoother, self.store = devices, calibrations, smoother, store
        self.grants, self.status, self.refuse = grants, status, refuse
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

    def forget(self, device: str) -> bool:
        if self.store is not None:  # for good, on disk first: a restart or its return must not bring it back
            self.store.forget(device, self.client)  # StoreError: nothing forgotten, the client hears why
        # Its windows still queued or at the backend are of this generation: they must not rebuild its state.
        stream = self.devices.streams.get(device)
        generation = stream.generation if stream is not None else None
        known = self.devices.forget(device)
        self.grants.release([device])
        self.calibrations.forget(device, generation)
        self.smoother.forget(device, generation)
        return known

    def calibrate(self, device: str, sbp: float, dbp: float) -> bool:
        stream = self.devices.streams[device]  # `control.handle` asked `known(device)` first
        # The reading's time on the device's clock, which its estimates' `t` use: its latest sample.
        # For the stream sending now: estimates of a stream before it (another wearer) never form its reference.
        t_cal = stream.next_t0 - 1.0 / stream.fs
        key = None
        if self.store is not None:  # on disk with its audit row before it is applied (StoreError: not applied at all)
            key = self.store.add_calibration(device, (sbp, dbp), t_cal, self.client)
        return self.calibrations.calibrate(device, sbp, dbp, t_cal, stream.generation, key=key)

    def history(self, device: str, limit: int) -> list[dict] | None:
        if self.store is None:
            return None
        rows = self.store.history(device, limit)
        for row in rows:  # the key file's name where this daemon still allows the key (a revoked one: its key only)
            name = self.grants.name(row["client"]) if row["client"] is not None else None
            if name is not None and name != row["client"]:
                row["client_name"] = name
        return rows
