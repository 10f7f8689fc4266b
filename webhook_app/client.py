"""A small client for the query API, used by the CLI and by scripts."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests

TERMINAL = ("completed", "failed", "timed_out")


class ApiError(Exception):
    """The API answered with an error; `status` and `body` say which."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {error.get('message') or body}")
        self.status = status
        self.body = body
        self.code = error.get("code")
        self.field = error.get("field")


class Client:
    def __init__(
        self, url: str, token: str, *, http: requests.Session | None = None, timeout: float = 30
    ) -> None:
        self._url = url.rstrip("/")
        self._http = http or requests.Session()
        self._http.headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, self._url + path, timeout=self._timeout, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def create_job(
        self,
        prompt: str,
        *,
        aspect_ratio: str | None = None,
        medium: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"prompt": prompt}
        for key, value in (
            ("aspect_ratio", aspect_ratio),
            ("medium", medium),
            ("metadata", metadata),
        ):
            if value is not None:
                payload[key] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._request(
            "POST", "/api/v1/jobs", json=payload, headers=headers
        )
        return result

    def get_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/v1/jobs/{job_id}")
        return result

    def list_jobs(self, **filters: Any) -> dict[str, Any]:
        params = {key: value for key, value in filters.items() if value is not None}
        result: dict[str, Any] = self._request("GET", "/api/v1/jobs", params=params)
        return result

    def iter_jobs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every job matching the filters, following cursors page by page."""
        cursor = None
        while True:
            page = self.list_jobs(**filters, cursor=cursor)
            yield from page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/api/v1/jobs/{job_id}/events")["events"])

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/api/v1/jobs/{job_id}/deliveries")["deliveries"])

    def act(self, job_id: str, action: str, **body: Any) -> dict[str, Any]:
        """An operator action: refresh, retry or cancel."""
        result: dict[str, Any] = self._request(
            "POST", f"/api/v1/jobs/{job_id}/{action}", json=body or None
        )
        return result

    def wait(self, job_id: str, *, timeout: float = 300, interval: float = 1.0) -> dict[str, Any]:
        """Poll until the job is terminal or the timeout passes; return its last state."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in TERMINAL or time.monotonic() >= deadline:
                return job
            time.sleep(interval)

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
