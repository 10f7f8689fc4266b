"""What the machine is, what runs on it, and what each process costs (from /proc)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's packages when missing (needs root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("wrk is missing: install Debian's `wrk` package (apt-get install wrk)")
    print("installing wrk with apt-get", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "check": True}
    subprocess.run(["apt-get", "update", "-qq"], **quiet)  # type: ignore[call-overload]
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], **quiet)  # type: ignore[call-overload]
    return shutil.which("wrk") or sys.exit("wrk could not be installed")


def machine() -> dict[str, str]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])  # type: ignore[index]
    return {
        "cores": str(os.cpu_count()),
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "CPU model": model or platform.processor() or "unknown",
        "kernel": platform.release(),
    }


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(server_versions: Mapping[str, str], wrk: str) -> dict[str, str]:
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (wrk_version.stdout + wrk_version.stderr).strip().splitlines()
    return {
        "Python": platform.python_version(),
        **server_versions,
        "gunicorn": _package("gunicorn"),
        "Celery": _package("celery"),
        "SQLAlchemy": _package("sqlalchemy"),
        "Flask": _package("flask"),
        "psycopg": _package("psycopg"),
        "wrk": first[0].split(" [")[0] if first else "unknown",
    }


# --- processes --------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after its closing one.
    return text[text.rindex(")") + 2 :].split()


def parents() -> dict[int, int]:
    result = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            result[int(entry.name)] = int(fields[1])
    return result


def tree(root: int) -> list[int]:
    """The process and all its descendants."""
    parent_of = parents()
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parent_of.items() if parent in frontier]
        found += frontier
    return found


def children(root: int) -> list[int]:
    return [pid for pid, parent in parents().items() if parent == root]


def rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match[1]) / 1024 if match else 0.0


def named(prefix: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith(prefix):
                found.append(int(entry.name))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def machine_busy_seconds() -> float:
    """CPU seconds spent busy (not idle, not waiting for I/O), over all cores, since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICKS


@dataclass
class CpuShare:
    """Cores used per group of processes over a measured interval."""

    wall: float
    cores: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0

    def summary(self) -> str:
        ours = sum(self.cores.values())
        parts = [f"{name} {value:.2f}" for name, value in sorted(self.cores.items()) if value]
        parts.append(f"other processes {max(0.0, self.busy - ours):.2f}")
        return f"{self.busy:.2f} of {os.cpu_count()} cores busy: " + ", ".join(parts)


class CpuMeter:
    """CPU used by named groups of processes between start() and stop().

    The groups are listed again at the end: a process started meanwhile (a database backend
    for a new pooled connection, say) counts with all it used, since it began within.
    """

    def __init__(self, groups: Callable[[], Mapping[str, Iterable[int]]]) -> None:
        self._list = groups

    def start(self) -> None:
        self._groups = {name: set(pids) for name, pids in self._list().items()}
        self._before = {
            name: {pid: cpu_seconds([pid]) for pid in pids} for name, pids in self._groups.items()
        }
        self._machine = machine_busy_seconds()
        self._self = sum(os.times()[:2])
        self._wall = time.monotonic()

    def stop(self, extra: Mapping[str, float] | None = None) -> CpuShare:
        wall = max(1e-6, time.monotonic() - self._wall)
        share = CpuShare(wall=wall, busy=(machine_busy_seconds() - self._machine) / wall)
        for name, pids in self._list().items():
            before = self._before.get(name, {})
            # One that ended meanwhile reads as 0: what it used is lost, never negative.
            used = (max(0.0, cpu_seconds([pid]) - before.get(pid, 0.0)) for pid in set(pids))
            share.cores[name] = sum(used) / wall
        share.cores["bench"] = (sum(os.times()[:2]) - self._self) / wall
        for name, seconds in (extra or {}).items():
            share.cores[name] = share.cores.get(name, 0.0) + seconds / wall
        return share
