"""Sessions, generations and counters of the sandbox, behind one lock."""

from __future__ import annotations

import dataclasses
import enum
import hmac
import random
import secrets
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .knobs import SandboxKnobs, copy_knobs_into, updated_knobs
from .protocol import (
    FAIL_MARKER,
    TRANSIENT_ERRORS,
    EnvelopeFailure,
    check_generate_params,
    image_size,
    invalid_api_key,
    invalid_session,
    not_found,
    validation_error,
)

ITEMS_PER_GENERATION = 4
FIRST_ITEM_ID = 700_000_000
CALLBACK_OUTCOMES = ("sent", "failed", "dropped")


class Stage(enum.IntEnum):
    NEW = 0
    PREVIEW = 1
    FINAL = 2


class StageView(NamedTuple):
    status: str
    purchase_status: str
    shows_preview: bool
    shows_item_id: bool


# Keyed by (stage, ends in failure).
_STAGE_VIEWS: dict[tuple[Stage, bool], StageView] = {
    (Stage.NEW, False): StageView("new", "deferred", False, False),
    (Stage.PREVIEW, False): StageView("processing", "deferred", True, False),
    (Stage.FINAL, False): StageView("completed", "paid", True, True),
    (Stage.NEW, True): StageView("new", "deferred", False, False),
    (Stage.PREVIEW, True): StageView("processing", "deferred", False, False),
    (Stage.FINAL, True): StageView("failed", "deferred", False, False),
}


@dataclass(frozen=True)
class Item:
    uuid: str
    dp_item_id: int


@dataclass(frozen=True)
class Generation:
    """One generation; its stage is a function of time, so nothing mutates after creation."""

    uuid: str
    prompt: str
    aspect_ratio: str
    medium: str | None
    callback_url: str | None
    public_url: str
    created_at: float
    preview_at: float
    final_at: float
    items: tuple[Item, ...]

    @property
    def fails(self) -> bool:
        return FAIL_MARKER in self.prompt

    def stage_at(self, now: float) -> Stage:
        if now >= self.final_at:
            return Stage.FINAL
        if now >= self.preview_at:
            return Stage.PREVIEW
        return Stage.NEW

    def view(self, stage: Stage) -> StageView:
        return _STAGE_VIEWS[(stage, self.fails)]

    def preview_url(self, item: Item) -> str:
        return f"{self.public_url}/previews/{item.uuid}.png"

    def snapshot(self, stage: Stage) -> dict[str, Any]:
        """The `data` object the real API would answer at `stage`."""
        view = self.view(stage)
        items = [
            {
                "uuid": item.uuid,
                "dpItemId": item.dp_item_id if view.shows_item_id else None,
                "previewUrl": self.preview_url(item) if view.shows_preview else None,
            }
            for item in self.items
        ]
        return {
            "uuid": self.uuid,
            "prompt": self.prompt,
            "status": view.status,
            "purchaseStatus": view.purchase_status,
            "aspectRatio": self.aspect_ratio,
            "medium": self.medium,
            "items": items,
        }


@dataclass
class _Session:
    user: str
    expires_at: float


@dataclass
class _Counters:
    calls: Counter[str] = dataclasses.field(default_factory=Counter)
    generate_calls: int = 0
    callbacks: Counter[str] = dataclasses.field(default_factory=Counter)
    sessions_issued: int = 0
    expired_rejections: int = 0
    rate_limited: int = 0


