"""Tables: jobs, their items, the deliveries that reached us, and every transition."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from webhook_app.states import JobStatus

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every backend (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


def new_public_id() -> str:
    return str(uuid.uuid4())


_PUBLIC_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_public_id(value: str) -> bool:
    """True when `value` has the shape of a job's public id (checked before any query)."""
    return _PUBLIC_ID.fullmatch(value) is not None


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_public_id)
    kind: Mapped[str] = mapped_column(String(32), default="image_generation")
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    prompt: Mapped[str] = mapped_column(String(400))
    aspect_ratio: Mapped[str | None] = mapped_column(String(8))
    medium: Mapped[str | None] = mapped_column(String(16))
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    generation_uuid: Mapped[str | None] = mapped_column(String(64), unique=True)
    upstream_status: Mapped[str | None] = mapped_column(String(64))
    purchase_status: Mapped[str | None] = mapped_column(String(64))
    # Where the submission stands while status is `submitting`: in_flight, retry, unknown.
    submission: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    polls: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[dict[str, Any] | None]
    # Set on a job an operator created by retrying another.
    retry_of_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    deadline_at: Mapped[datetime]
    next_check_at: Mapped[datetime | None]
    # When its deliveries and events were pruned (RETENTION_DAYS after it ended).
    pruned_at: Mapped[datetime | None]
    # Bumped by every visible change to the job, its items or their archives: its ETag.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Where its last change stands in the deployment's order of changes (the changes feed);
    # assigned by the database, see webhook_app/changes.py.
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    items: Mapped[list[JobItem]] = relationship(
        back_populates="job", order_by="JobItem.position", lazy="selectin"
    )
    retry_of: Mapped[Job | None] = relationship(remote_side=[id])

    __table_args__ = (
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_next_check_at", "next_check_at"),
        Index("ix_jobs_finished_at", "finished_at"),
        Index("ix_jobs_change_seq_id", "change_seq", "id"),
    )


class JobItem(Base):
    __tablename__ = "job_items"
    # Room on each page for an item's next versions: none of its updates touches an indexed
    # column, so they stay on the page and leave the indexes alone (migration 0010).
    __table_args__ = {"postgresql_with": {"fillfactor": 70}}

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str] = mapped_column(String(64), unique=True)
    dp_item_id: Mapped[int | None] = mapped_column(BigInteger)
    preview_url: Mapped[str | None] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    media_type: Mapped[str | None] = mapped_column(String(32))

    job: Mapped[Job] = relationship(back_populates="items")
    archive: Mapped[ItemArchive | None] = relationship(
        back_populates="item", lazy="selectin", cascade="all, delete-orphan"
    )


class Delivery(Base):
    """A callback body exactly as it arrived; identical bodies are counted, not stored twice.

    It is kept `pending` by the receiver, and given its outcome when an applier merges it.
    """

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    fingerprint: Mapped[str] = mapped_column(String(64))
    received_count: Mapped[int] = mapped_column(Integer, default=1)
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    content_type: Mapped[str | None] = mapped_column(String(200))
    headers: Mapped[dict[str, Any] | None]
    body: Mapped[bytes] = mapped_column(LargeBinary)
    source_addr: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("job_id", "fingerprint"),
        # What appliers claim: small, since a delivery leaves it once applied.
        Index(
            "ix_deliveries_pending",
            "id",
            postgresql_where=text("outcome = 'pending'"),
            sqlite_where=text("outcome = 'pending'"),
        ),
    )


class Event(Base):
    """One transition of one job, and what caused it."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any] | None]

    __table_args__ = (Index("ix_events_job_id_id", "job_id", "id"),)


class UpstreamSession(Base):
    """The Depositphotos login session every worker shares."""

    __tablename__ = "upstream_sessions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Sealed (encrypted and encoded): room for an upstream session id of some 270 characters.
    session_id: Mapped[str] = mapped_column(String(400))
    obtained_at: Mapped[datetime]


class WorkerHeartbeat(Base):
    """What each running worker last said of itself, so /readyz can tell that work is done."""

    __tablename__ = "worker_heartbeats"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    broker: Mapped[str] = mapped_column(String(200))
    # ok, or broker_unreachable (with the reason in detail).
    state: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime]


class ApiToken(Base):
    """A bearer token for the query API, made by an operator; only its hash is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    # Generations this token may create a day (UTC); None: only the deployment's budget.
    daily_limit: Mapped[int | None] = mapped_column(Integer)


class ItemArchive(Base):
    """Our own copy of an item's image: pending until stored, then kept with its checksum."""

    __tablename__ = "item_archives"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(
        ForeignKey("job_items.id", ondelete="CASCADE"), unique=True
    )
    state: Mapped[str] = mapped_column(String(16), default="pending")
    storage_key: Mapped[str | None] = mapped_column(String(300))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(32))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    archived_at: Mapped[datetime | None]
    # When a pending archive is next tried; pushed ahead while a task holds it.
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)

    item: Mapped[JobItem] = relationship(back_populates="archive")


class Subscription(Base):
    """A URL told about finished jobs, signed with its own secret (Standard Webhooks)."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_public_id)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(200))
    statuses: Mapped[list[str] | None] = mapped_column(JSON)
    metadata_filter: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Notification(Base):
    """One message for one subscriber about one finished job; its body never changes."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)

    subscription: Mapped[Subscription] = relationship()
    job: Mapped[Job] = relationship()

    __table_args__ = (UniqueConstraint("subscription_id", "job_id", "event_type"),)


class NotificationAttempt(Base):
    """One POST of a notification and how it went."""

    __tablename__ = "notification_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_notification_attempts_notification_id_id", "notification_id", "id"),
    )


class UpstreamState(Base):
    """What every worker must know about the upstream: a pause, and the shared pace.

    One row per upstream. The pacing columns are seconds since the epoch, used only when the
    broker is not Redis (which then keeps them).
    """

    __tablename__ = "upstream_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Set while the API key or the login is refused: submissions wait until a probe succeeds.
    paused_since: Mapped[datetime | None]
    pause_reason: Mapped[dict[str, Any] | None]
    probe_at: Mapped[datetime | None]
    probe_failures: Mapped[int] = mapped_column(Integer, default=0)
    # Held by the one worker probing now, until this time.
    probe_lease_until: Mapped[datetime | None]
    # The next free slot in the shared pace (reserved slots are handed out in turn).
    next_call_at: Mapped[float] = mapped_column(Float, default=0.0)
    # Every worker waits until this time after the upstream said too fast.
    slow_until: Mapped[float] = mapped_column(Float, default=0.0)


class GenerationUsage(Base):
    """Generations counted against a daily budget: the deployment's, or one API token's."""

    __tablename__ = "generation_usage"

    budget: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    used: Mapped[int] = mapped_column(Integer, default=0)
