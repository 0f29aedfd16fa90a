"""GET /ws?token=<inbox session token>: the inbox's realtime socket."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from novulite.api.auth import InboxSubject, inbox_subject_from_token
from novulite.errors import ApiError, error_body
from novulite.messages import (
    unread_by_severity_query,
    unread_counts,
    unread_frame,
    unseen_count_query,
    unseen_frame,
)
from novulite.realtime import WS_CLOSE_POLICY_VIOLATION, SocketConnection
from novulite.services import Services

logger = logging.getLogger("novulite.ws")


async def _count_frames(services: Services, subject: InboxSubject) -> list[dict[str, Any]]:
    now = services.clock.now()
    async with services.reader.connect() as connection:
        rows = (
            await connection.execute(unread_by_severity_query(subject.subscriber_pk, subject.context, now))
        ).all()
        unseen = await connection.scalar(unseen_count_query(subject.subscriber_pk, subject.context, now))
    return [
        unread_frame(unread_counts([(row[0], row[1]) for row in rows])),
        unseen_frame(unseen or 0),
    ]


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
        await socket.send_text(json.dumps({"event": "error", "data": body}))
        await socket.close(code=WS_CLOSE_POLICY_VIOLATION, reason="invalid or expired inbox session token")
        return
    connection = SocketConnection(subject.subscriber_pk, subject.context)
    services.hub.add(connection)
    logger.debug("socket opened for subscriber %s", subject.subscriber_id)
    try:
        for frame in await _count_frames(services, subject):
            connection.offer(json.dumps(frame, separators=(",", ":")))
        sender = asyncio.create_task(_send_loop(socket, connection))
        receiver = asyncio.create_task(_receive_loop(socket))
        done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            error = task.exception()
            if error is not None and not isinstance(error, WebSocketDisconnect):
                logger.debug("socket of subscriber %s ended: %r", subject.subscriber_id, error)
    finally:
        services.hub.remove(connection)
        logger.debug("socket closed for subscriber %s", subject.subscriber_id)
    if connection.overflowed or socket.connection_state != "disconnect":
        try:
            await socket.close()
        except Exception:
            logger.debug(
                "closing the socket of subscriber %s failed; it is already gone",
                subject.subscriber_id,
            )
