"""One client for the Depositphotos API.

The upstream answers HTTP 200 for failures too; the envelope's `type` says what happened.
Errors are a small hierarchy whose class tells the caller what it may safely do next:

    UpstreamError
    ├── AuthenticationError   the session is invalid or expired (the client logs in again once)
    ├── CredentialsRefused    the API key or the login is refused: submissions pause
    ├── ValidationError       the request was rejected: never retry it
    ├── NotFound              the generation or item named does not exist
    ├── TransientError        nothing was done upstream: retrying cannot pay twice
    │   ├── RateLimited
    │   ├── ServerError
    │   └── ConnectionFailed  the request never left this machine
    ├── Throttled             not sent: the deployment's shared rate has no room yet
    └── OutcomeUnknown        the request was sent but no usable answer came back

A failure envelope is classified by its `exception` name first (the names the official SDK
knows), by its `errorcode` second (403 alone cannot tell a session from a key or a value),
and by its text last; see `classify`.

Messages never contain the API key, the login, the session id or a callback token: requests
are POSTed as a form to the bare base URL, and transport exceptions are summarised, not echoed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import requests

from webhook_app.infra import metrics
from webhook_app.infra.redaction import mask_callback_paths, remember_secret

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


class CredentialsRefused(UpstreamError):
    kind = "credentials_refused"


class ValidationError(UpstreamError):
    kind = "validation"


class NotFound(UpstreamError):
    kind = "not_found"


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


class Throttled(UpstreamError):
    """Not sent: the shared rate allows the next call only in `retry_after` seconds."""

    kind = "throttled"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Pacer(Protocol):
    """The deployment's shared pace of upstream calls (see `webhook_app.services.pace`)."""

    def reserve(self, max_wait: float) -> float:
        """Seconds until the next free slot; that slot is reserved when within `max_wait`."""
        ...

    def slowed_for(self) -> float:
        """Seconds every worker must still wait after a rate-limited answer (0: none)."""
        ...

    def back_off(self, seconds: float) -> None:
        """The upstream said too fast: every worker waits this long."""
        ...


class Unpaced:
    """No shared limit (tests, one-off scripts)."""

    def reserve(self, max_wait: float) -> float:
        return 0.0

    def slowed_for(self) -> float:
        return 0.0

    def back_off(self, seconds: float) -> None:
        pass


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


# The names the API answers with (the official PHP SDK's list), then plain names of
# compatible servers, each with what it means for us. Names are also matched without their
# namespace and case, since the API itself spells the namespace both `EAPI` and `EApi`.
EXCEPTION_NAMES: dict[str, type[UpstreamError]] = {
    "EAPI\\EIllegalSession": AuthenticationError,
    "EIllegalSession": AuthenticationError,
    "EAPI\\EIllegalApiKey": CredentialsRefused,
    "EUser\\Authentication": CredentialsRefused,  # a refused login (errorcode 404)
    "EInternal\\InvalidParam": ValidationError,
    "EApi\\EInvalidParam": ValidationError,
    "InvalidParam": ValidationError,
    "EAPI\\EValueNotAllowed": ValidationError,  # errorcode 403, like a refused session
    "EAPI\\EApiTypeNotAllowed": ValidationError,
    "EAPI\\EUndefinedCommand": ValidationError,
    "NotFoundItemException": NotFound,
    "EApi\\EInternalError": ServerError,  # errorcode 0
    "ValidationError": ValidationError,
    "ServiceUnavailableError": ServerError,
    "TooManyRequestsError": RateLimited,
}
# What an errorcode says when the name is unknown or absent.
ERROR_CODES: dict[int, type[UpstreamError]] = {
    400: ValidationError,
    401: CredentialsRefused,
    403: AuthenticationError,  # most often a session; a new login tells the rest apart
    404: NotFound,
    422: ValidationError,
    429: RateLimited,
}
# Last, words in the name or the message (lower case).
TEXT_HINTS: tuple[tuple[str, type[UpstreamError]], ...] = (
    ("session", AuthenticationError),
    ("api key", CredentialsRefused),
    ("apikey", CredentialsRefused),
    ("toomany", RateLimited),
    ("too many", RateLimited),
    ("ratelimit", RateLimited),
    ("rate limit", RateLimited),
    ("validation", ValidationError),
    ("argument", ValidationError),
    ("notallowed", ValidationError),
    ("authentication", AuthenticationError),
)


def _bare(name: str) -> str:
    return name.rsplit("\\", 1)[-1].lower()


_BY_BARE_NAME = {_bare(name): cls for name, cls in EXCEPTION_NAMES.items()}


def classify(exception: str | None, code: int | None, message: str) -> type[UpstreamError]:
    """The error class a failure envelope stands for: by name, then code, then text.

    An unknown failure is a ServerError: the upstream refused the call, so nothing was done
    and a bounded retry is safe.
    """
    if exception:
        found = EXCEPTION_NAMES.get(exception) or _BY_BARE_NAME.get(_bare(exception))
        if found is not None:
            return found
    if code is not None:
        if code in ERROR_CODES:
            return ERROR_CODES[code]
        if code >= 500:
            return ServerError
        if 400 <= code < 500:
            return ValidationError
    text = f"{exception or ''} {message}".lower()
    for hint, cls in TEXT_HINTS:
        if hint in text:
            return cls
    return ServerError


def _failure(error: Mapping[str, Any]) -> UpstreamError:
    code = error.get("errorcode")
    code = (
        int(code)
        if isinstance(code, int | str) and str(code).isascii() and str(code).isdigit()
        else None
    )
    raw_message = str(error.get("errormsg") or "")
    message = (raw_message or "upstream reported a failure")[:500]
    exception = str(error.get("exception") or "") or None
    return classify(exception, code, raw_message)(message, code=code, exception=exception)


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
        pacer: Pacer | None = None,
        rate_limited_pause: float = 5.0,
        max_pace_wait: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
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
        self._pacer = pacer or Unpaced()
        self._rate_limited_pause = rate_limited_pause
        self._max_pace_wait = max_pace_wait
        self._sleep = sleep
        self._prepaid = False

    @contextmanager
    def prepaid(self) -> Iterator[None]:
        """The next call's room in the shared pace was taken already (before a claim)."""
        self._prepaid = True
        try:
            yield
        finally:
            self._prepaid = False

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

    def _pace(self, command: str) -> None:
        """Wait (sleeping, briefly) for room in the shared pace, or raise Throttled."""
        if self._prepaid:
            self._prepaid = False
            return
        wait = self._pacer.reserve(self._max_pace_wait)
        if wait > self._max_pace_wait:
            raise Throttled(f"{command}: the upstream rate is used up", retry_after=wait)
        if wait > 0:
            self._sleep(wait)

    def _call(self, command: str, params: Mapping[str, str]) -> Mapping[str, Any]:
        self._pace(command)
        started, outcome = time.perf_counter(), "success"
        try:
            return self._send(command, params)
        except UpstreamError as exc:
            outcome = exc.kind
            if isinstance(exc, RateLimited):
                # Every worker slows down, not only the one that was told.
                self._pacer.back_off(self._rate_limited_pause)
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
