"""Instructions per request through the HTTP protocol, in-process and independent of the machine's load.

    .venv/bin/python benchmarks/protocol_instructions.py [-k 1,8] [--waves 1000] [--server runtime|bare] [--idle 1]
    PYTHONPATH=OLD_TREE .venv/bin/python benchmarks/protocol_instructions.py   # an older runtime, same harness

k fake connections (in-memory transports on uvloop) each send one ``POST /invocations``
per wave; a wave ends when every connection has its answer. What is counted is
everything the server's Python does for a request -- httptools parsing, uvicorn's
protocol, the app, batching, ``session.run`` -- but no syscalls and no client.
``--server runtime`` is the runtime (its protocol and app, default config);
``--server bare`` is ``bare_app.py`` with one ``session.run`` on stock uvicorn.
``--idle N`` keeps N more connections open that never send (a scraper's or a
health checker's idle keep-alive). Batch sizes (requests per ``session.run``) are
printed with ``--time``.
Under callgrind (``valgrind`` on PATH) it prints instructions per request, counted
only over the measured waves; with ``--time`` it prints CPU µs per request instead.
Model: the 50-tree iris forest that ``bench_runtime.py`` serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class _Transport:
    """Just enough of an asyncio transport for uvicorn's protocol: counts writes, keeps the last one."""

    def __init__(self) -> None:
        self.writes = 0
        self.last = b""
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.last = data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _serve(bundle: Path, server: str, k: int, waves: int, flag: Path | None, idle: int = 0) -> float:
    """Run the waves; with ``flag``, hand-shake with the parent around the measured part (for callgrind)."""
    import uvicorn
    import uvloop
    from modeldeck.core.runtime.manifest import verify_bundle
    from modeldeck.core.runtime.model import ServedModel
    from uvicorn.server import ServerState

    model = ServedModel(bundle, verify_bundle(bundle))
    model.load()
    columns = model.manifest.inputs
    body = json.dumps({"dataframe_split": {"columns": [c.name for c in columns], "data": [[0.5] * len(columns)]}})
    request = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())
    )
    protocol_class: Any
    if server == "runtime":
        from modeldeck.core.runtime.app import RuntimeApp
        from modeldeck.core.runtime.config import RuntimeConfig
        from modeldeck.core.runtime.http_protocol import OneWriteHttpToolsProtocol as protocol_class

        app: Any = RuntimeApp(model, RuntimeConfig(), "bench")
        app.mark_ready()
    else:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as protocol_class

        sys.path.insert(0, str(ROOT / "benchmarks"))
        import bare_app

        bare_app.INFER = bare_app._inference(str(bundle / "model.onnx"))
        app = bare_app.app
    config = uvicorn.Config(
        app, http=protocol_class, lifespan="off", access_log=False, server_header=False, proxy_headers=False
    )
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Fri, 27 Nov 2026 20:00:00 GMT")]

    async def main() -> float:
        loop = asyncio.get_running_loop()
        if server == "runtime":
            app.pending_requests = state.tasks.__len__  # as server.py sets it
        conns = []
        for _ in range(k):
            protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
            transport = _Transport()
            protocol.connection_made(transport)
            conns.append((protocol, transport))
        for _ in range(idle):
            protocol_class(config=config, server_state=state, app_state={}, _loop=loop).connection_made(_Transport())

        async def wave() -> None:
            want = [t.writes + 1 for _, t in conns]
            for p, _ in conns:
                p.data_received(request)
            for _ in range(100):
                if all(t.writes >= w for (_, t), w in zip(conns, want, strict=True)):
                    return
                await asyncio.sleep(0)
            raise RuntimeError(f"no answer; last write {conns[0][1].last!r}")

        for _ in range(200):
            await wave()
        if flag is not None:
            flag.write_text("measure")
            while flag.exists():
                time.sleep(0.1)
        batches = app.metrics.batch_requests.counts[:] if server == "runtime" else None
        start = time.thread_time()
        for _ in range(waves):
            await wave()
        seconds = time.thread_time() - start
        if batches is not None and flag is None:
            runs = sum(app.metrics.batch_requests.counts) - sum(batches)
            print(f"  {k * waves / max(runs, 1):.2f} requests per session.run", flush=True)
        if flag is not None:
            flag.with_suffix(".done").write_text("done")
            while flag.with_suffix(".done").exists():
                time.sleep(0.1)
        return seconds

    return uvloop.run(main())


def _callgrind(args: argparse.Namespace, k: int, bundle: Path, work: Path) -> int:
    """Run ``_serve`` under callgrind with collection switched on only for the measured waves; total Ir."""
    flag = work / f"flag-{k}"
    out = work / f"callgrind-{k}.out"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--child",
        str(flag),
        "--bundle",
        str(bundle),
        "--server",
        args.server,
        "-k",
        str(k),
        "--waves",
        str(args.waves),
        "--idle",
        str(args.idle),
    ]
    with open(work / f"valgrind-{k}.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        for phase in ("on", "off"):
            target = flag if phase == "on" else flag.with_suffix(".done")
            deadline = time.monotonic() + 900
            while not target.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"callgrind run ended early: {(work / f'valgrind-{k}.log').read_text()[-2000:]}")
                time.sleep(0.2)
            subprocess.run(
                ["callgrind_control", "-i", phase, str(proc.pid)], check=True, capture_output=True, timeout=60
            )
            if phase == "off":
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True, timeout=60)
            target.unlink()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    total = 0
    for path in work.glob(f"callgrind-{k}.out*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total += int(line.split()[1])
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="1,8", help="connections per wave (comma-separated)")
    parser.add_argument("--waves", type=int, default=1000)
    parser.add_argument("--server", choices=("runtime", "bare"), default="runtime")
    parser.add_argument("--time", action="store_true", help="CPU time per request instead of callgrind")
    parser.add_argument("--idle", type=int, default=0, help="more connections, open and idle")
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _serve(args.bundle, args.server, int(args.k), args.waves, args.child, args.idle)
        return 0
    sys.path.insert(0, str(ROOT))
    import modeldeck.core.runtime

    from tests.fixtures.runtime import make_iris_bundle

    print(
        f"{args.server} from {Path(modeldeck.core.runtime.__file__).parent}, {args.idle} idle connection(s); "
        f"load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="protocol-instructions-") as tmp:
        work = Path(tmp)
        bundle = make_iris_bundle(work / "bundle", n_estimators=50).path
        for k in (int(x) for x in args.k.split(",")):
            waves = max(1, args.waves // k)
            if args.time:
                best = min(_serve(bundle, args.server, k, waves, None, args.idle) for _ in range(5))
                print(f"k={k}: {best / (k * waves) * 1e6:.1f} µs CPU per request (best of 5)", flush=True)
            else:
                args.waves = waves
                total = _callgrind(args, k, bundle, work)
                print(f"k={k}: {total / (k * waves) / 1000:.1f}k instructions per request", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
