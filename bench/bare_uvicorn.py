"""The serving benchmark's same-run floor (issue 18, point 5): a bare uvicorn app with the model
in-process.

One process, one model, no framework: a raw ASGI callable that decodes the body, predicts and
encodes the answer with the same functions coldbrew's workers use (``coldbrew.worker.codecs``), so
the difference between the two is the serving architecture alone, not the parsing.

    python bench/bare_uvicorn.py MODEL.joblib PORT
"""

from __future__ import annotations

import sys
from typing import Any

import joblib
import uvicorn

from coldbrew.worker.codecs import decode, encode


def make_app(model: Any) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/ping":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        rows = decode(b"".join(chunks), headers.get(b"content-type", b"text/csv").decode())
        body, content_type = encode(model.predict(rows), headers.get(b"accept", b"text/csv").decode())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    model_path, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(
        make_app(joblib.load(model_path)), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
