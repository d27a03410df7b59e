"""The "bare server" anchors: uvicorn (httptools + uvloop) with an ASGI app that returns a constant.

Run: ``python benchmarks/bare_app.py PORT [MODEL.onnx]``. It reads the request body (as the
runtime must) and answers a fixed MLflow-shaped JSON, so the difference to the
runtime is exactly parsing, validation, inference, metrics and routing. With a
model it also makes one ``session.run`` per request on a fixed one-row feed (the
runtime's session settings): the floor for any ONNX server on this stack, which
separates the cost of inference itself from the runtime's own per-request work.
"""

from __future__ import annotations

import sys
from typing import Any

BODY = b'{"predictions": [0]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


def _inference(model: str) -> Any:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    feed = {inp.name: np.full((1, inp.shape[1]), 0.5, dtype=np.float32)}
    names = [o.name for o in session.get_outputs()]
    run = session._sess.run  # as the runtime calls it
    return lambda: run(names, feed, None)


INFER = _inference(sys.argv[2]) if __name__ == "__main__" and len(sys.argv) > 2 else None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    if INFER is not None:
        INFER()
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
