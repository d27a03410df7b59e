"""uvicorn's httptools protocol, writing each response's head and body in one write.

uvicorn writes the status line and headers when the app sends
``http.response.start`` and the body on ``http.response.body``: two writes, so
two syscalls and two TCP segments (and two wake-ups of the client) per response.
Here a per-request writer holds the head until the body's first write (or the
connection closes, or the response completes without a body write, e.g.
``HEAD``) and sends both together: half the write syscalls (strace). The server's
own CPU per request drops only 1-4 % (the writer is Python too); the client reads
one segment instead of two, which on a 2-core host leaves more CPU to the server.

Everything else -- parsing, keep-alive, pipelining, flow control, shutdown --
is uvicorn's own code, unchanged.

Predictions (``POST /invocations``, ``POST /v2/models/{name}/infer``) take a
fast path past ASGI: when such a request's head is parsed, the protocol asks the
app (:meth:`RuntimeApp.hot_request`) instead of starting a task; when the body is
complete (``on_message_complete``), it hands it to the app, which validates,
runs or queues it for the batcher and answers through :meth:`_answer` -- one
write of a cached head and the body, then uvicorn's own ``on_response``
(keep-alive timer, pipelined requests). No task, no receive/send coroutines, no
message dicts, no future: 27-28 % fewer instructions per request through this
protocol (callgrind). It is taken only when uvicorn's protocol and request cycle
have what it relies on (checked at import: ``FAST_PATH_SUPPORTED``; uvicorn is
pinned below 0.60), the app is the runtime itself (no middleware), there is no
access log, no ``Expect: 100-continue``, writing is not paused (a client that
does not read its answers gets ASGI's wait), and the body has a declared length
within both the app's limit and uvicorn's read buffer (64 KiB, so reading is
never paused). Anything else -- chunked or large bodies, other routes, ``HEAD``,
CORS preflights -- goes through ASGI exactly as before. Shutdown needs nothing
extra: uvicorn closes a connection after its in-flight response (the cycle's
``keep_alive`` is cleared, which :meth:`_answer` honours) and waits for the
connections to go.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import uvicorn.protocols.http.httptools_impl as _httptools_impl
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

# What the fast path relies on in uvicorn's protocol and request cycle; if any of it is missing (another uvicorn),
# every request goes through ASGI.
_CYCLE_FIELDS = frozenset(
    (
        "scope",
        "transport",
        "keep_alive",
        "disconnected",
        "body",
        "more_body",
        "waiting_for_100_continue",
        "response_started",
        "response_complete",
        "on_response",
    )
)
_STATUS_LINE: dict[int, bytes] | None = getattr(_httptools_impl, "STATUS_LINE", None)
FAST_PATH_SUPPORTED = (
    isinstance(_STATUS_LINE, dict)
    and set(RequestResponseCycle.__init__.__code__.co_names) >= _CYCLE_FIELDS
    and all(
        callable(getattr(HttpToolsProtocol, name, None))
        for name in ("_start_asgi_task", "on_message_complete", "connection_lost", "on_response_complete")
    )
)


class _ResponseWriter:
    """Stands in for the transport of one request/response cycle; holds the response head for the body."""

    __slots__ = ("_cycle", "_head_seen", "_held", "_on_response", "_transport")

    def __init__(self, transport: Any, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle: RequestResponseCycle | None = cycle
        self._held: bytes | None = None
        self._head_seen = False
        self._on_response: Any = cycle.on_response
        cycle.on_response = self._complete  # runs once the body is sent (also when it was empty)

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        elif not self._head_seen and self._cycle is not None and self._cycle.response_started:
            # the first write after the response started is the head (a "100 Continue" comes before the start)
            self._head_seen = True
            self._held = data
            return
        self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def _complete(self) -> None:
        """The response is out: flush, and drop the references back to the cycle and the protocol so that the
        finished cycle is freed by reference counting, not left for the garbage collector."""
        self.flush()
        on_response, self._on_response, self._cycle = self._on_response, None, None
        on_response()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...: the real transport's
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose responses leave in one write (head + body), predictions past ASGI."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hot = getattr(self.app, "hot_request", None)
        self._hot_request = hot if FAST_PATH_SUPPORTED and callable(hot) and not self.access_log else None
        self._hot_waiting: Any = None  # (cycle, HotRequest, content type, quiet) waiting for the rest of its body
        self._heads: dict[tuple[int, bytes, int, bool], bytes] = {}
        self._heads_for: Any = None  # the server's default headers (the date changes every second)
        # The app's count of fast-path predictions when this connection's last one started (None: not yet).
        self._last_started: int | None = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._hot_request is not None and app is self.app and self._start_hot(cycle):
            return
        cycle.transport = _ResponseWriter(cycle.transport, cycle)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)

    def _start_hot(self, cycle: RequestResponseCycle) -> bool:
        """Serve ``cycle`` on the fast path if it is a prediction the fast path can take; ``False``: use ASGI."""
        if cycle.waiting_for_100_continue or self.flow.write_paused:  # ASGI sends the interim 100 / waits to drain
            return False
        scope = cycle.scope
        if scope["method"] != "POST":
            return False
        length = -1
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if length != -1 or not value.isdigit():
                    return False
                length = int(value)
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                return False
        if length < 0 or length > HIGH_WATER_LIMIT or length > self.app.config.max_body_bytes:
            return False
        assert self._hot_request is not None
        request = self._hot_request(scope, partial(self._answer, cycle))
        if request is None:
            return False
        # Company: did another connection start a prediction since this one's last? Open connections alone say
        # nothing (a scraper's or a health checker's idle keep-alive), and the batcher being idle says too little:
        # at the start of an epoll wake-up the batch is empty while the other connections' requests are still
        # unread, and a request run now is answered before they are read, which ended batching at k=8 (an earlier
        # attempt). Concurrent clients take turns, so each one's previous request was followed by theirs. A
        # connection's first prediction has no previous one: alone only on the only connection (connections opened
        # together send together).
        started = self.app.hot_started
        last = self._last_started
        quiet = last == started - 1 if last is not None else len(self.connections) == 1
        self._last_started = started
        if cycle.more_body:
            self._hot_waiting = (cycle, request, content_type, quiet)
        else:
            # A pipelined request, started from the answer to the one before it, with its body already here: served
            # on the next loop iteration (as uvicorn's task would be), not from inside that answer -- a long
            # pipeline would otherwise recurse once per request.
            self.loop.call_soon(self._serve_pipelined, cycle, request, content_type, quiet)
        return True

    def _alone(self, quiet: bool) -> bool:
        """Run now: no other connection started a prediction since this one's last, none has one in flight."""
        return quiet and self.app.metrics.in_flight == 1

    def _serve_pipelined(
        self, cycle: RequestResponseCycle, request: Any, content_type: bytes | None, quiet: bool
    ) -> None:
        self.app.hot_body(request, bytes(cycle.body), content_type, alone=self._alone(quiet))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        waiting = self._hot_waiting
        if waiting is not None and waiting[0] is self.cycle:
            self._hot_waiting = None
            cycle, request, content_type, quiet = waiting
            self.app.hot_body(request, bytes(cycle.body), content_type, alone=self._alone(quiet))

    def connection_lost(self, exc: Exception | None) -> None:
        waiting = self._hot_waiting
        if waiting is not None:  # the client left before the body was complete
            self._hot_waiting = None
            self.app.hot_abandon(waiting[1])
        super().connection_lost(exc)

    def _answer(
        self,
        cycle: RequestResponseCycle,
        status: int,
        body: bytes,
        content_type: bytes,
        headers: list[tuple[bytes, bytes]] | tuple[()],
    ) -> None:
        """Write a fast-path response in one write and complete the cycle as uvicorn's ``send`` does."""
        if cycle.disconnected:
            return
        keep_alive = cycle.keep_alive
        if headers:
            head = self._head(status, content_type, len(body), keep_alive, headers)
        else:
            defaults = self.server_state.default_headers
            if defaults is not self._heads_for:
                self._heads.clear()
                self._heads_for = defaults
            key = (status, content_type, len(body), keep_alive)
            head = self._heads.get(key)  # type: ignore[assignment]
            if head is None:
                if len(self._heads) >= 64:
                    self._heads.clear()
                head = self._heads[key] = self._head(status, content_type, len(body), keep_alive, ())
        cycle.response_started = True
        cycle.transport.write(head + body)
        cycle.response_complete = True
        if not keep_alive:
            cycle.transport.close()
        cycle.on_response()

    def _head(
        self,
        status: int,
        content_type: bytes,
        length: int,
        keep_alive: bool,
        headers: list[tuple[bytes, bytes]] | tuple[()],
    ) -> bytes:
        assert _STATUS_LINE is not None
        parts = [_STATUS_LINE[status]]
        for name, value in (
            *self.server_state.default_headers,
            (b"content-type", content_type),
            (b"content-length", b"%d" % length),
            *headers,
        ):
            parts += [name, b": ", value, b"\r\n"]
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)
