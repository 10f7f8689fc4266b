"""A small client for the query API, used by the CLI and by scripts.

```python
client = Client("http://127.0.0.1:8000", "dev-token")
job = client.create_job("a lighthouse at dawn")
job = client.wait(job["id"])            # long-polls GET /api/v1/jobs/<id>?wait=
for job in client.iter_jobs(status="failed"):
    client.retry(job["id"])
for job in client.watch(metadata={"team": "design"}):   # every change, as it happens
    print(job["id"], job["status"])
```

Errors of the API are raised as `ApiError` subclasses chosen by status (`InvalidRequest`,
`Unauthorized`, `Forbidden`, `NotFound`, `Conflict`, `OverBudget`, `ServiceUnavailable`); a
service that cannot be reached raises `requests.RequestException`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypedDict, cast

import requests

# The answers' types, declared with the server's serializer: re-exported as the client's own.
from webhook_app.shapes import Archive as Archive
from webhook_app.shapes import BatchJobs as BatchJobs
from webhook_app.shapes import ChangesPage as ChangesPage
from webhook_app.shapes import Delivery as Delivery
from webhook_app.shapes import Event as Event
from webhook_app.shapes import Item as Item
from webhook_app.shapes import Job as Job
from webhook_app.shapes import JobPage as JobPage
from webhook_app.shapes import Stats as Stats
from webhook_app.shapes import Status as Status

TERMINAL = ("completed", "failed", "timed_out")
# The longest long-poll asked for until the server names its own cap (X-Max-Wait): under
# the 30 s after which a PaaS router cuts a request.
MAX_WAIT = 25.0
KNOWN_JOBS = 10_000  # answers kept for conditional reads

Batch = BatchJobs  # the name this client first gave the batch answer


class Usage(TypedDict):
    day: str
    resets_at: str
    deployment: dict[str, Any]  # used, limit, remaining
    token: dict[str, Any] | None  # id, name, used, limit, remaining


class UpstreamState(TypedDict):
    paused: bool
    since: str | None
    reason: dict[str, Any] | None
    next_probe_at: str | None


class ApiError(Exception):
    """The API answered with an error; `status`, `code`, `field` and `body` say which."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {error.get('message') or body}")
        self.status = status
        self.body = body
        self.code = error.get("code")
        self.field = error.get("field")

    @staticmethod
    def of(status: int, body: Any) -> ApiError:
        kind = _BY_STATUS.get(status, ServiceUnavailable if status >= 500 else ApiError)
        return kind(status, body)


class InvalidRequest(ApiError):
    """400 or 422: `field` names the parameter or field at fault."""


class Unauthorized(ApiError):
    """401: no valid token."""


class Forbidden(ApiError):
    """403: the token may not do this."""


class NotFound(ApiError):
    """404: no such job (or route)."""


class Conflict(ApiError):
    """409: not possible in the job's state, or an Idempotency-Key reused."""


class OverBudget(ApiError):
    """429: a daily budget of generations is used up; `budget`, `resets_at`, `retry_after`."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status, body)
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.budget = error.get("budget")
        self.resets_at = error.get("resets_at")


class ServiceUnavailable(ApiError):
    """5xx: try again later."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    422: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: OverBudget,
}


