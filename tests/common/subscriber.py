"""A webhook subscriber on loopback: keeps what it is sent, answers the statuses it is given.

It plays whoever receives our POSTs: a notification subscriber, or a callback URL the sandbox
calls."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


class Subscriber:
    def __init__(self, statuses: tuple[int, ...] = (), path: str = "/hooks/images") -> None:
        self.received: list[Received] = []
        self.statuses = list(statuses)  # answered in turn, then 200
        self._lock = threading.Lock()
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with subscriber._lock:
                    subscriber.received.append(Received(dict(self.headers.items()), body))
                    status = subscriber.statuses.pop(0) if subscriber.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}{path}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float, settle: float = 0.0) -> list[Received]:
        """What was received once `count` POSTs came (or `timeout` ran out), and `settle`
        seconds more, so that extra ones would show up too."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(settle)
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
