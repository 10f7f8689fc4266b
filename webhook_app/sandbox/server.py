"""Running the sandbox: in a background thread for tests, or blocking for the CLI."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import create_sandbox_app
from .knobs import SandboxKnobs
from .runtime import EXTENSION_KEY, SandboxRuntime

logger = logging.getLogger(__name__)


class _QuietRequestHandler(WSGIRequestHandler):
    """Keeps test output free of one access-log line per request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class SandboxServer:
    """The sandbox on a threaded werkzeug server in a daemon thread; port 0 picks a free port."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, knobs: SandboxKnobs | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.knobs = knobs if knobs is not None else SandboxKnobs()
        self.app = create_sandbox_app(self.knobs)
        self.url = ""
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def runtime(self) -> SandboxRuntime:
        runtime: SandboxRuntime = self.app.extensions[EXTENSION_KEY]
        return runtime

    def start(self) -> SandboxServer:
        self._server = make_server(
            self.host, self.port, self.app, threaded=True, request_handler=_QuietRequestHandler
        )
        self.url = _base_url(self.host, self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sandbox-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        # Close first so requests held by hang_rate return and do not delay the shutdown.
        self.runtime.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve(host: str, port: int, knobs: SandboxKnobs) -> None:
    """Serve the sandbox until interrupted."""
    app = create_sandbox_app(knobs)
    server = make_server(host, port, app, threaded=True)
    logger.info(
        "Depositphotos sandbox on %s (preview %.1fs, final %.1fs, callbacks %s)",
        _base_url(host, server.server_port),
        knobs.preview_delay,
        knobs.final_delay,
        knobs.callback_format,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.extensions[EXTENSION_KEY].close()
        server.server_close()
