"""GET /ws?token=<inbox session token>[&since=<message id>]: the inbox's realtime socket.

With `since`, the socket first replays the subscriber's in-app messages of the session's
context created after that message, oldest first, as `notification_received` frames, at most
MAX_REPLAY of them (the newest ones). A socket registers with the hub before it reads the
replay, and live frames wait until the replay is queued, so a message created meanwhile
arrives once: in the replay if the replay's snapshot saw it, live otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from novulite.api.auth import InboxSubject, inbox_subject_from_token
from novulite.db.models import Message, Subscriber, Workflow
from novulite.errors import (
    INVALID_INBOX_TOKEN,
    INVALID_QUERY,
    MESSAGE_NOT_FOUND,
    ApiError,
    FieldError,
    error_body,
)
from novulite.ids import ID_PATTERN
from novulite.messages import (
    inbox_scope,
    to_raw_entity,
    unread_by_severity_query,
    unread_counts,
    unread_frame,
    unseen_count_query,
    unseen_frame,
)
from novulite.realtime import WS_CLOSE_POLICY_VIOLATION, SocketConnection, encode
from novulite.services import Services

logger = logging.getLogger("novulite.ws")

# Messages a resuming socket gets at most; a client that missed more refetches the list.
MAX_REPLAY = 100


async def _opening_frames(
    services: Services, subject: InboxSubject, since: str | None
) -> list[dict[str, Any]]:
    """Return the replay after `since` (if given) and the current counts, read in one snapshot."""
    scope = inbox_scope(subject.subscriber_pk, subject.context)
    now = services.clock.now()
    frames: list[dict[str, Any]] = []
    async with AsyncSession(services.reader) as session, session.begin():
        if since is not None:
            if await session.scalar(select(Message.id).where(Message.id == since, *scope)) is None:
                raise _ResumeRejected(
                    404,
                    MESSAGE_NOT_FOUND.code,
                    f"since {since!r} is not a notification of this inbox session; "
                    "reconnect without since and refetch the notification list",
                )
            frames.extend(await _replay_frames(session, subject, since))
        rows = (
            await session.execute(unread_by_severity_query(subject.subscriber_pk, subject.context, now))
        ).all()
        unseen = await session.scalar(unseen_count_query(subject.subscriber_pk, subject.context, now))
    frames.append(unread_frame(unread_counts([(row[0], row[1]) for row in rows])))
    frames.append(unseen_frame(unseen or 0))
    return frames


async def _replay_frames(session: AsyncSession, subject: InboxSubject, since: str) -> list[dict[str, Any]]:
    scope = [*inbox_scope(subject.subscriber_pk, subject.context), Message.id > since]
    newest = list(
        await session.scalars(select(Message).where(*scope).order_by(Message.id.desc()).limit(MAX_REPLAY))
    )
    frames: list[dict[str, Any]] = []
    if len(newest) == MAX_REPLAY:
        total = await session.scalar(select(func.count()).where(*scope)) or 0
        if total > MAX_REPLAY:
            frames.append(
                {
                    "event": "replay_truncated",
                    "data": {"since": since, "skipped": total - MAX_REPLAY, "replayed": MAX_REPLAY},
                }
            )
    if not newest:
        return frames
    subscriber = await session.get_one(Subscriber, subject.subscriber_pk)
    workflow_pks = {message.workflow_pk for message in newest}
    workflows = {
        workflow.id: workflow
        for workflow in await session.scalars(select(Workflow).where(Workflow.id.in_(workflow_pks)))
    }
    for message in reversed(newest):
        entity = to_raw_entity(message, subscriber, workflows[message.workflow_pk])
        frames.append({"event": "notification_received", "data": {"message": entity}})
    return frames


class _ResumeRejected(Exception):
    def __init__(self, status: int, code: int, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []


def _since_of(socket: WebSocket[Any, Any, Any]) -> str | None:
    since = socket.query_params.get("since")
    if since is None:
        return None
    if not ID_PATTERN.fullmatch(since):
        raise _ResumeRejected(
            400,
            INVALID_QUERY.code,
            INVALID_QUERY.message,
            [FieldError("since", "must be the 24-hex-digit id of a notification this inbox received", since)],
        )
    return since


async def _reject(socket: WebSocket[Any, Any, Any], body: dict[str, Any], reason: str) -> None:
    await socket.send_text(json.dumps({"event": "error", "data": body}))
    await socket.close(code=WS_CLOSE_POLICY_VIOLATION, reason=reason)


async def _send_loop(socket: WebSocket[Any, Any, Any], connection: SocketConnection) -> None:
    while True:
        text = await connection.outbox.get()
        if text is None or connection.overflowed:
            return
        await socket.send_text(text)


async def _receive_loop(socket: WebSocket[Any, Any, Any]) -> None:
    """Read until the client disconnects; its only frames are keep-alive pings, which need no reply."""
    while True:
        await socket.receive_data(mode="text")


@websocket("/ws")
async def inbox_socket(socket: WebSocket[Any, Any, Any]) -> None:
    services: Services = socket.app.state.services
    await socket.accept()
    try:
        subject = await inbox_subject_from_token(services, socket.query_params.get("token"))
    except ApiError as exc:
        body = error_body(exc.status, socket.url.path, exc.message, code=exc.error.code)
        await _reject(socket, body, "invalid or expired inbox session token")
        return
    try:
        since = _since_of(socket)
    except _ResumeRejected as exc:
        body = error_body(exc.status, socket.url.path, exc.message, code=exc.code, errors=exc.errors)
        await _reject(socket, body, "invalid since parameter")
        return
    connection = SocketConnection(subject.subscriber_pk, subject.context, subject.environment_id)
    services.hub.add(connection)
    expiry = _close_at_expiry(connection, subject, socket.url.path)
    logger.debug(
        "socket opened for subscriber %s (%d open)", subject.subscriber_id, services.hub.connection_count
    )
    try:
        try:
            opening = await _opening_frames(services, subject, since)
        except _ResumeRejected as exc:
            body = error_body(exc.status, socket.url.path, exc.message, code=exc.code)
            await _reject(socket, body, "unknown since message")
            return
        connection.release([encode(frame) for frame in opening], _message_ids(opening))
        await _serve(socket, connection, subject)
    finally:
        if expiry is not None:
            expiry.cancel()
        services.hub.remove(connection)
        logger.debug(
            "socket closed for subscriber %s (%d open)", subject.subscriber_id, services.hub.connection_count
        )
    if connection.overflowed or socket.connection_state != "disconnect":
        try:
            await socket.close(code=connection.close_code)
        except Exception:
            logger.debug(
                "closing the socket of subscriber %s failed; it is already gone",
                subject.subscriber_id,
            )


def _close_at_expiry(
    connection: SocketConnection, subject: InboxSubject, path: str
) -> asyncio.TimerHandle | None:
    """Schedule the socket's end when its session token expires, as a new handshake would then fail."""
    if subject.expires_at is None:
        return None
    delay = max(0.0, subject.expires_at - time.time())
    return asyncio.get_running_loop().call_later(delay, connection.revoke, invalid_token_frame(path))


def invalid_token_frame(path: str) -> str:
    """Return the error frame for a socket whose token expired or whose key was rotated."""
    body = error_body(
        INVALID_INBOX_TOKEN.status, path, INVALID_INBOX_TOKEN.message, code=INVALID_INBOX_TOKEN.code
    )
    return encode({"event": "error", "data": body})


def _message_ids(frames: list[dict[str, Any]]) -> set[str]:
    return {frame["data"]["message"]["_id"] for frame in frames if frame["event"] == "notification_received"}


async def _serve(
    socket: WebSocket[Any, Any, Any], connection: SocketConnection, subject: InboxSubject
) -> None:
    sender = asyncio.create_task(_send_loop(socket, connection))
    receiver = asyncio.create_task(_receive_loop(socket))
    done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in done:
        error = task.exception()
        if error is not None and not isinstance(error, WebSocketDisconnect):
            logger.debug("socket of subscriber %s ended: %r", subject.subscriber_id, error)
