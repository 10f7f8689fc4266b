"""Callback delivery: a timer heap drained by one scheduler thread into a small sender pool."""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests

from .protocol import API_VERSION, timestamp
from .state import Generation, SandboxState, Stage

logger = logging.getLogger(__name__)

SEND_TIMEOUT = 5.0
FIRST_RETRY_DELAY = 0.5
USER_AGENT = "depositphotos-sandbox/1.0"

PostFunction = Callable[..., requests.Response]


def flatten_php(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested data into PHP-style form pairs: `data[items][0][uuid]=...`, null as ""."""
    children: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        children = value.items()
    elif isinstance(value, list | tuple):
        children = enumerate(value)
    else:
        if value is None:
            text = ""
        elif isinstance(value, bool):
            text = "1" if value else "0"
        else:
            text = str(value)
        return [(prefix, text)]
    pairs: list[tuple[str, str]] = []
    for key, child in children:
        pairs.extend(flatten_php(child, f"{prefix}[{key}]" if prefix else str(key)))
    return pairs


def _json_body(payload: dict[str, Any]) -> tuple[bytes, str]:
    return json.dumps(payload).encode(), "application/json"


def _form_body(payload: dict[str, Any]) -> tuple[bytes, str]:
    return urlencode(flatten_php(payload)).encode(), "application/x-www-form-urlencoded"


# callback_format -> (wrapped in the success envelope, body encoder)
_CALLBACK_ENCODINGS: dict[str, tuple[bool, Callable[[dict[str, Any]], tuple[bytes, str]]]] = {
    "json-envelope": (True, _json_body),
    "json-bare": (False, _json_body),
    "form-envelope": (True, _form_body),
    "form-bare": (False, _form_body),
}


def encode_callback(snapshot: dict[str, Any], callback_format: str) -> tuple[bytes, str]:
    """The body and content type of one callback message in `callback_format`."""
    enveloped, encode = _CALLBACK_ENCODINGS[callback_format]
    if enveloped:
        envelope = {"timestamp": timestamp(), "version": API_VERSION, "type": "success"}
        return encode({**envelope, "data": snapshot})
    return encode(snapshot)


@dataclass(order=True)
class _Job:
    due: float
    sequence: int
    generation_uuid: str = field(compare=False)
    # Sent in order by one sender, which is what makes `reverse` reliable.
    stages: tuple[Stage, ...] = field(compare=False)


class CallbackDispatcher:
    """Sends each generation's stage messages when due, applying the drop/duplicate/retry knobs."""

    def __init__(
        self, state: SandboxState, workers: int = 4, post: PostFunction = requests.post
    ) -> None:
        self._state = state
        self._post = post
        self._heap: list[_Job] = []
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-callback")

    def schedule(self, generation: Generation, reverse: bool) -> None:
        """Queue the preview and final messages; with `reverse` the preview follows the final."""
        if generation.callback_url is None:
            return
        plan: list[tuple[float, tuple[Stage, ...]]]
        if reverse:
            plan = [(generation.final_at, (Stage.FINAL, Stage.PREVIEW))]
        else:
            plan = [
                (generation.preview_at, (Stage.PREVIEW,)),
                (generation.final_at, (Stage.FINAL,)),
            ]
        with self._condition:
            if self.stopping.is_set():
                return
            for due, stages in plan:
                job = _Job(due, next(self._sequence), generation.uuid, stages)
                heapq.heappush(self._heap, job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sandbox-callback-scheduler", daemon=True
                )
                self._thread.start()
            self._condition.notify()

    def clear(self) -> None:
        """Forget every message not yet due."""
        with self._condition:
            self._heap.clear()
            self._condition.notify()

    def close(self) -> None:
        """Stop scheduling and sending; messages in flight finish their current attempt."""
        self.stopping.set()
        with self._condition:
            self._heap.clear()
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=SEND_TIMEOUT)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while (job := self._next_due_job()) is not None:
            try:
                self._pool.submit(self._deliver_job, job)
            except RuntimeError:  # the pool was shut down by close() meanwhile
                return

    def _next_due_job(self) -> _Job | None:
        """Block until a job is due; None once closing."""
        with self._condition:
            while not self.stopping.is_set():
                now = self._state.clock()
                if self._heap and self._heap[0].due <= now:
                    return heapq.heappop(self._heap)
                self._condition.wait(self._heap[0].due - now if self._heap else None)
            return None

    def _deliver_job(self, job: _Job) -> None:
        generation = self._state.generation(job.generation_uuid)
        if generation is None:  # reset since it was scheduled
            return
        for stage in job.stages:
            if self.stopping.is_set():
                return
            self._deliver_message(generation, stage)

    def _deliver_message(self, generation: Generation, stage: Stage) -> None:
        assert generation.callback_url is not None
        knobs = self._state.knobs_copy()
        if self._state.chance(knobs.drop_rate):
            self._state.record_callback("dropped")
            return
        body, content_type = encode_callback(generation.snapshot(stage), knobs.callback_format)
        for _ in range(knobs.duplicates):
            delivered = self._post_with_retries(
                generation.callback_url, body, content_type, knobs.callback_retries
            )
            self._state.record_callback("sent" if delivered else "failed")

    def _post_with_retries(self, url: str, body: bytes, content_type: str, retries: int) -> bool:
        headers = {"Content-Type": content_type, "User-Agent": USER_AGENT}
        for attempt in range(retries + 1):
            if attempt and self.stopping.wait(FIRST_RETRY_DELAY * 2 ** (attempt - 1)):
                return False
            try:
                response = self._post(
                    url, data=body, headers=headers, timeout=SEND_TIMEOUT, allow_redirects=False
                )
            except requests.RequestException as error:
                logger.info("callback to %s failed (attempt %d): %s", url, attempt + 1, error)
                continue
            if 200 <= response.status_code < 300:
                return True
            logger.info(
                "callback to %s answered %d (attempt %d)", url, response.status_code, attempt + 1
            )
        return False
