"""One client for the Depositphotos API.

The upstream answers HTTP 200 for failures too; the envelope's `type` says what happened.
Errors are a small hierarchy whose class tells the caller what it may safely do next:

    UpstreamError
    ├── AuthenticationError   session or key refused (the client logs in again once)
    ├── ValidationError       the request was rejected: never retry it
    ├── TransientError        nothing was done upstream: retrying cannot pay twice
    │   ├── RateLimited
    │   ├── ServerError
    │   └── ConnectionFailed  the request never left this machine
    └── OutcomeUnknown        the request was sent but no usable answer came back

Messages never contain the API key, the login, the session id or a callback token: requests
are POSTed as a form to the bare base URL, and transport exceptions are summarised, not echoed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import requests

from webhook_app import metrics
from webhook_app.redaction import mask_callback_paths, remember_secret

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """Base class; `kind` is what the job's last error records."""

    kind = "upstream_error"

    def __init__(
        self, message: str, *, code: int | None = None, exception: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exception = exception

    def as_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "code": self.code,
            "message": self.message,
            "exception": self.exception,
            "at": datetime.now(UTC).isoformat(),
        }


class AuthenticationError(UpstreamError):
    kind = "authentication"


class ValidationError(UpstreamError):
    kind = "validation"


class TransientError(UpstreamError):
    kind = "transient"


class RateLimited(TransientError):
    kind = "rate_limited"


class ServerError(TransientError):
    kind = "server_error"


class ConnectionFailed(TransientError):
    kind = "connection_failed"


class OutcomeUnknown(UpstreamError):
    kind = "outcome_unknown"


@dataclass(frozen=True)
class CachedSession:
    session_id: str
    obtained_at: float


class SessionStore(Protocol):
    """Where the login session lives so that every worker process shares one."""

    def load(self) -> CachedSession | None: ...

    def save(self, session: CachedSession) -> None: ...

    def discard(self, session_id: str) -> None: ...


class MemorySessionStore:
    """A per-process store, for tests and one-off scripts."""

    def __init__(self) -> None:
        self._session: CachedSession | None = None
        self._lock = threading.Lock()

    def load(self) -> CachedSession | None:
        return self._session

    def save(self, session: CachedSession) -> None:
        with self._lock:
            self._session = session

    def discard(self, session_id: str) -> None:
        with self._lock:
            if self._session and self._session.session_id == session_id:
                self._session = None


def _failure(error: Mapping[str, Any]) -> UpstreamError:
    code = error.get("errorcode")
    code = (
        int(code)
        if isinstance(code, int | str) and str(code).isascii() and str(code).isdigit()
        else None
    )
    message = str(error.get("errormsg") or "upstream reported a failure")[:500]
    exception = str(error.get("exception") or "") or None
    name = (exception or "").lower()
    cls: type[UpstreamError]
    if code in (401, 403) or "authentication" in name or "session" in name:
        cls = AuthenticationError
    elif code == 429 or "toomany" in name or "ratelimit" in name:
        cls = RateLimited
    elif code is not None and code >= 500:
        cls = ServerError
    elif (code is not None and 400 <= code < 500) or "validation" in name or "argument" in name:
        cls = ValidationError
    else:
        # A failure the upstream names but we do not know: nothing was done, so a bounded
        # retry is safe, and the code and message are kept for the operator.
        cls = ServerError
    return cls(message, code=code, exception=exception)


def unwrap(answer: Any) -> Mapping[str, Any]:
    """Return the body of a success envelope, or raise the error a failure envelope names."""
    if not isinstance(answer, Mapping):
        raise OutcomeUnknown("upstream answer is not a JSON object")
    kind = answer.get("type")
    if kind == "failure":
        error = answer.get("error")
        raise _failure(error if isinstance(error, Mapping) else {})
    if kind != "success":
        raise OutcomeUnknown(f"upstream answer has an unknown type: {str(kind)[:50]!r}")
    return answer


