"""Ray Serve autoscaling under load: replicas and windows/s over time as daemon-like senders flood the app.

    python benchmarks/ray_autoscale.py [--senders 8] [--seconds 60] [--max-replicas 2]

Starts a local Ray, deploys the shipped model as the daemons' Serve app would (`RayBackend`, min 1 replica),
and from `--senders` threads sends 64-window batches back to back. Every 5 s it prints the replicas Serve runs
and the windows/s answered in that interval, so the autoscaler's reaction (and its delay) is visible.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import ray
from ray import serve

from p2p_stream import Estimator
from p2p_stream.backends.ray import RayBackend
from p2p_stream.config.daemon import Ray
from p2p_stream.model.estimator import default_model_path


def replicas(app: str) -> int:
    status = serve.status().applications[app].deployments["PressureModel"]
    return sum(n for state, n in status.replica_states.items() if str(state).endswith("RUNNING"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--senders", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--max-replicas", type=int, default=2)
    p.add_argument("--target", type=float, default=1.0, help="ray.target_ongoing_requests")
    args = p.parse_args()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    est = Estimator.load()
    config = Ray(app="p2p-autoscale", min_replicas=1, max_replicas=args.max_replicas,
                 target_ongoing_requests=args.target, max_in_flight=args.senders)  # fmt: skip
    backend = RayBackend(est, default_model_path(), config)
    _, x = est.assess_batch(np.stack([np.sin(np.arange(1250) / 125 * 2 * np.pi * 1.2)] * 64), 125.0)
    features = np.zeros((len(x), 4), np.float32)
    answered, stop = [0] * args.senders, threading.Event()  # one counter per sender: no lost updates

    def send(k: int) -> None:
        while not stop.is_set():
            answered[k] += len(backend.predict(x, features))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(args.senders)]
    for t in threads:
        t.start()
    start = last_t = time.monotonic()
    last_n = 0
    print("| t s | replicas running | windows/s in the last 5 s |\n|---|---|---|")
    while time.monotonic() - start < args.seconds:
        time.sleep(5)
        now, n = time.monotonic(), sum(answered)
        print(f"| {now - start:.0f} | {replicas(config.app)} | {(n - last_n) / (now - last_t):.0f} |", flush=True)
        last_t, last_n = now, n
    stop.set()
    for t in threads:
        t.join()
    info = backend.handle.info.remote().result()
    print(f"\nthe replica that answered last: {info['requests']} requests in {info['forwards']} forward passes")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
