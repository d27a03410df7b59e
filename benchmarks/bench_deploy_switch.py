"""Start-first switches of a local deployment under load: failed requests and timings.

Run: ``python benchmarks/bench_deploy_switch.py [--switches N] [--clients C]``. Deploys an iris
bundle, then switches between two versions N times while C client threads send requests (one
fresh loopback connection each, bounded to 15 s per switch), once with the reuseport steering
and once with it disabled (plain hash sharing of the port). Prints requests, failures by kind,
how long a switch takes, and the failure ratio between the two modes. Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeldeck.core.targets.base import DeployOptions
from modeldeck.core.targets.local import LocalTarget, free_port

from tests.fixtures.deploy import IRIS_COLUMNS, make_iris_bundle

BODY = json.dumps({"dataframe_split": {"columns": list(IRIS_COLUMNS), "data": [[5.1, 3.5, 1.4, 0.2]]}}).encode()


class Load:
    def __init__(self, port: int, clients: int, max_requests: int = 20_000, max_seconds: float = 60.0) -> None:
        self.port, self.clients, self.max_requests = port, clients, max_requests
        self.deadline = time.monotonic() + max_seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self.sent = 0

    def _client(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if self.sent >= self.max_requests:
                    return
                self.sent += 1
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("POST", "/invocations", body=BODY, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                kind = None if resp.status == 200 else f"HTTP {resp.status}"
            except (OSError, http.client.HTTPException) as exc:
                kind = exc.__class__.__name__
            finally:
                conn.close()
            with self.lock:
                if kind is None:
                    self.ok += 1
                else:
                    self.failures[kind] += 1

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self._client) for _ in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def run(
    mode: str, bundles: list[Path], switches: int, clients: int, root: Path
) -> tuple[int, Counter[str], list[float]]:
    target = LocalTarget(root / mode, steer_port=mode == "steered")
    port = free_port()
    options = DeployOptions(name="bench", port=port)
    assert target.deploy(bundles[0], options).ok
    durations: list[float] = []
    try:
        with Load(port, clients) as load:
            time.sleep(0.5)
            for i in range(switches):
                start = time.perf_counter()
                result = target.deploy(bundles[(i + 1) % 2], options)
                durations.append(time.perf_counter() - start)
                assert result.ok, result.message
                time.sleep(0.3)
    finally:
        target.undeploy("bench")
    return load.ok, load.failures, durations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundles = [
            make_iris_bundle(root / "b1", version="1"),
            make_iris_bundle(root / "b2", version="2", model="tree"),
        ]
        results = {}
        results["steered"] = run("steered", bundles, args.switches, args.clients, root)
        results["hash-shared"] = run("hash-shared", bundles, args.switches, args.clients, root)
    print(f"{args.switches} switches, {args.clients} client threads, fresh connection per request, loopback")
    for mode, (ok, failures, durations) in results.items():
        total = ok + sum(failures.values())
        kinds = ", ".join(f"{k} x{v}" for k, v in failures.most_common()) or "none"
        print(
            f"{mode:12s} requests {total:6d}  failed {sum(failures.values()):4d} ({kinds})  "
            f"switch median {sorted(durations)[len(durations) // 2]:.2f} s, max {max(durations):.2f} s"
        )
    steered = sum(results["steered"][1].values())
    plain = sum(results["hash-shared"][1].values())
    print(f"failed requests, hash-shared / steered: {plain} / {steered}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