class DepositphotosClient:
    """Calls the API with a cached login session, a timeout on every call, typed errors."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        login_user: str,
        login_password: str,
        sessions: SessionStore,
        http: requests.Session | None = None,
        timeout: float = 30.0,
        session_max_age: float = 2.5 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = base_url.rstrip("/") + "/"
        self._api_key = api_key
        self._login_user = login_user
        self._login_password = login_password
        self._sessions = sessions
        self._http = http or requests.Session()
        self._timeout = (min(5.0, timeout), timeout)
        self._session_max_age = session_max_age
        self._clock = clock

    # --- commands -------------------------------------------------------------------------

    def login(self) -> str:
        """Open a new session and share it through the store."""
        answer = self._call(
            "login",
            {"dp_login_user": self._login_user, "dp_login_password": self._login_password},
        )
        session_id = answer.get("sessionid") or _data(answer).get("sessionid")
        if not isinstance(session_id, str) or not session_id:
            raise OutcomeUnknown("login answer has no sessionid")
        remember_secret(session_id)
        self._sessions.save(CachedSession(session_id, self._clock()))
        return session_id

    def generate(
        self,
        *,
        prompt: str,
        callback_url: str,
        aspect_ratio: str | None = None,
        medium: str | None = None,
    ) -> Mapping[str, Any]:
        params = {"dp_prompt": prompt, "dp_callback_url": callback_url}
        if aspect_ratio:
            params["dp_aspect_ratio"] = aspect_ratio
        if medium:
            params["dp_medium"] = medium
        return _data(self._call_with_session("imageGenerator.generate", params))

    def get(self, generation_uuid: str) -> Mapping[str, Any]:
        return _data(self._call_with_session("imageGenerator.get", {"dp_uuid": generation_uuid}))

    def get_media_data(self, item_uuid: str) -> Mapping[str, Any]:
        answer = self._call_with_session("imageGenerator.getMediaData", {"dp_uuid": item_uuid})
        return _data(answer)

    # --- plumbing -------------------------------------------------------------------------

    def _session_id(self) -> str:
        cached = self._sessions.load()
        if cached and self._clock() - cached.obtained_at < self._session_max_age:
            remember_secret(cached.session_id)
            return cached.session_id
        return self.login()

    def _call_with_session(self, command: str, params: Mapping[str, str]) -> Mapping[str, Any]:
        session_id = self._session_id()
        try:
            return self._call(command, {**params, "dp_session_id": session_id})
        except AuthenticationError:
            # An authentication failure means the command was not carried out, so it is safe
            # to log in again and repeat it once. A second refusal is final.
            self._sessions.discard(session_id)
            return self._call(command, {**params, "dp_session_id": self.login()})

    def _call(self, command: str, params: Mapping[str, str]) -> Mapping[str, Any]:
        started, outcome = time.perf_counter(), "success"
        try:
            return self._send(command, params)
        except UpstreamError as exc:
            outcome = exc.kind
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.UPSTREAM_CALLS.labels(command=command, outcome=outcome).inc()
            metrics.UPSTREAM_SECONDS.labels(command=command).observe(elapsed)
            log.info(
                "upstream call",
                extra={
                    "command": command,
                    "outcome": outcome,
                    "duration_ms": round(elapsed * 1000),
                },
            )

    def _send(self, command: str, params: Mapping[str, str]) -> Mapping[str, Any]:
        form = {"dp_apikey": self._api_key, "dp_command": command, **params}
        try:
            response = self._http.post(self._url, data=form, timeout=self._timeout)
        except requests.exceptions.ConnectTimeout:
            raise ConnectionFailed(f"{command}: connection to the upstream timed out") from None
        except requests.exceptions.ConnectionError as exc:
            if _never_sent(exc):
                raise ConnectionFailed(f"{command}: could not connect to the upstream") from None
            raise OutcomeUnknown(f"{command}: connection lost before the answer") from None
        except requests.exceptions.Timeout:
            raise OutcomeUnknown(f"{command}: no answer within {self._timeout[1]:g}s") from None
        except requests.exceptions.RequestException as exc:
            raise OutcomeUnknown(f"{command}: {type(exc).__name__}") from None
        if response.status_code == 429:
            raise RateLimited(f"{command}: HTTP 429", code=429)
        if response.status_code == 503:
            raise ServerError(f"{command}: HTTP 503", code=503)
        if response.status_code != 200:
            # A gateway error may hide a request that was carried out.
            raise OutcomeUnknown(
                f"{command}: HTTP {response.status_code}", code=response.status_code
            )
        try:
            answer = response.json()
        except ValueError:
            raise OutcomeUnknown(f"{command}: answer is not JSON") from None
        try:
            return unwrap(answer)
        except UpstreamError as exc:
            # The upstream's own message may echo a parameter back; never repeat a secret.
            exc.message = self._redact(exc.message)
            exc.args = (exc.message,)
            raise

    def _redact(self, text: str) -> str:
        cached = self._sessions.load()
        for secret in (
            self._api_key,
            self._login_user,
            self._login_password,
            cached.session_id if cached else None,
        ):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "[redacted]")
        # The upstream may quote the callback URL back, and its token is a secret too.
        return mask_callback_paths(text)


def _never_sent(exc: requests.exceptions.ConnectionError) -> bool:
    # urllib3 raises NewConnectionError when the TCP connection could not be opened.
    text = repr(exc.args[0]) if exc.args else ""
    return "NewConnectionError" in text or "Failed to establish" in text


def _data(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    data = answer.get("data")
    return data if isinstance(data, Mapping) else answer
