"""The "bare server" anchor: uvicorn (httptools + uvloop) with an ASGI app that returns a constant.

Run: ``python benchmarks/bare_app.py PORT``. It reads the request body (as the
runtime must) and answers a fixed MLflow-shaped JSON, so the difference to the
runtime is exactly parsing, validation, inference, metrics and routing.
"""

from __future__ import annotations

import sys
from typing import Any

BODY = b'{"predictions": [0]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        server_header=False,
        log_level="warning",
    )
