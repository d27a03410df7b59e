"""Dynamic batching, driven through the real ASGI app and a real onnxruntime session in-process
(the HTTP tests cannot make concurrency deterministic; here the event loop can)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from modeldeck.core.runtime.app import RuntimeApp
from modeldeck.core.runtime.config import RuntimeConfig
from modeldeck.core.runtime.manifest import verify_bundle
from modeldeck.core.runtime.model import ServedModel

from tests.fixtures.runtime import RuntimeProcess, make_slow_bundle, start_runtime

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _app(bundle: Path, **config: Any) -> RuntimeApp:
    model = ServedModel(bundle, verify_bundle(bundle))
    model.load(warmup_runs=1)
    app = RuntimeApp(model, RuntimeConfig(**config), "test")
    app.mark_ready()
    return app


async def _call(app: RuntimeApp, rows: list[list[float]], columns: list[str] = COLUMNS) -> tuple[int, Any]:
    body = json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()
    scope = {
        "type": "http",
        "path": "/invocations",
        "method": "POST",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_concurrent_requests_share_one_session_run(runtime_bundles: dict[str, Any]) -> None:
    bundle = runtime_bundles["iris"]
    app = _app(bundle.path, max_batch_size=64)
    slices = [bundle.X[i : i + 1 + i % 3].tolist() for i in range(0, 24, 3)]

    async def burst() -> list[tuple[int, Any]]:
        return await asyncio.gather(*(_call(app, rows) for rows in slices))

    answers = asyncio.run(burst())
    for (status, body), rows in zip(answers, slices, strict=True):
        assert status == 200
        assert body["predictions"] == bundle.model.predict(np.array(rows)).tolist()
    m = app.metrics
    assert m.batch_requests.total == len(slices)  # every request ran ...
    assert sum(m.batch_requests.counts) == 1  # ... in a single session.run
    assert m.batch_size.total == sum(len(r) for r in slices)


def test_max_batch_size_bounds_the_rows_per_run(runtime_bundles: dict[str, Any]) -> None:
    bundle = runtime_bundles["iris"]
    app = _app(bundle.path, max_batch_size=4)
    rows = [bundle.X[i : i + 2].tolist() for i in range(0, 20, 2)]  # 10 requests of 2 rows

    async def burst() -> list[tuple[int, Any]]:
        return await asyncio.gather(*(_call(app, r) for r in rows))

    assert all(status == 200 for status, _ in asyncio.run(burst()))
    assert sum(app.metrics.batch_requests.counts) == 5  # 2 requests (4 rows) per run
    assert app.metrics.batch_size.total == 20


def test_batching_off_runs_each_request_alone(runtime_bundles: dict[str, Any]) -> None:
    bundle = runtime_bundles["iris"]
    app = _app(bundle.path, max_batch_size=1)

    async def burst() -> list[tuple[int, Any]]:
        return await asyncio.gather(*(_call(app, [bundle.X[i].tolist()]) for i in range(6)))

    assert all(status == 200 for status, _ in asyncio.run(burst()))
    assert sum(app.metrics.batch_requests.counts) == 6


def test_max_batch_wait_collects_requests_that_arrive_a_little_later(runtime_bundles: dict[str, Any]) -> None:
    bundle = runtime_bundles["iris"]
    app = _app(bundle.path, max_batch_size=64, max_batch_wait_ms=50)
    row = bundle.X[0].tolist()

    async def staggered() -> list[tuple[int, Any]]:
        first = [asyncio.ensure_future(_call(app, [row])) for _ in range(2)]
        await asyncio.sleep(0.01)  # inside the 50 ms window
        later = [asyncio.ensure_future(_call(app, [row])) for _ in range(3)]
        return await asyncio.gather(*first, *later)

    assert all(status == 200 for status, _ in asyncio.run(staggered()))
    assert sum(app.metrics.batch_requests.counts) == 1


@pytest.mark.server
def test_request_queued_past_its_timeout_gets_504(tmp_path: Path, runtime_processes: list[RuntimeProcess]) -> None:
    bundle = make_slow_bundle(tmp_path / "slow")
    rp = start_runtime(
        bundle, tmp_path, config={"inference_in_thread": True, "max_batch_size": 1, "request_timeout_s": 0.02}
    )
    runtime_processes.append(rp)
    body = json.dumps({"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[1, 2, 3, 4]] * 600}})

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{rp.url}/invocations", content=body, headers={"content-type": "application/json"})
                    for _ in range(4)
                )
            )

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and statuses[-1] == 504
    late = next(r for r in responses if r.status_code == 504)
    assert late.json()["error_code"] == "DEADLINE_EXCEEDED"
    assert httpx.get(f"{rp.url}/ping", timeout=5).status_code == 200
    assert rp.terminate() == 0


@pytest.mark.parametrize("in_thread", [False, True])
def test_onnxruntime_failure_in_a_batch_fails_only_that_request(
    runtime_bundles: dict[str, Any], in_thread: bool
) -> None:
    app = _app(runtime_bundles["fragile"], max_batch_size=64, inference_in_thread=in_thread)

    async def burst() -> list[tuple[int, Any]]:
        return await asyncio.gather(*(_call(app, [[1.0, 2.0, 3.0, 4.0]] * n, list("abcd")) for n in (1, 3, 2, 6)))

    statuses = [status for status, _ in asyncio.run(burst())]
    assert statuses == [500, 200, 500, 200]
    app.batcher.close()


def test_before_ready_predictions_and_probes_answer_503(runtime_bundles: dict[str, Any]) -> None:
    bundle = runtime_bundles["iris"].path
    app = RuntimeApp(ServedModel(bundle, verify_bundle(bundle)), RuntimeConfig(), "test")  # not loaded yet

    async def get(path: str, method: str = "GET") -> int:
        scope = {"type": "http", "path": path, "method": method, "headers": [(b"content-type", b"application/json")]}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b'{"inputs": [[1, 2, 3, 4]]}', "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])

    async def probe() -> dict[str, int]:
        paths = ["/ping", "/health", "/v2/health/ready", "/v2/health/live", "/v2/models/iris", "/metrics"]
        statuses = {p: await get(p) for p in paths}
        statuses["/invocations"] = await get("/invocations", "POST")
        statuses["/v2/models/iris/infer"] = await get("/v2/models/iris/infer", "POST")
        return statuses

    assert asyncio.run(probe()) == {
        "/ping": 503,
        "/health": 503,
        "/v2/health/ready": 503,
        "/v2/health/live": 200,
        "/v2/models/iris": 503,
        "/metrics": 200,
        "/invocations": 503,
        "/v2/models/iris/infer": 503,
    }


# -- the same through the HTTP protocol's fast path (uvicorn's protocol on in-memory transports) --------------


class _Transport:
    def __init__(self) -> None:
        self.data = b""
        self.closing = False

    def write(self, data: bytes) -> None:
        self.data += data

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


def _through_protocol(app: RuntimeApp, bodies: list[bytes], path: bytes = b"/invocations") -> list[tuple[int, Any]]:
    """Each body on its own connection, all read in one loop iteration (as one epoll wake-up would deliver them)."""
    import uvicorn
    from modeldeck.core.runtime.http_protocol import OneWriteHttpToolsProtocol
    from uvicorn.server import ServerState

    config = uvicorn.Config(  # as server.py runs it (proxy_headers would wrap the app: then no fast path)
        app, http=OneWriteHttpToolsProtocol, lifespan="off", access_log=False, proxy_headers=False, log_level="warning"
    )
    config.load()
    state = ServerState()

    async def run() -> list[tuple[int, Any]]:
        loop = asyncio.get_running_loop()
        conns = []
        for body in bodies:
            protocol = OneWriteHttpToolsProtocol(config=config, server_state=state, app_state={}, _loop=loop)
            transport = _Transport()
            protocol.connection_made(transport)  # type: ignore[arg-type]
            conns.append((protocol, transport, body))
        for protocol, _, body in conns:
            protocol.data_received(
                b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (path, len(body), body)
            )
        for _ in range(100):
            if all(t.data for _, t, _ in conns):
                break
            await asyncio.sleep(0)
        assert not state.tasks, "a prediction went through ASGI"
        answers = []
        for _, transport, _ in conns:
            head, _, payload = transport.data.partition(b"\r\n\r\n")
            answers.append((int(head.split()[1]), json.loads(payload)))
        return answers

    return asyncio.run(run())


def test_predictions_read_together_on_several_connections_share_one_session_run(
    runtime_bundles: dict[str, Any],
) -> None:
    """The fast path answers a lone connection at once, but requests read in the same loop iteration on several
    connections must still be queued and run as one batch, each answer going back on its own connection."""
    bundle = runtime_bundles["iris"]
    app = _app(bundle.path, max_batch_size=64)
    slices = [bundle.X[i : i + 1 + i % 3].tolist() for i in range(0, 150, 19)]
    bodies = [json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}}).encode() for rows in slices]
    answers = _through_protocol(app, bodies)
    for (status, body), rows in zip(answers, slices, strict=True):
        assert status == 200
        assert body["predictions"] == bundle.model.predict(np.array(rows)).tolist()
    m = app.metrics
    assert sum(m.batch_requests.counts) == 1 and m.batch_requests.total == len(slices)
    assert m.in_flight == 0 and m.requests[("/invocations", 200)] == len(slices)


def test_fast_path_failures_answer_like_asgi(runtime_bundles: dict[str, Any]) -> None:
    """onnxruntime failing for one request of a batch: 500 for it alone; a bad body: 400; v2 too."""
    app = _app(runtime_bundles["fragile"], max_batch_size=64)
    bodies = [
        json.dumps({"dataframe_split": {"columns": list("abcd"), "data": [[1.0, 2.0, 3.0, 4.0]] * n}}).encode()
        for n in (1, 3, 2, 6)
    ] + [b"{not json"]
    statuses = [status for status, _ in _through_protocol(app, bodies)]
    assert statuses == [500, 200, 500, 200, 400]
    assert app.metrics.inference_errors == 2 and app.metrics.in_flight == 0
    v2 = json.dumps({"inputs": [{"name": "X", "shape": [3, 4], "datatype": "FP32", "data": [1.0] * 12}]}).encode()
    [(status, body)] = _through_protocol(app, [v2], b"/v2/models/fragile/infer")
    assert status == 200 and body["model_name"] == "fragile"


def test_fast_path_answers_503_before_the_model_is_ready(runtime_bundles: dict[str, Any]) -> None:
    bundle = runtime_bundles["iris"].path
    app = RuntimeApp(ServedModel(bundle, verify_bundle(bundle)), RuntimeConfig(), "test")  # not loaded yet
    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[1, 2, 3, 4]]}}).encode()
    [(status, answer)] = _through_protocol(app, [body])
    assert status == 503 and answer["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_a_lone_client_runs_inline_beside_idle_connections_and_concurrent_clients_still_share_batches(
    runtime_bundles: dict[str, Any],
) -> None:
    """A scraper's or health checker's idle keep-alive must not push a lone client into the batch queue (answered
    inside the read, no loop iteration), and taking turns with other clients must still queue and coalesce: every
    wave of 8 connections read in one loop iteration is one ``session.run``, the first of each wave included, once
    the clients have taken turns."""
    import uvicorn
    from modeldeck.core.runtime.http_protocol import OneWriteHttpToolsProtocol
    from uvicorn.server import ServerState

    bundle = runtime_bundles["iris"]
    app = _app(bundle.path, max_batch_size=64)
    config = uvicorn.Config(
        app, http=OneWriteHttpToolsProtocol, lifespan="off", access_log=False, proxy_headers=False, log_level="warning"
    )
    config.load()
    state = ServerState()
    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": bundle.X[:1].tolist()}}).encode()
    request = b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    request %= (len(body), body)
    batches = app.metrics.batch_requests

    async def run() -> None:
        loop = asyncio.get_running_loop()
        conns = []
        for _ in range(9):  # the last one stays idle throughout
            protocol = OneWriteHttpToolsProtocol(config=config, server_state=state, app_state={}, _loop=loop)
            transport = _Transport()
            protocol.connection_made(transport)  # type: ignore[arg-type]
            conns.append((protocol, transport))

        async def wave(active: list[tuple[OneWriteHttpToolsProtocol, _Transport]]) -> list[bool]:
            """Send one request on each; which were answered inside their read."""
            inline = []
            for protocol, transport in active:
                transport.data = b""
                protocol.data_received(request)
                inline.append(bool(transport.data))
            for _ in range(100):
                if all(t.data for _, t in active):
                    break
                await asyncio.sleep(0)
            assert all(t.data.startswith(b"HTTP/1.1 200") for _, t in active)
            return inline

        assert await wave(conns[:1]) == [False]  # a connection's first request, others open: it may have company
        for _ in range(4):
            assert await wave(conns[:1]) == [True]
        # Others join: the lone client's first request cannot know (nobody else was active), theirs queue.
        runs = sum(batches.counts)
        assert await wave(conns[:8]) == [True] + [False] * 7
        assert sum(batches.counts) == runs + 2
        for _ in range(4):  # from then on each wave is one batch
            runs = sum(batches.counts)
            assert await wave(conns[:8]) == [False] * 8
            assert sum(batches.counts) == runs + 1
        # Back to one client: its first request follows the others' and queues; then it runs inline again.
        assert await wave(conns[:1]) == [False]
        for _ in range(3):
            assert await wave(conns[:1]) == [True]
        assert not state.tasks, "a prediction went through ASGI"

    asyncio.run(run())
    assert batches.total == 5 + 5 * 8 + 4 and app.metrics.in_flight == 0
