"""A local JSON-over-HTTP server for the stand-ins of outside services (Stripe, FCM).

``json_server(respond)`` serves POST and DELETE on 127.0.0.1 at a free port
in a thread until the block ends; ``respond(method, path, headers, body)``
returns the status and the JSON payload. Header names reach it lower-cased.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Respond = Callable[[str, str, Mapping[str, str], bytes], tuple[int, Any]]


@contextmanager
def json_server(respond: Respond, headers: Mapping[str, str] | None = None) -> Iterator[str]:
    """Yield the server's base URL (``http://127.0.0.1:PORT``); ``headers`` go on every reply."""
    extra = dict(headers or {})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self._answer("POST")

        def do_DELETE(self) -> None:
            self._answer("DELETE")

        def _answer(self, method: str) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, payload = respond(
                method, self.path, {k.lower(): v for k, v in self.headers.items()}, raw
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