class Client:
    def __init__(
        self, url: str, token: str, *, http: requests.Session | None = None, timeout: float = 30
    ) -> None:
        self._url = url.rstrip("/")
        self._http = http or requests.Session()
        # The server's cap on one long-poll, as its last answer named it.
        self.max_wait = MAX_WAIT
        self._http.headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        # The last answer for each job and its ETag: a conditional read reuses it on 304.
        self._known: dict[str, tuple[str, Job]] = {}
        self.cursor = "now"  # where `watch` stands in the changes feed: resume from here

    def _request(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        response = self._http.request(
            method, self._url + path, timeout=timeout or self._timeout, **kwargs
        )
        return self._answer(response)

    def create_job(
        self,
        prompt: str,
        *,
        aspect_ratio: str | None = None,
        medium: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        payload: dict[str, Any] = {"prompt": prompt}
        for key, value in (
            ("aspect_ratio", aspect_ratio),
            ("medium", medium),
            ("metadata", metadata),
        ):
            if value is not None:
                payload[key] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return cast(Job, self._request("POST", "/api/v1/jobs", json=payload, headers=headers))

    def get_job(self, job_id: str, *, wait: float | None = None) -> Job:
        """The job; with `wait`, once it is terminal or `wait` seconds pass (the server holds
        a request at most `max_wait` seconds).

        Asks with If-None-Match when it has read the job before, and reuses what it read when
        the server answers 304 (nothing changed): an unchanged job costs no body.
        """
        path = f"/api/v1/jobs/{job_id}"
        known = self._known.get(job_id)
        headers = {"If-None-Match": known[0]} if known else {}
        params = {"wait": f"{wait:g}"} if wait else None
        response = self._http.get(
            self._url + path,
            params=params,
            headers=headers,
            timeout=(wait or 0) + self._timeout,
        )
        if response.status_code == 304 and known:
            self._note_cap(response)
            return known[1]
        job = cast(Job, self._answer(response))
        if tag := response.headers.get("ETag"):
            self._known.pop(job_id, None)
            self._known[job_id] = (tag, job)
            if len(self._known) > KNOWN_JOBS:
                del self._known[next(iter(self._known))]  # the least recently read
        return job

    def _answer(self, response: requests.Response) -> Any:
        self._note_cap(response)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiError.of(response.status_code, body)
        return body

    def _note_cap(self, response: requests.Response) -> None:
        """Follow the server's cap on one long-poll, which every answer that may wait names."""
        cap = response.headers.get("X-Max-Wait")
        if cap:
            with contextlib.suppress(ValueError):
                self.max_wait = max(0.0, float(cap))

    def get_jobs(self, job_ids: list[str]) -> Batch:
        """Up to 200 jobs in one request: `jobs` found (in the order asked) and `missing` ids."""
        body = {"ids": job_ids}
        return cast(Batch, self._request("POST", "/api/v1/jobs/batch-get", json=body))

    def changes(
        self, after: str = "now", *, wait: float | None = None, **filters: Any
    ) -> ChangesPage:
        """One page of the changes feed after a cursor (`now`, `0`, or a `next_cursor`).

        Filters: `status`, `created_after`, `q`, `metadata` (a mapping), `limit`. With `wait`
        (at most 25 s) the server holds an empty page until a change comes.
        """
        params = {key: value for key, value in filters.items() if value is not None}
        if isinstance(params.get("metadata"), Mapping):
            params["metadata"] = json.dumps(params["metadata"])
        params["changed_after"] = after
        if wait:
            params["wait"] = f"{wait:g}"
        page = self._request(
            "GET", "/api/v1/jobs", params=params, timeout=(wait or 0) + self._timeout
        )
        return cast(ChangesPage, page)

    def watch(
        self,
        after: str = "now",
        *,
        wait: float | None = None,
        stop: Callable[[], bool] | None = None,
        **filters: Any,
    ) -> Iterator[Job]:
        """Every job as it changes, oldest change first, for as long as it is iterated.

        Long-polls the feed, so it makes one request per change batch or per `wait` seconds
        (by default, and at most, the server's cap `max_wait`).
        `stop`, asked between requests, ends it; `self.cursor` is where to resume (a page
        left half-read is given again).
        """
        self.cursor = after
        while stop is None or not stop():
            asked = self.max_wait if wait is None else min(wait, self.max_wait)
            page = self.changes(self.cursor, wait=asked, **filters)
            yield from page["jobs"]
            self.cursor = page["next_cursor"]

    def list_jobs(self, **filters: Any) -> JobPage:
        """One page: filters `status`, `created_after`, `q`, `limit`, `cursor`."""
        params = {key: value for key, value in filters.items() if value is not None}
        return cast(JobPage, self._request("GET", "/api/v1/jobs", params=params))

    def iter_jobs(self, **filters: Any) -> Iterator[Job]:
        """Every job matching the filters, following cursors page by page."""
        cursor = filters.pop("cursor", None)
        while True:
            page = self.list_jobs(**filters, cursor=cursor)
            yield from page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def stats(self, **filters: Any) -> Stats:
        """How many jobs are in each status (filters `created_after`, `q`)."""
        params = {key: value for key, value in filters.items() if value is not None}
        return cast(Stats, self._request("GET", "/api/v1/stats", params=params))

    def usage(self) -> Usage:
        """Generations counted today against the daily budgets, and their limits."""
        return cast(Usage, self._request("GET", "/api/v1/usage"))

    def upstream(self) -> UpstreamState:
        """Whether submissions are paused because the upstream refuses the credentials."""
        return cast(UpstreamState, self._request("GET", "/api/v1/upstream"))

    def events(self, job_id: str) -> list[Event]:
        return list(self._request("GET", f"/api/v1/jobs/{job_id}/events")["events"])

    def deliveries(self, job_id: str) -> list[Delivery]:
        return list(self._request("GET", f"/api/v1/jobs/{job_id}/deliveries")["deliveries"])

    def refresh(self, job_id: str) -> Job:
        """Ask the upstream about the job now; answers the job as it stands."""
        return cast(Job, self._request("POST", f"/api/v1/jobs/{job_id}/refresh"))

    def retry(self, job_id: str) -> Job:
        """Submit a failed or timed-out job again; answers the new, linked job."""
        return cast(Job, self._request("POST", f"/api/v1/jobs/{job_id}/retry"))

    def cancel(self, job_id: str, *, reason: str | None = None) -> Job:
        """Fail a job that the upstream has not accepted."""
        body = {"reason": reason} if reason else None
        return cast(Job, self._request("POST", f"/api/v1/jobs/{job_id}/cancel", json=body))

    def wait(self, job_id: str, *, timeout: float = 300, interval: float = 1.0) -> Job:
        """The job once it is terminal, or as it is when `timeout` seconds have passed.

        Each request is held by the server until the job settles (long-poll), so this makes
        a request a minute rather than one a second, each conditional (If-None-Match). When
        the server answers early without a final state (it was holding as many waiting
        requests as it allows), it pauses for `interval` before asking again.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            asked = max(0.0, min(remaining, self.max_wait))
            started = time.monotonic()
            job = self.get_job(job_id, wait=asked)
            if job["status"] in TERMINAL or time.monotonic() >= deadline:
                return job
            if time.monotonic() - started < asked - 1:
                time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    # --- subscriptions and notifications ---------------------------------------------------

    def create_subscription(
        self,
        url: str,
        *,
        statuses: list[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Subscribe a URL to finished jobs; the answer holds its secret, shown only here."""
        payload: dict[str, Any] = {"url": url}
        for key, value in (
            ("statuses", statuses),
            ("metadata", metadata),
            ("description", description),
        ):
            if value:
                payload[key] = value
        result: dict[str, Any] = self._request("POST", "/api/v1/subscriptions", json=payload)
        return result

    def subscriptions(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/v1/subscriptions")["subscriptions"])

    def delete_subscription(self, subscription_id: str) -> None:
        self._request("DELETE", f"/api/v1/subscriptions/{subscription_id}")

    def notifications(self, **filters: Any) -> list[dict[str, Any]]:
        params = {key: value for key, value in filters.items() if value is not None}
        return list(self._request("GET", "/api/v1/notifications", params=params)["notifications"])

    def notification(self, notification_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/notifications/{notification_id}")
        return result

    def replay_notification(self, notification_id: str) -> dict[str, Any]:
        path = f"/api/v1/notifications/{notification_id}/replay"
        result: dict[str, Any] = self._request("POST", path)
        return result
