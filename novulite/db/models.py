"""SQLAlchemy models of the job store.

Every id is a 24-hex-digit string made in Python (see novulite.ids), so a batch of
rows can be inserted and enqueued without reading generated keys back.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from novulite.ids import new_id

# Named constraints let Alembic's batch mode recreate SQLite tables.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An instant stored as naive UTC and read back as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware UTC instant")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


def table(model: type[Base]) -> Table:
    """Return the Core table of a model, for hot paths that skip the ORM."""
    return cast(Table, model.__table__)


def _id_column() -> Mapped[str]:
    return mapped_column(String(24), primary_key=True, default=new_id)


class ServerSetting(Base):
    """A key-value row for process-wide secrets, such as the token signing key."""

    __tablename__ = "server_setting"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Environment(Base):
    __tablename__ = "environment"
    id: Mapped[str] = _id_column()
    name: Mapped[str] = mapped_column(String(100))
    # Public application identifier used by inbox clients.
    identifier: Mapped[str] = mapped_column(String(64), unique=True)
    # SHA-256 hex of the secret API key: the lookup for `Authorization: ApiKey`.
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_prefix: Mapped[str] = mapped_column(String(16))
    # NOTE: the key itself is kept because inbox HMAC checks (subscriberHash) need it as
    # the HMAC key, as in Novu. Protect the database file like the key.
    api_key: Mapped[str] = mapped_column(String(128))
    hmac_required: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class AdminUser(Base):
    __tablename__ = "admin_user"
    id: Mapped[str] = _id_column()
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]


class Workflow(Base):
    __tablename__ = "workflow"
    __table_args__ = (UniqueConstraint("environment_id", "workflow_id"),)
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    # The trigger identifier (`name` in a trigger request).
    workflow_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    severity: Mapped[str] = mapped_column(String(10), default="none")
    preferences: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    payload_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    validate_payload: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class Step(Base):
    __tablename__ = "step"
    __table_args__ = (UniqueConstraint("workflow_pk", "step_id"),)
    id: Mapped[str] = _id_column()
    workflow_pk: Mapped[str] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    step_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    control_values: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Subscriber(Base):
    __tablename__ = "subscriber"
    __table_args__ = (UniqueConstraint("environment_id", "subscriber_id"),)
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    subscriber_id: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(64))
    avatar: Mapped[str | None] = mapped_column(Text)
    locale: Mapped[str | None] = mapped_column(String(32))
    timezone: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    channels: Mapped[list[Any] | None] = mapped_column(JSON)
    is_online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_online_at: Mapped[dt.datetime | None]
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class Topic(Base):
    __tablename__ = "topic"
    __table_args__ = (UniqueConstraint("environment_id", "key"),)
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    key: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class TopicSubscription(Base):
    """A subscriber's membership of a topic; a trigger to the topic reaches it."""

    __tablename__ = "topic_subscription"
    __table_args__ = (
        UniqueConstraint("topic_pk", "identifier"),
        Index("ix_topic_subscription_subscriber_pk", "subscriber_pk"),
    )
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    topic_pk: Mapped[str] = mapped_column(ForeignKey("topic.id", ondelete="CASCADE"))
    subscriber_pk: Mapped[str] = mapped_column(ForeignKey("subscriber.id", ondelete="CASCADE"))
    # Unique within the topic; the default is "tk_<topicKey>:si_<subscriberId>", as inbox clients expect.
    identifier: Mapped[str] = mapped_column(String(600))
    name: Mapped[str | None] = mapped_column(String(255))
    context_keys: Mapped[list[Any]] = mapped_column(default=list)
    preferences: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class Preference(Base):
    """A subscriber's channel choices, for all workflows (scope "global") or one workflow."""

    __tablename__ = "preference"
    __table_args__ = (UniqueConstraint("subscriber_pk", "scope", "context_key"),)
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    subscriber_pk: Mapped[str] = mapped_column(ForeignKey("subscriber.id", ondelete="CASCADE"))
    workflow_pk: Mapped[str | None] = mapped_column(ForeignKey("workflow.id", ondelete="CASCADE"))
    # "global" or the workflow's pk: SQLite lets NULLs repeat in a unique constraint, so
    # the constraint uses this non-null column instead of workflow_pk.
    scope: Mapped[str] = mapped_column(String(24))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # channel type -> bool, only for channels the subscriber has set
    channels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    context_key: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class IdempotencyRecord(Base):
    """The stored outcome of a request sent with an Idempotency-Key header."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("environment_id", "key"),)
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of method, path and body, so a reused key with another request is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    # Null while the first request is still running.
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class TriggerEvent(Base):
    """An accepted trigger, written before the API acknowledges it."""

    __tablename__ = "trigger_event"
    __table_args__ = (
        UniqueConstraint("environment_id", "transaction_id"),
        Index("ix_trigger_event_status_created_at", "status", "created_at"),
    )
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    transaction_id: Mapped[str] = mapped_column(String(255))
    workflow_pk: Mapped[str] = mapped_column(ForeignKey("workflow.id"))
    # The request's `to`, `payload`, `overrides`, `actor` and `context`, as sent.
    recipients: Mapped[list[Any]] = mapped_column(JSON)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    overrides: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actor: Mapped[Any | None] = mapped_column(JSON)
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # received -> processed, or failed after MAX_TRIGGER_ATTEMPTS failed attempts, or canceled by request
    status: Mapped[str] = mapped_column(String(16), default="received")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # After a failed attempt, the reconciler leaves the trigger alone until then.
    retry_after: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # "single" for POST /v1/events/trigger and bulk entries, "broadcast" for every subscriber.
    kind: Mapped[str] = mapped_column(String(16), default="single", server_default="single")
    # How far a paged fan-out (topics, broadcast) got, so a restart resumes there.
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]
    processed_at: Mapped[dt.datetime | None]


class Notification(Base):
    """One workflow run for one subscriber."""

    __tablename__ = "notification"
    __table_args__ = (
        UniqueConstraint("trigger_id", "subscriber_pk"),
        Index("ix_notification_expansion_created_at", "expansion", "created_at"),
    )
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    trigger_id: Mapped[str] = mapped_column(ForeignKey("trigger_event.id"))
    workflow_pk: Mapped[str] = mapped_column(ForeignKey("workflow.id"))
    subscriber_pk: Mapped[str] = mapped_column(ForeignKey("subscriber.id"))
    transaction_id: Mapped[str] = mapped_column(String(255), index=True)
    context_keys: Mapped[list[Any]] = mapped_column(default=list)
    # Keys of the topics through which the subscriber was reached, empty for direct recipients.
    topics: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    # pending until process-subscriber has created the job rows, then done; canceled by request before that.
    expansion: Mapped[str] = mapped_column(String(10), default="pending")
    created_at: Mapped[dt.datetime]


class Job(Base):
    """One step of a notification; the rows of one notification form a chain by parent_id."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_status_run_at", "status", "run_at"),)
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    notification_id: Mapped[str] = mapped_column(ForeignKey("notification.id"), index=True)
    subscriber_pk: Mapped[str] = mapped_column(ForeignKey("subscriber.id"))
    transaction_id: Mapped[str] = mapped_column(String(255), index=True)
    step_pk: Mapped[str | None] = mapped_column(ForeignKey("step.id", ondelete="SET NULL"))
    step_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20))
    position: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(String(24), index=True)
    # A copy of the step as it was when the job was created: stepId, name, type, controlValues.
    step: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # pending, queued, delayed, running, completed, failed, canceled, merged, skipped
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_at: Mapped[dt.datetime | None]
    lease_until: Mapped[dt.datetime | None]
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The digest this job opened or joined; set on digest steps only.
    digest_id: Mapped[str | None] = mapped_column(String(24), index=True)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class Integration(Base):
    """A provider configuration of one environment for one channel, as Novu's integrations are."""

    __tablename__ = "integration"
    __table_args__ = (
        UniqueConstraint("environment_id", "identifier"),
        Index("ix_integration_environment_id_channel", "environment_id", "channel"),
    )
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    # Novu's providerId, such as "smtp", "twilio" or "slack".
    provider_id: Mapped[str] = mapped_column(String(100))
    # email, sms, chat, push or in_app
    channel: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(255))
    identifier: Mapped[str] = mapped_column(String(255))
    # Provider settings, secrets included; API responses mask the secret ones.
    credentials: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The integration a channel step uses when it names none; at most one per channel is primary.
    primary: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class Digest(Base):
    """One digest window: the job that owns it, and the jobs merged into it, share `id` as digest_id.

    At most one digest per (workflow, subscriber, step, key value) is open at a time. The
    partial unique index makes opening one atomic: a second concurrent opener conflicts
    and joins the open digest instead.
    """

    __tablename__ = "digest"
    __table_args__ = (
        Index(
            "uq_digest_open",
            "workflow_pk",
            "subscriber_pk",
            "step_id",
            "key_value",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_digest_lookup", "workflow_pk", "subscriber_pk", "step_id", "key_value", "last_event_at"),
    )
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    workflow_pk: Mapped[str] = mapped_column(String(24))
    subscriber_pk: Mapped[str] = mapped_column(String(24))
    step_id: Mapped[str] = mapped_column(String(200))
    # The digestKey's value as a JSON string, or "" when the step has no key or the payload lacks it.
    key_value: Mapped[str] = mapped_column(String(1000), default="")
    # open: collecting events. sent: its owner ran. sent_at_once: a look-back window found no
    # recent event, so the event went out without waiting. canceled: every event was canceled.
    status: Mapped[str] = mapped_column(String(12), default="open")
    owner_job_id: Mapped[str] = mapped_column(String(24))
    due_at: Mapped[dt.datetime | None]
    last_event_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class Message(Base):
    """The output of a channel step; at most one per job, so a re-run cannot duplicate it."""

    __tablename__ = "message"
    __table_args__ = (Index("ix_message_inbox", "subscriber_pk", "context_key", "channel", "id"),)
    id: Mapped[str] = _id_column()
    environment_id: Mapped[str] = mapped_column(ForeignKey("environment.id"))
    notification_id: Mapped[str] = mapped_column(ForeignKey("notification.id"))
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id"), unique=True)
    subscriber_pk: Mapped[str] = mapped_column(ForeignKey("subscriber.id"))
    workflow_pk: Mapped[str] = mapped_column(ForeignKey("workflow.id"))
    transaction_id: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(10))
    subject: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    avatar: Mapped[str | None] = mapped_column(Text)
    cta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    severity: Mapped[str] = mapped_column(String(10), default="none")
    # Sorted context keys joined by "," so an exact, order-free set match is one equality.
    context_key: Mapped[str] = mapped_column(String(1000), default="")
    read: Mapped[bool] = mapped_column(Boolean, default=False)
    seen: Mapped[bool] = mapped_column(Boolean, default=False)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    read_at: Mapped[dt.datetime | None]
    seen_at: Mapped[dt.datetime | None]
    archived_at: Mapped[dt.datetime | None]
    snoozed_until: Mapped[dt.datetime | None]
    # sent, error or warning
    status: Mapped[str] = mapped_column(String(10), default="sent")
    # The integration's provider for channels that deliver through one; None for in_app.
    provider_id: Mapped[str | None] = mapped_column(String(100))
    # Why the delivery failed, as the job's error records it, when status is error.
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class ExecutionDetail(Base):
    """An append-only log line about one job."""

    __tablename__ = "execution_detail"
    id: Mapped[str] = _id_column()
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id"), index=True)
    notification_id: Mapped[str] = mapped_column(ForeignKey("notification.id"))
    # Success, Warning, Failed, Pending or Queued
    status: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20), default="Internal")
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]
