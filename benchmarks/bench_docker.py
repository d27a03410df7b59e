"""The Docker target on the local engine: deploy-to-first-answer time and the replacement gap under load.

Run (as root, with dockerd running): ``python benchmarks/bench_docker.py [--rounds N] [--switches N]``.

1. *Deploy to first healthy response* for a new model version on the warm base image (the test
   suite's, built on first use): each round makes a bundle no image exists for yet, deploys it
   with ``DockerTarget.deploy`` and times the phases from its progress events -- image build,
   container start (``docker run`` returning), ready (the in-container health gate passing:
   model loaded, ``/health``, the input example), commit -- plus the first 200 from the public
   port on 127.0.0.1. Rounds are fresh deployments (undeployed between rounds).
2. *Replacement gap*: two client threads send requests (a fresh loopback connection each,
   paced, bounded to 6,000 requests / 20 s per switch) while the deployment switches between two
   prebuilt images ``--switches`` times, once with the port pin (SIGUSR1/SIGUSR2 steering) and
   once with plain ``SO_REUSEPORT`` hash sharing. Prints failed requests per mode, the worst
   latency during switches, and the ratio between the modes.

Loopback only; every call bounded. Containers and images it creates are removed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeldeck.core.targets.base import DeployOptions, ProgressEvent
from modeldeck.core.targets.docker import image as images
from modeldeck.core.targets.docker.engine import parse_engine_url
from modeldeck.core.targets.docker.target import DockerTarget
from modeldeck.core.targets.local import free_port

from tests.fixtures.deploy import IRIS_COLUMNS, make_iris_bundle
from tests.fixtures.docker_base import BASE_IMAGE, ensure_base_image

BODY = json.dumps({"dataframe_split": {"columns": list(IRIS_COLUMNS), "data": [[5.1, 3.5, 1.4, 0.2]]}}).encode()


def post(port: int, timeout: float = 5.0) -> tuple[bool, str, float]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/invocations", body=BODY, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200, "" if resp.status == 200 else f"HTTP {resp.status}", time.perf_counter() - started
    except (OSError, http.client.HTTPException) as exc:
        return False, exc.__class__.__name__, time.perf_counter() - started
    finally:
        conn.close()


class Load:
    """C client threads, bounded by request count and time; records failures and latencies."""

    def __init__(
        self, port: int, clients: int = 2, max_requests: int = 6000, max_seconds: float = 20.0, pace_s: float = 0.004
    ) -> None:
        self.port, self.clients, self.max_requests, self.pace_s = port, clients, max_requests, pace_s
        self.deadline = time.monotonic() + max_seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = self.ok = 0
        self.failures: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if self.sent >= self.max_requests:
                    return
                self.sent += 1
            ok, kind, elapsed = post(self.port)
            self.stop.wait(self.pace_s)  # paced, so the bounded load spans the whole switch
            with self.lock:
                self.latencies.append(elapsed)
                if ok:
                    self.ok += 1
                else:
                    self.failures[kind] += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def first_answer(port: int, timeout: float = 30.0) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if post(port, timeout=2)[0]:
            return time.perf_counter() - started
        time.sleep(0.01)
    raise RuntimeError(f"no answer on port {port} within {timeout:.0f} s")


def bench_first_response(target: DockerTarget, work: Path, rounds: int) -> list[dict[str, float]]:
    out = []
    for i in range(rounds):
        bundle = make_iris_bundle(work / f"fresh{i}", version=f"{int(time.time())}{i}")  # never built before
        name = f"bench-fresh-{i}"
        port = free_port()
        marks: dict[str, float] = {}
        t0 = time.perf_counter()

        def mark(event: ProgressEvent, marks: dict[str, float] = marks, t0: float = t0) -> None:
            marks.setdefault(event.step, time.perf_counter() - t0)

        result = target.deploy(
            bundle, DeployOptions(name=name, port=port, extra={"base_image": BASE_IMAGE}), progress=mark
        )
        deployed = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"deploy failed: {result.message}")
        answer = first_answer(port)
        total = deployed + answer
        out.append(
            {
                "build_s": marks["start"],  # from the deploy call: verify, wheel, context, docker build
                "start_s": marks["health"] - marks["start"],
                "ready_s": marks["switch"] - marks["health"],
                "commit_s": deployed - marks["switch"],
                "first_answer_after_deploy_s": answer,
                "total_s": total,
            }
        )
        target.undeploy(name)
    return out


def bench_switches(target: DockerTarget, refs: dict[str, str], bundles: dict[str, Path], switches: int) -> dict:
    name = f"bench-switch-{'pin' if target.steer_port else 'hash'}"
    port = free_port()
    first = target.deploy(bundles["v1"], DeployOptions(name=name, port=port, extra={"image": refs["v1"]}))
    if not first.ok:
        raise RuntimeError(first.message)
    totals: Counter[str] = Counter()
    sent = ok = 0
    worst = 0.0
    durations = []
    try:
        for i in range(switches):
            key = "v2" if i % 2 == 0 else "v1"
            with Load(port) as load:
                time.sleep(0.3)
                t0 = time.perf_counter()
                result = target.deploy(bundles[key], DeployOptions(name=name, port=port, extra={"image": refs[key]}))
                durations.append(time.perf_counter() - t0)
                covered = all(t.is_alive() for t in load.threads)
                time.sleep(0.3)
            if not covered:
                raise RuntimeError("the bounded load ended before the switch did; raise max_requests/max_seconds")
            if not result.ok:
                raise RuntimeError(result.message)
            totals.update(load.failures)
            sent += load.sent
            ok += load.ok
            worst = max([worst, *load.latencies])
    finally:
        target.undeploy(name)
    return {
        "mode": "pinned (steered)" if target.steer_port else "hash sharing",
        "requests": sent,
        "ok": ok,
        "failed": sum(totals.values()),
        "failures": dict(totals),
        "max_latency_ms": worst * 1000,
        "switch_s_median": statistics.median(durations),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh deploys timed (default 3)")
    parser.add_argument("--switches", type=int, default=4, help="version switches per mode (default 4)")
    args = parser.parse_args()

    t = time.perf_counter()
    ensure_base_image(BASE_IMAGE)
    print(f"base image {BASE_IMAGE} ready ({time.perf_counter() - t:.1f} s; cached when fast)")
    target = DockerTarget(parse_engine_url("docker://"), timeout=60)
    client = target.client
    with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp:
        work = Path(tmp)
        rows = bench_first_response(target, work, args.rounds)
        print("\nDeploy of a new version to its first healthy answer (warm base, fresh deployment):")
        keys = list(rows[0])
        print("  " + "  ".join(f"{k:>28}" for k in keys))
        for r in rows:
            print("  " + "  ".join(f"{r[k]:28.2f}" for k in keys))
        print("  median " + ", ".join(f"{k}={statistics.median(r[k] for r in rows):.2f}" for k in keys))

        bundles = {"v1": make_iris_bundle(work / "v1", version="1"), "v2": make_iris_bundle(work / "v2", version="2")}
        refs = {}
        for key, bundle in bundles.items():
            built = images.build_image(
                client, bundle, images.BuildOptions(tag=f"modeldeck-bench/iris:{key}", base_image=BASE_IMAGE)
            )
            refs[key] = built.image_id
            print(
                f"image {key}: {built.image_id[:19]} {built.size_bytes / 2**20:.1f} MiB built in {built.seconds:.1f} s"
            )
        try:
            results = []
            for steer in (True, False):
                target.steer_port = steer
                results.append(bench_switches(target, refs, bundles, args.switches))
        finally:
            for key in refs:
                client.images.remove(f"modeldeck-bench/iris:{key}", force=True)
    print(f"\nReplacement under load (2 clients, fresh connection per request, {args.switches} switches per mode):")
    for r in results:
        print(
            f"  {r['mode']:>17}: {r['requests']} requests, {r['failed']} failed {r['failures'] or ''}, "
            f"max latency {r['max_latency_ms']:.0f} ms, switch median {r['switch_s_median']:.2f} s"
        )
    pinned, hashed = results
    print(f"  failed requests, hash sharing / pinned: {hashed['failed']} / {pinned['failed']}")
    target.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
