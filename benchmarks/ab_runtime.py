"""Interleaved A/B measurement of runtime variants and the bare anchors, with CPU time per request.

    .venv/bin/python benchmarks/ab_runtime.py [--rounds 5] [--duration 3] [-c 1,8,32]
        [--base DIR] [--only runtime,bare,base,const] [--model iris|mlp] [--config runtime.json]

Throughput on a shared 2-core VM swings by +-30 % from minute to minute; what
survives that noise is (a) interleaving the servers (A, B, A, B, ...) and taking
medians, and (b) the server's CPU time per request (utime+stime of its process
over a wrk run / requests answered), which load from other processes hardly
changes. ``--base DIR`` serves a second copy of the runtime from ``DIR`` (a tree
holding ``modeldeck/core``, e.g. ``git archive HEAD core`` unpacked under
``DIR/modeldeck``) so an old and a new version of the code run side by side.
All traffic is on 127.0.0.1; every run is bounded by ``--duration``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_runtime import IRIS_COLUMNS, PY, Server, free_port, lua_script, runtime_cmd, wrk  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its threads, in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("-c", "--concurrency", default="1,8,32")
    parser.add_argument("--base", type=Path, help="serve a second runtime from this tree (PYTHONPATH) as 'base'")
    parser.add_argument("--only", default="runtime,bare,base", help="of runtime, base, bare, const")
    parser.add_argument("--model", choices=("iris", "mlp"), default="iris")
    parser.add_argument("--config", type=Path, help="runtime.json for the runtime (and base)")
    parser.add_argument("--base-config", type=Path, help="runtime.json for base (default: --config)")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="another server: a shell-split command with {port} and {bundle} placeholders (repeatable)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    only = set(args.only.split(","))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ab-runtime-") as tmp:
        work = Path(tmp)
        from tests.fixtures.runtime import make_iris_bundle, make_mlp_bundle

        if args.model == "iris":
            bundle = make_iris_bundle(work / "bundle", n_estimators=50)
            body = json.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}})
        else:
            bundle = make_mlp_bundle(work / "bundle")
            names = [f"f{i}" for i in range(128)]
            body = json.dumps({"dataframe_split": {"columns": names, "data": [[0.1 * (i % 7) for i in range(128)]]}})
        script = lua_script(body, work / "body.lua")
        specs: list[tuple[str, list[str], int, dict[str, str] | None]] = []
        bare = [PY, str(ROOT / "benchmarks" / "bare_app.py")]
        if "const" in only:
            specs.append(("bare const", [*bare, str(p := free_port())], p, None))
        if "bare" in only:
            specs.append(("bare+run", [*bare, str(p := free_port()), str(bundle.path / "model.onnx")], p, None))
        if "base" in only and args.base:
            env = dict(os.environ, PYTHONPATH=str(args.base))
            cfg = args.base_config or args.config
            specs.append(("base", runtime_cmd(bundle.path, p := free_port(), cfg), p, env))
        for extra in args.extra:
            name, _, command = extra.partition("=")
            port = free_port()
            cmd = [a.format(port=port, bundle=bundle.path) for a in shlex.split(command)]
            specs.append((name, cmd, port, None))
        if "runtime" in only:
            specs.append(("runtime", runtime_cmd(bundle.path, p := free_port(), args.config), p, None))
        servers: list[Server] = []
        samples: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
        try:
            for name, cmd, port, env in specs:
                server = Server(name, cmd, port, env)
                servers.append(server)
                wrk(name, f"{server.url}/invocations", script, levels[0], 1.0)
            for c in levels:
                for _ in range(args.rounds):
                    for server in servers:
                        cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
                        r = wrk(server.name, f"{server.url}/invocations", script, c, args.duration)
                        cpu1, t1 = cpu_seconds(server.proc.pid), time.monotonic()
                        requests = r.rps * args.duration
                        cpu_us = (cpu1 - cpu0) / requests * 1e6 if requests else float("nan")
                        busy = (cpu1 - cpu0) / (t1 - t0)
                        samples.setdefault((server.name, c), []).append((r.rps, r.p99_ms, cpu_us, busy))
                        if r.errors:
                            print(f"  {server.name} c={c}: {r.errors} errors", flush=True)
        finally:
            for server in servers:
                server.stop()
    print("\n| server | c | req/s (median) | p99 ms (median) | CPU µs/req (median) | server CPU % | req/s runs |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for c in levels:
        for name, *_ in specs:
            s = samples[(name, c)]
            rps = statistics.median(x[0] for x in s)
            print(
                f"| {name} | {c} | {rps:,.0f} | {statistics.median(x[1] for x in s):.2f} |"
                f" {statistics.median(x[2] for x in s):.1f} | {100 * statistics.median(x[3] for x in s):.0f} |"
                f" {' '.join(f'{x[0]:.0f}' for x in s)} |"
            )
    print("\nratios of medians:")
    for c in levels:
        med = {name: statistics.median(x[0] for x in samples[(name, c)]) for name, *_ in specs}
        parts = [f"{a}/{b} {med[a] / med[b]:.2f}" for a in med for b in med if a != b and b in ("bare+run", "base")]
        print(f"  c={c}: " + ", ".join(parts))
    if "base" in [name for name, *_ in specs]:
        print("paired per round (runtime run right after base), median of ratios:")
        for c in levels:
            base_runs, ours = samples[("base", c)], samples.get(("runtime", c), [])
            if ours:
                rps = statistics.median(o[0] / b[0] for o, b in zip(ours, base_runs, strict=True))
                cpu = statistics.median(o[2] / b[2] for o, b in zip(ours, base_runs, strict=True))
                print(f"  c={c}: runtime/base req/s {rps:.2f}, CPU per request {cpu:.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
