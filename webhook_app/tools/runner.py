"""`webhook-app run`: the whole system on one machine, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO

from webhook_app.infra.migrate import upgrade
from webhook_app.settings import Settings

STOP_GRACE = 20.0


@dataclass
class Part:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None


def _pump(name: str, stream: IO[bytes]) -> None:
    prefix = f"{name:>7} | ".encode()
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.buffer.flush()


def _banner(settings: Settings, port: int, environ: dict[str, str]) -> str:
    token = settings.api_tokens[0] if settings.is_development else "<one of API_TOKENS>"
    base = f"http://127.0.0.1:{port}"
    lines = [
        "",
        "webhook_app is starting",
        f"  dashboard     {base}/   (sign in with the API token)",
        f"  API           {base}/api/v1/jobs   (bearer token: {token})",
        f"  API document  {base}/api/v1/openapi.json",
        f"  health        {base}/healthz  {base}/readyz",
        f"  database      {settings.database_url.split('@')[-1]}",
        f"  broker        {settings.broker_url.split('@')[-1]}",
    ]
    if settings.uses_sandbox:
        lines += [
            "",
            "  *** NO DP_API_KEY IS SET: the built-in SANDBOX plays Depositphotos ***",
            f"  *** at {environ['DP_API_URL']}; no real images are generated or paid for. ***",
        ]
    if settings.dev_defaults_used:
        lines.append(f"  development defaults in use for: {', '.join(settings.dev_defaults_used)}")
    lines += [
        "",
        "Submit a job:",
        f"  curl -s -X POST {base}/api/v1/jobs -H 'Authorization: Bearer {token}' \\",
        "       -H 'Content-Type: application/json' -d '{\"prompt\": \"a lighthouse at dawn\"}'",
        "  webhook-app submit 'a lighthouse at dawn' --wait",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def run_everything(settings: Settings, *, port: int | None = None) -> int:
    """Start every part as a child process; stop them all when one stops or on a signal."""
    port = port or settings.port
    environ = dict(os.environ)
    environ.update(
        DATABASE_URL=settings.database_url,
        CELERY_BROKER_URL=settings.broker_url,
        PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    # One metrics directory for every part, so the web's /metrics counts the worker too.
    environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="webhook-app-metrics-"))
    if settings.uses_sandbox:
        sandbox_port = settings.sandbox_port
        environ["DP_API_URL"] = environ.get("DP_API_URL") or f"http://127.0.0.1:{sandbox_port}"
        environ["SANDBOX_PORT"] = str(sandbox_port)
        if "PUBLIC_BASE_URL" not in environ and settings.is_development:
            environ["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"

    upgrade(settings.database_url)
    me = [sys.executable, "-m", "webhook_app"]
    parts = [Part("sandbox", [*me, "sandbox"])] if settings.uses_sandbox else []
    parts += [
        Part("web", [*me, "serve", "--port", str(port)]),
        Part("worker", [*me, "worker"]),
        Part("beat", [*me, "beat"]),
    ]
    print(_banner(settings, port, environ), flush=True)

    stopping = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    for part in parts:
        # Own process group: the terminal's Ctrl-C reaches only us, and we stop the parts in
        # order (web first, so nothing new arrives, then worker and beat, the sandbox last).
        part.process = subprocess.Popen(
            part.argv,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert part.process.stdout is not None
        threading.Thread(target=_pump, args=(part.name, part.process.stdout), daemon=True).start()

    failed = None
    while not stopping.is_set():
        for part in parts:
            if part.process and part.process.poll() is not None:
                failed = part
                stopping.set()
        time.sleep(0.2)
    if failed:
        print(
            f"{failed.name} exited with {failed.process.returncode if failed.process else '?'}; "
            "stopping everything",
            flush=True,
        )
    else:
        print("stopping...", flush=True)
    _stop(sorted(parts, key=lambda p: p.name == "sandbox"))
    return 1 if failed else 0


def _stop(parts: list[Part]) -> None:
    for part in parts:
        if part.process and part.process.poll() is None:
            part.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for part in parts:
        if part.process is None:
            continue
        try:
            part.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(part.process.pid, signal.SIGKILL)
            part.process.wait()
