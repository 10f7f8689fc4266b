"""HTTP load with wrk: bounded in time, replaying a prepared list of requests."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPLAY = Path(__file__).parent / "lua" / "replay.lua"
THREADS = 2
MAX_REQUESTS = 1_000_000  # per load, beside its duration


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    errors: int  # connect, read, write, timeout, and answers >= 400
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_seconds: float  # what wrk itself used

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def write_requests(path: Path, lines: Iterable[Sequence[str | None]]) -> Path:
    """Store (method, path, body[, header]) lines for replay.lua; bodies must be one-line JSON,
    a header is one `Name: value` sent with that request."""
    with path.open("w") as out:
        for method, target, body, *header in lines:
            fields = [method or "", target or "", body or "", *(h or "" for h in header)]
            out.write("\t".join(fields).rstrip("\t") + "\n")
    return path


def run_wrk(
    wrk: str,
    base_url: str,
    requests_file: Path,
    *,
    connections: int,
    seconds: float,
    authorization: str = "",
) -> Load:
    """Replay the file against base_url for `seconds`, then stop (wrk's own bound)."""
    if not base_url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError(f"load is sent to loopback addresses only, not {base_url}")
    threads = min(THREADS, connections)
    argv = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=10s",
        f"--script={REPLAY}",
        base_url,
        "--",
        str(requests_file),
        authorization,
        str(threads),
        str(MAX_REQUESTS // threads),
    ]
    reaped_before = _children_cpu()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    figures = _figures(output)
    return Load(
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        errors=sum(figures[k] for k in ("connect", "read", "write", "status", "timeout")),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        # Only wrk was reaped meanwhile, so the growth of our children's CPU time is its own.
        cpu_seconds=_children_cpu() - reaped_before,
    )


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def _figures(output: str) -> dict[str, int]:
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            return dict(json.loads(line[len("WRK_JSON ") :]))
    raise RuntimeError(f"wrk gave no figures:\n{output[-2000:]}")
