"""How soon a stored callback shows in the query API, measured while a callback load runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests

from bench.figures import percentile

# Between two probes, and between two reads of the probed job.
EVERY = 0.2
READ_EVERY = 0.02
GIVE_UP = 10.0


class Freshness:
    """A thread that sends one job's preview callback to the loaded web, then reads the job
    from another web process (so that the reads are not counted in the load's figures) until
    it shows the preview, over and over: each probe is the time from the callback's 2xx to
    that read."""

    def __init__(
        self,
        web: str,
        reader: str,
        auth: str,
        probes: list[tuple[str, str, str]],
        job_of: Callable[[str], str],
    ) -> None:
        self.web, self.reader, self.auth = web, reader, auth
        self.probes = probes  # (method, callback path, body) of fresh jobs' previews
        self.job_of = job_of
        self.seen_ms: list[float] = []
        self.unseen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="freshness", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        http = requests.Session()
        for _, path, body in self.probes:
            if self._stop.wait(EVERY):
                return
            answer = http.post(
                self.web + path, data=body, headers={"Content-Type": "application/json"}
            )
            stored = time.monotonic()
            if answer.status_code != 200:
                continue
            url = f"{self.reader}/api/v1/jobs/{self.job_of(path)}"
            headers = {"Authorization": self.auth}
            while time.monotonic() - stored < GIVE_UP:
                read = http.get(url, headers=headers)
                if read.status_code == 200 and read.json()["status"] == "processing":
                    self.seen_ms.append((time.monotonic() - stored) * 1000)
                    break
                headers["If-None-Match"] = read.headers.get("ETag", "")
                time.sleep(READ_EVERY)
            else:
                self.unseen += 1

    def p50(self) -> float:
        return percentile(self.seen_ms, 0.5)

    def max(self) -> float:
        return max(self.seen_ms) if self.seen_ms else float("nan")