class SandboxState:
    """All mutable sandbox state; every method takes the lock, so handlers and senders can share it.

    `clock` is monotonic and drives stages and session expiry; `wall_clock` only labels listings.
    """

    def __init__(
        self,
        knobs: SandboxKnobs,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.knobs = knobs
        self.clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._rng = random.Random(knobs.seed)
        self._sessions: dict[str, _Session] = {}
        self._generations: dict[str, Generation] = {}
        self._items: dict[str, tuple[Generation, Item]] = {}
        self._counters = _Counters()
        self._transient_turn = 0
        self._recent_calls: deque[float] = deque()
        # Never reset, so item ids stay unique for a client that keeps its database across resets.
        self._next_item_id = FIRST_ITEM_ID

    # Knobs and random choices

    def knobs_copy(self) -> SandboxKnobs:
        with self._lock:
            return dataclasses.replace(self.knobs)

    def update_knobs(self, changes: Mapping[str, object]) -> dict[str, Any]:
        """Apply JSON knob values in place (ValueError on unknown or invalid ones)."""
        with self._lock:
            copy_knobs_into(self.knobs, updated_knobs(self.knobs, changes))
            if "seed" in changes:
                self._rng.seed(self.knobs.seed)
            return self.knobs.as_dict()

    def chance(self, rate: float) -> bool:
        """True with probability `rate`, from the seeded generator."""
        with self._lock:
            return self._rng.random() < rate

    # API calls

    def record_call(self, command: str) -> None:
        with self._lock:
            self._counters.calls[command] += 1

    def transient_failure(self) -> EnvelopeFailure | None:
        """Per `failure_rate`, the next transient error (503 and 429 in turn), else None."""
        with self._lock:
            if not self._rng.random() < self.knobs.failure_rate:
                return None
            failure = TRANSIENT_ERRORS[self._transient_turn]
            self._transient_turn = (self._transient_turn + 1) % len(TRANSIENT_ERRORS)
            return EnvelopeFailure(failure)

    def over_rate(self) -> EnvelopeFailure | None:
        """Per `rate_limit`, a rate-limited answer for a call above that many in a second."""
        with self._lock:
            limit = self.knobs.rate_limit
            if not limit:
                return None
            now = self.clock()
            while self._recent_calls and self._recent_calls[0] <= now - 1.0:
                self._recent_calls.popleft()
            if len(self._recent_calls) >= limit:
                self._counters.rate_limited += 1
                return EnvelopeFailure("rate_limited")
            self._recent_calls.append(now)
            return None

    def check_api_key(self, api_key: str) -> None:
        with self._lock:
            expected = self.knobs.api_key
        if not api_key or (
            expected is not None and not hmac.compare_digest(api_key.encode(), expected.encode())
        ):
            raise invalid_api_key()

    def login(self, user: str, password: str, api_key: str) -> dict[str, Any]:
        """Open a session; answers the top-level fields of the login envelope."""
        if not user:
            raise validation_error("Parameter dp_login_user is required")
        if not password:
            raise validation_error("Parameter dp_login_password is required")
        if self.knobs_copy().refuse_login:
            raise EnvelopeFailure("login")
        session_id = secrets.token_hex(16)
        with self._lock:
            expires_at = self.clock() + self.knobs.session_ttl
            self._sessions[session_id] = _Session(user=user, expires_at=expires_at)
            self._counters.sessions_issued += 1
        return {"sessionid": session_id, "apiKey": api_key, "userid": zlib.crc32(user.encode())}

    def require_session(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise invalid_session()
            if self.clock() >= session.expires_at:
                self._counters.expired_rejections += 1
                raise invalid_session()

    def logout(self, session_id: str) -> None:
        self.require_session(session_id)
        with self._lock:
            self._sessions.pop(session_id, None)

    def create_generation(
        self,
        prompt: str,
        aspect_ratio: str,
        medium: str | None,
        callback_url: str | None,
        public_url: str,
    ) -> Generation:
        """Validate and store a generation; a refused call still counts as a generate call."""
        with self._lock:
            self._counters.generate_calls += 1
        check_generate_params(prompt, aspect_ratio, medium, callback_url)
        with self._lock:
            now = self.clock()
            preview_at = now + self.knobs.preview_delay
            final_at = max(now + self.knobs.final_delay, preview_at)
            items = []
            for _ in range(ITEMS_PER_GENERATION):
                items.append(Item(uuid=str(uuid.uuid4()), dp_item_id=self._next_item_id))
                self._next_item_id += 1
            generation = Generation(
                uuid=str(uuid.uuid4()),
                prompt=prompt,
                aspect_ratio=aspect_ratio,
                medium=medium,
                callback_url=callback_url,
                public_url=public_url,
                created_at=self._wall_clock(),
                preview_at=preview_at,
                final_at=final_at,
                items=tuple(items),
            )
            self._generations[generation.uuid] = generation
            for item in items:
                self._items[item.uuid] = (generation, item)
            return generation

    def generation(self, generation_uuid: str) -> Generation | None:
        with self._lock:
            return self._generations.get(generation_uuid)

    def current_snapshot(self, generation_uuid: str) -> dict[str, Any]:
        generation = self.generation(generation_uuid)
        if generation is None:
            raise not_found("Item does not exists")
        return generation.snapshot(generation.stage_at(self.clock()))

    def media_data(self, item_uuid: str) -> dict[str, Any]:
        with self._lock:
            found = self._items.get(item_uuid)
        if found is None:
            raise not_found("Item does not exists")
        generation, item = found
        if not generation.view(generation.stage_at(self.clock())).shows_item_id:
            raise validation_error("Media data not ready")
        width, height = image_size(generation.aspect_ratio)
        return {
            "id": item.dp_item_id,
            "width": width,
            "height": height,
            "type": "image",
            "aiGenerated": True,
            "title": generation.prompt,
        }

    def preview_state(self, item_uuid: str) -> str:
        """Whether the item's preview may be fetched: "available"; "missing" (unknown, or its
        URL not handed out yet); "expired" (older than preview_ttl)."""
        with self._lock:
            found = self._items.get(item_uuid)
            ttl = self.knobs.preview_ttl
        if found is None:
            return "missing"
        generation, _ = found
        now = self.clock()
        if not generation.view(generation.stage_at(now)).shows_preview:
            return "missing"
        if ttl and now >= generation.preview_at + ttl:
            return "expired"
        return "available"

    # Callbacks

    def record_callback(self, outcome: str) -> None:
        """Count one callback message as "sent", "failed" or "dropped"."""
        with self._lock:
            self._counters.callbacks[outcome] += 1

    # Control routes

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counters = self._counters
            return {
                "calls": dict(counters.calls),
                "generate_calls": counters.generate_calls,
                "generations": len(self._generations),
                "callbacks": {
                    outcome: counters.callbacks[outcome] for outcome in CALLBACK_OUTCOMES
                },
                "sessions": {
                    "issued": counters.sessions_issued,
                    "expired_rejections": counters.expired_rejections,
                },
                "rate_limited": counters.rate_limited,
            }

    def list_generations(self) -> list[dict[str, Any]]:
        with self._lock:
            generations = list(self._generations.values())
        now = self.clock()
        return [
            {
                "uuid": generation.uuid,
                "prompt": generation.prompt,
                "callback_url": generation.callback_url,
                "created_at": generation.created_at,
                "status": generation.view(generation.stage_at(now)).status,
            }
            for generation in generations
        ]

    def reset(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._generations.clear()
            self._items.clear()
            self._counters = _Counters()
            self._transient_turn = 0
            self._recent_calls.clear()
            self._rng.seed(self.knobs.seed)

    def expire_sessions(self) -> None:
        with self._lock:
            now = self.clock()
            for session in self._sessions.values():
                session.expires_at = min(session.expires_at, now)
