"""Chaos at load, the short form in CI (tests/chaos.py has the machinery; benchmarks/chaos.py the full size): 20
devices through a proxy and a daemon with a state store; the daemon, the proxy, a subscriber and the recorder each
killed with -9 once and restarted."""

from __future__ import annotations

from chaos import Bounds, Chaos, ChaosConfig, check, table


def test_every_role_killed_once_under_a_live_fleet(tmp_path):
    config = ChaosConfig(devices=20, kills_each=1, spacing_s=0.0, settle_s=1.0, calibrate=5, window_s=4.0,
                         hop_s=1.0, start_timeout_s=60.0, back_timeout_s=30.0)  # fmt: skip
    report = Chaos(config, tmp_path).run()
    print(table(report))
    check(report, Bounds.for_config(config))
