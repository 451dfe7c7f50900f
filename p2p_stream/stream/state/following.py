"""Following the state store: once a second the daemon hands it where its stored sessions' streams are (so a crash
loses no session), takes up the forgets and ended sessions other daemons sharing the file made (so a device forgotten
there is forgotten here too), checks the file was not swapped underneath, and now and then sweeps what can never
apply again (stream/state/store.py)."""

from __future__ import annotations

import logging

from p2p_stream.stream.state.daemon_control import DaemonControl
from p2p_stream.stream.state.remembering import RememberingDeviceTable
from p2p_stream.stream.state.store import StateStore

log = logging.getLogger(__name__)
CHECK_S = 5.0  # how often the file is checked when no write checked it
SWEEP_S = 60.0  # how often sessions that can never apply again are dropped


class StoreFollower:
    def __init__(self, store: StateStore, devices: RememberingDeviceTable, control: DaemonControl) -> None:
        self.store, self.devices, self.control = store, devices, control
        self.seen = store.last_change()  # changes before this start are in what the store gives back
        self.next_check = self.next_sweep = 0.0

    def tick(self, now: float) -> None:
        """One pass; `now` is time.monotonic(). Never raises for the store's sake: it logs."""
        self.devices.flush()
        self.seen, changes = self.store.changes_since(self.seen)
        for cmd, device, session in changes:
            stream = self.devices.streams.get(device)
            if stream is None:
                continue
            if cmd == "forget":
                self.control.drop(device)
                log.info("forgot %s: another daemon sharing the state store forgot it", device)
            elif stream.session is not None and stream.session.id == session:
                self.devices.end_session(device)
                log.info("ended %s's session %s: another daemon sharing the state store ended it", device, session)
        if now >= self.next_check:
            self.store.check()
            self.next_check = now + CHECK_S
        if now >= self.next_sweep:
            self.store.sweep()
            self.next_sweep = now + SWEEP_S
