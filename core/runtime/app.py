"""The runtime's ASGI application: a small router, no web framework in the hot path.

Every response -- errors included -- is JSON in MLflow's shape
(``{"error_code": ..., "message": ...}``); nothing a client sends can raise out
of :meth:`RuntimeApp.__call__`, and an onnxruntime failure is a 500 for that one
request while the server keeps serving.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from modeldeck.core.runtime.batching import Batcher
from modeldeck.core.runtime.config import RuntimeConfig
from modeldeck.core.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from modeldeck.core.runtime.metrics import RuntimeMetrics
from modeldeck.core.runtime.model import InferenceError, RequestError, ServedModel
from modeldeck.core.runtime.openapi import openapi_document

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
_PING_BODY = b"\n"


class _ClientGone(Exception):
    """The client disconnected before its body arrived."""


def _error_body(message: str, code: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


# Writes one response for the protocol's fast path: (status, body, content type, extra headers).
Answer = Callable[[int, bytes, bytes, "list[tuple[bytes, bytes]] | tuple[()]"], None]


class HotRequest:
    """A prediction request the HTTP protocol serves without ASGI (see :meth:`RuntimeApp.hot_request`).

    It is also the batcher's reply for the request: the batch's delivery calls
    ``set_result``/``set_exception``, which format and write the response at once.
    """

    __slots__ = ("answer", "app", "extra", "finished", "route", "scope", "start")

    def __init__(self, app: RuntimeApp, route: str, scope: Scope, answer: Answer) -> None:
        self.app = app
        self.route = route
        self.scope = scope
        self.answer = answer
        self.start = time.perf_counter()
        self.extra: Any = None
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def set_result(self, outputs: Any) -> None:
        self.app._hot_outputs(self, outputs)

    def set_exception(self, exception: BaseException) -> None:
        self.app._hot_failed(self, exception)


class RuntimeApp:
    """ASGI app serving one :class:`ServedModel`.

    ``ready`` flips once the model is loaded and warmed up; before that the
    probes and prediction routes answer 503.
    """

    def __init__(self, model: ServedModel, config: RuntimeConfig, runtime_version: str) -> None:
        self.model = model
        self.config = config
        self.runtime_version = runtime_version
        self.ready = False
        # How many requests the server holds right now (set by the server; see _predict). None: unknown.
        self.pending_requests: Callable[[], int] | None = None
        # Fast-path predictions started so far: the protocol tells from it whether other connections are active.
        self.hot_started = 0
        m = model.manifest
        self.metrics = RuntimeMetrics(
            model_name=m.model_name,
            model_version=m.model_version,
            bundle_sha256=m.sha256,
            runtime_version=runtime_version,
            deployment=config.deployment_name,
        )
        self.batcher = Batcher(
            model.run_batch,
            max_batch_size=config.max_batch_size,
            max_wait_s=config.max_batch_wait_ms / 1000.0,
            timeout_s=config.request_timeout_s,
            in_thread=config.inference_in_thread,
            observe=self.metrics.observe_batch,
            run_one=model.run_one,
        )
        self._no_batching = config.max_batch_size == 1
        self._cors = set(config.cors_origins)
        self._cors_any = "*" in self._cors
        self._model_names = {m.model_name} | ({config.deployment_name} if config.deployment_name else set())
        self._version_body = json.dumps(
            {
                "runtime_version": runtime_version,
                "model_name": m.model_name,
                "model_version": m.model_version,
                "bundle_sha256": m.sha256,
                "deployment": config.deployment_name,
            }
        ).encode()
        self._v2_server = json.dumps({"name": "modeldeck", "version": runtime_version, "extensions": []}).encode()
        self._openapi = json.dumps(openapi_document(m, runtime_version)).encode()
        self._routes: dict[str, tuple[str, dict[str, Callable[..., Awaitable[tuple[int, bytes, bytes]]]]]] = {
            "/invocations": ("/invocations", {"POST": self._invocations}),
            "/ping": ("/ping", {"GET": self._ping}),
            "/health": ("/health", {"GET": self._ping}),
            "/version": ("/version", {"GET": self._version}),
            "/metrics": ("/metrics", {"GET": self._metrics}),
            "/openapi.json": ("/openapi.json", {"GET": self._openapi_json}),
            "/v2": ("/v2", {"GET": self._v2_metadata}),
            "/v2/health/live": ("/v2/health/live", {"GET": self._live}),
            "/v2/health/ready": ("/v2/health/ready", {"GET": self._ready}),
        }
        self._not_ready = _error_body("the model is still loading", "TEMPORARILY_UNAVAILABLE")
        # Response heads by (content type, body length): answers of one model mostly share both, so the common
        # response reuses one header list instead of formatting the length and building the list every time.
        self._heads: dict[tuple[bytes, int], list[tuple[bytes, bytes]]] = {}

    def mark_ready(self) -> None:
        self.ready = True
        self.metrics.ready = 1

    # -- ASGI --------------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        metrics = self.metrics
        metrics.in_flight += 1
        path: str = scope["path"]
        method: str = scope["method"]
        route_name = "other"
        headers: list[tuple[bytes, bytes]] = []
        try:
            entry = self._routes.get(path)
            if entry is None and path.startswith("/v2/models/"):
                entry = self._model_route(path)
            if entry is None:
                status, body, ctype = 404, _error_body(f"no route {path}", "ENDPOINT_NOT_FOUND"), JSON
            else:
                route_name, handlers = entry
                handler = handlers.get(method)
                if handler is not None:
                    status, body, ctype = await handler(scope, receive)
                elif method == "OPTIONS" and self._cors:
                    status, body, ctype, headers = self._preflight(scope, handlers)
                else:
                    allowed = ", ".join(handlers)
                    status, body, ctype = (
                        405,
                        _error_body(f"{method} is not allowed on {path}; use {allowed}", "METHOD_NOT_ALLOWED"),
                        JSON,
                    )
                    headers = [(b"allow", allowed.encode())]
        except RequestError as exc:
            status, body, ctype = exc.status, _error_body(exc.message, exc.error_code), JSON
        except _ClientGone:
            metrics.in_flight -= 1
            return
        except Exception:  # a bug: answer 500, keep serving, keep the traceback in the log
            log.exception("internal error on %s %s", method, path)
            status, body, ctype = 500, _error_body("internal error in the runtime", "INTERNAL_ERROR"), JSON
        if self._cors:
            headers = headers + self._cors_headers(scope)
        if headers:
            head = [(b"content-type", ctype), (b"content-length", b"%d" % len(body)), *headers]
        else:
            cached = self._heads.get((ctype, len(body)))
            if cached is None:
                if len(self._heads) >= 256:
                    self._heads.clear()
                cached = self._heads[(ctype, len(body))] = [
                    (b"content-type", ctype),
                    (b"content-length", b"%d" % len(body)),
                ]
            head = cached
        try:
            await send({"type": "http.response.start", "status": status, "headers": head})
            await send({"type": "http.response.body", "body": body})
        finally:
            metrics.in_flight -= 1
            metrics.observe_request(route_name, status, time.perf_counter() - start)

    def _model_route(self, path: str) -> tuple[str, dict[str, Any]] | None:
        parts = path[len("/v2/models/") :].split("/")
        name = parts[0]
        if name not in self._model_names:
            return ("/v2/models/{name}", {"GET": self._unknown_model, "POST": self._unknown_model})
        rest = parts[1:]
        if len(rest) >= 2 and rest[0] == "versions":
            if rest[1] != self.model.manifest.model_version:
                return ("/v2/models/{name}", {"GET": self._unknown_model, "POST": self._unknown_model})
            rest = rest[2:]
        if not rest or rest == [""]:
            return ("/v2/models/{name}", {"GET": self._v2_model_metadata})
        if rest == ["ready"]:
            return ("/v2/models/{name}/ready", {"GET": self._ready})
        if rest == ["infer"]:
            return ("/v2/models/{name}/infer", {"POST": self._v2_infer})
        return None

    # -- the protocol's fast path for predictions --------------------------------------------------------------

    def hot_request(self, scope: Scope, answer: Answer) -> HotRequest | None:
        """A :class:`HotRequest` if ``scope`` is a prediction (``POST /invocations`` or ``POST
        /v2/models/{name}/infer`` for this model), else ``None`` (the request goes through ASGI).

        The protocol calls this once the request head is parsed, hands over the complete body with
        :meth:`hot_body` (or :meth:`hot_abandon` if the client leaves first), and ``answer`` is called exactly
        once with the response. Behaviour, errors and metrics are those of the ASGI path; what is skipped is the
        ASGI machinery: a task, the receive/send coroutines and message dicts, the batcher's future.
        """
        if scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if path == "/invocations":
            route = "/invocations"
        elif path.startswith("/v2/models/"):
            entry = self._model_route(path)
            if entry is None or entry[0] != "/v2/models/{name}/infer":
                return None
            route = entry[0]
        else:
            return None
        self.metrics.in_flight += 1
        self.hot_started += 1
        return HotRequest(self, route, scope, answer)

    def hot_abandon(self, request: HotRequest) -> None:
        """The client disconnected before the body arrived: nothing is answered or counted (as with ASGI)."""
        if not request.finished:
            request.finished = True
            self.metrics.in_flight -= 1

    def hot_body(self, request: HotRequest, body: bytes, content_type: bytes | None, *, alone: bool = False) -> None:
        """Validate and run (now if ``alone``: no other connection has a prediction in flight or started one since
        this connection's last, else in the next batch); answers now or once the batch has run."""
        try:
            if len(body) > self.config.max_body_bytes:  # the protocol sends only declared sizes within the limit
                raise RequestError(
                    f"request body exceeds the limit of {self.config.max_body_bytes} bytes",
                    413,
                    "REQUEST_LIMIT_EXCEEDED",
                )
            if not self.ready:
                self._hot_answer(request, 503, self._not_ready)
                return
            ctype = content_type.decode("latin-1") if content_type is not None else None
            if request.route == "/invocations":
                item = self.model.parse_invocations(body, ctype)
            else:
                item, request.extra = self.model.parse_v2(body, ctype)
            # Run now only when no other request can join: a request that runs now is answered before the protocol
            # reads the other connections' requests of this loop iteration, so with several connections it is queued
            # and the batch is cut on the next iteration (after all of them were read).
            if self._no_batching or alone:
                result = self.batcher.run_now(item)
                if result is not None:
                    if isinstance(result, Exception):
                        self._hot_failed(request, result)
                    else:
                        self._hot_outputs(request, result)
                    return
            self.batcher.submit_to(item, request)
        except RequestError as exc:
            self._hot_answer(request, exc.status, _error_body(exc.message, exc.error_code))
        except Exception:  # a bug: answer 500, keep serving, keep the traceback in the log
            log.exception("internal error on POST %s", request.scope["path"])
            self._hot_answer(request, 500, _error_body("internal error in the runtime", "INTERNAL_ERROR"))

    def _hot_outputs(self, request: HotRequest, outputs: Any) -> None:
        try:
            if request.route == "/invocations":
                body = self.model.format_predictions(outputs)
            else:
                body = self.model.format_v2(outputs, request.extra)
        except Exception:
            log.exception("internal error on POST %s", request.scope["path"])
            self._hot_answer(request, 500, _error_body("internal error in the runtime", "INTERNAL_ERROR"))
            return
        self._hot_answer(request, 200, body)

    def _hot_failed(self, request: HotRequest, exc: BaseException) -> None:
        if isinstance(exc, InferenceError):
            self.metrics.inference_errors += 1
            self._hot_answer(request, 500, _error_body(exc.args[0], "INTERNAL_ERROR"))
        elif isinstance(exc, TimeoutError):
            message = f"the request waited longer than {self.config.request_timeout_s:g} s for the model"
            self._hot_answer(request, 504, _error_body(message, "DEADLINE_EXCEEDED"))
        else:
            log.error("internal error on POST %s", request.scope["path"], exc_info=exc)
            self._hot_answer(request, 500, _error_body("internal error in the runtime", "INTERNAL_ERROR"))

    def _hot_answer(self, request: HotRequest, status: int, body: bytes) -> None:
        if request.finished:
            return
        request.finished = True
        metrics = self.metrics
        try:
            request.answer(status, body, JSON, self._cors_headers(request.scope) if self._cors else ())
        except Exception:  # the protocol failed to write: the connection is gone or broken, the server goes on
            log.exception("cannot answer POST %s", request.scope["path"])
        finally:
            metrics.in_flight -= 1
            metrics.observe_request(request.route, status, time.perf_counter() - request.start)

    # -- body, CORS --------------------------------------------------------------------------------------------

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, str | None]:
        """The request body, refused with 413 as soon as it exceeds ``max_body_bytes`` (never buffered unbounded)."""
        limit = self.config.max_body_bytes
        content_type = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode("latin-1")
            elif key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise RequestError("invalid Content-Length header") from None
                if declared > limit:
                    raise RequestError(
                        f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                        413,
                        "REQUEST_LIMIT_EXCEEDED",
                    )
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > limit:
                raise RequestError(f"request body exceeds the limit of {limit} bytes", 413, "REQUEST_LIMIT_EXCEEDED")
            return body, content_type
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(f"request body exceeds the limit of {limit} bytes", 413, "REQUEST_LIMIT_EXCEEDED")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks), content_type

    def _origin(self, scope: Scope) -> bytes | None:
        for key, value in scope["headers"]:
            if key == b"origin":
                return value
        return None

    def _origin_allowed(self, origin: bytes | None) -> bool:
        return origin is not None and (self._cors_any or origin.decode("latin-1") in self._cors)

    def _cors_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        origin = self._origin(scope)
        if not self._origin_allowed(origin):
            return [(b"vary", b"Origin")]
        assert origin is not None
        return [(b"access-control-allow-origin", b"*" if self._cors_any else origin), (b"vary", b"Origin")]

    def _preflight(self, scope: Scope, handlers: dict[str, Any]) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        origin = self._origin(scope)
        if not self._origin_allowed(origin):
            return 403, _error_body("CORS origin not allowed", "PERMISSION_DENIED"), JSON, []
        requested = b"content-type"
        for key, value in scope["headers"]:
            if key == b"access-control-request-headers":
                requested = value
        headers = [
            (b"access-control-allow-methods", ", ".join([*handlers, "OPTIONS"]).encode()),
            (b"access-control-allow-headers", requested),
            (b"access-control-max-age", b"600"),
        ]
        return 204, b"", JSON, headers

    # -- handlers ----------------------------------------------------------------------------------------------

    async def _predict(self, item: Any) -> list[Any]:
        """Queue for the batcher and wait; the batcher answers 504 for requests queued past ``request_timeout_s``."""
        try:
            pending = self.pending_requests
            if self._no_batching or (pending is not None and pending() <= 1):  # nothing to batch with
                result = self.batcher.run_now(item)
                if result is not None:
                    if isinstance(result, Exception):
                        raise result
                    return result  # type: ignore[no-any-return]
            return await self.batcher.submit(item)  # type: ignore[no-any-return]
        except InferenceError as exc:
            self.metrics.inference_errors += 1
            raise RequestError(exc.args[0], 500, "INTERNAL_ERROR") from None
        except TimeoutError:
            raise RequestError(
                f"the request waited longer than {self.config.request_timeout_s:g} s for the model",
                504,
                "DEADLINE_EXCEEDED",
            ) from None

    async def _invocations(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        body, content_type = await self._read_body(scope, receive)
        if not self.ready:
            return 503, self._not_ready, JSON
        item = self.model.parse_invocations(body, content_type)
        outputs = await self._predict(item)
        return 200, self.model.format_predictions(outputs), JSON

    async def _v2_infer(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        body, content_type = await self._read_body(scope, receive)
        if not self.ready:
            return 503, self._not_ready, JSON
        item, extra = self.model.parse_v2(body, content_type)
        outputs = await self._predict(item)
        return 200, self.model.format_v2(outputs, extra), JSON

    async def _ping(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        return (200, _PING_BODY, JSON) if self.ready else (503, self._not_ready, JSON)

    async def _ready(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        return (200, b'{"ready": true}', JSON) if self.ready else (503, self._not_ready, JSON)

    async def _live(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        return 200, b'{"live": true}', JSON

    async def _version(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        return 200, self._version_body, JSON

    async def _metrics(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        return 200, self.metrics.render(), METRICS_CONTENT_TYPE.encode()

    async def _openapi_json(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        return 200, self._openapi, JSON

    async def _v2_metadata(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        return 200, self._v2_server, JSON

    async def _unknown_model(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        name = scope["path"][len("/v2/models/") :].split("/")[0]
        return (
            404,
            _error_body(
                f"no model {name!r} here; this runtime serves {self.model.manifest.model_name!r}",
                "RESOURCE_DOES_NOT_EXIST",
            ),
            JSON,
        )

    async def _v2_model_metadata(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        if not self.ready:
            return 503, self._not_ready, JSON
        m = self.model.manifest
        meta = {
            "name": m.model_name,
            "versions": [m.model_version],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in self.model.inputs_meta
            ],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in self.model.outputs_meta
            ],
            "parameters": {
                "bundle_sha256": m.sha256,
                "signature_inputs": [{"name": c.name, "type": c.type, "optional": c.optional} for c in m.inputs],
            },
        }
        return 200, json.dumps(meta).encode(), JSON
