"""Realtime inbox delivery: a registry of open sockets and the `/ws` endpoint.

Frames are JSON text `{"event": ..., "data": ...}`, the format of Novu's cloud
socket, which @novu/js speaks when given `socketOptions: {socketType: "cloud"}`.
A frame reaches a socket only when the socket's context keys equal the message's
(an exact, order-free set match).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec

logger = logging.getLogger("novulite.ws")

# Frames a socket may have waiting before it counts as too slow and is closed.
MAX_BACKLOG = 1000
# The start of every encoded notification_received frame, which `release` matches held frames against.
_RECEIVED_PREFIX = '{"event":"notification_received"'
WS_CLOSE_NORMAL = 1000
WS_CLOSE_POLICY_VIOLATION = 1008
WS_CLOSE_GOING_AWAY = 1001
WS_CLOSE_TRY_AGAIN_LATER = 1013


_ENCODER = msgspec.json.Encoder()


def encode(frame: dict[str, Any]) -> str:
    """Encode a frame as compact JSON text, with non-ASCII characters as UTF-8 instead of escapes.

    msgspec took about a tenth of the time of json.dumps per frame (msgspec 0.23, Python 3.11).
    """
    return _ENCODER.encode(frame).decode()


class SocketConnection:
    """One open inbox socket and the frames waiting to be sent on it.

    Until `release` runs, live frames are held back, so the frames a socket opens with
    (a replay and the current counts) go out before any live one.
    """

    def __init__(self, subscriber_pk: str, context: str, environment_id: str = "") -> None:
        self.subscriber_pk = subscriber_pk
        self.context = context
        self.environment_id = environment_id
        # The code the socket closes with once its sender stops.
        self.close_code = WS_CLOSE_NORMAL
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=MAX_BACKLOG)
        self.overflowed = False
        self._pending_live: list[str] | None = []
        # Ids of messages the opening replay sent whose live frame has not come yet. The frame of
        # a message stored before the replay read it can still be on its way after `release`.
        self._replayed: set[str] = set()

    def offer(self, text: str) -> None:
        if self.overflowed:
            return
        if self._replayed and text.startswith(_RECEIVED_PREFIX):
            message_id = _message_id(text)
            if message_id in self._replayed:
                self._replayed.discard(message_id)
                return
        if self._pending_live is not None:
            if len(self._pending_live) < MAX_BACKLOG:
                self._pending_live.append(text)
                return
            self._overflow()
            return
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:
            self._overflow()

    def release(self, opening: list[str], sent_ids: set[str]) -> None:
        """Queue the opening frames, then the held live frames minus messages the opening already sent."""
        held, self._pending_live = self._pending_live or [], None
        for text in opening:
            self.offer(text)
        repeated = 0
        unmatched = set(sent_ids)
        for text in held:
            if sent_ids and text.startswith(_RECEIVED_PREFIX) and _message_id(text) in sent_ids:
                unmatched.discard(_message_id(text))
                repeated += 1
                continue
            self.offer(text)
        self._replayed = unmatched
        if repeated:
            logger.debug(
                "socket of subscriber %s skipped %d live messages its replay already sent",
                self.subscriber_pk,
                repeated,
            )

    def _overflow(self) -> None:
        # Closing beats silently dropping a frame: the client reconnects and refetches counts.
        self.overflowed = True
        logger.warning(
            "socket of subscriber %s fell %d frames behind; closing it",
            self.subscriber_pk,
            MAX_BACKLOG,
        )

    def finish(self) -> None:
        """Ask the sender to stop after the frames already queued."""
        self._pending_live = None
        try:
            self.outbox.put_nowait(None)
        except asyncio.QueueFull:
            self.overflowed = True

    def revoke(self, error_text: str) -> None:
        """Send `error_text` as the last frame, then close with 1008 as a rejected handshake does."""
        self._pending_live = None
        self.close_code = WS_CLOSE_POLICY_VIOLATION
        self.offer(error_text)
        self.finish()


class Hub:
    """Open sockets by subscriber; all methods but publish_threadsafe run on the event loop."""

    def __init__(self) -> None:
        self._sockets: dict[str, set[SocketConnection]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Sends a revoke to the other processes (Redis mode); None when this process is the only one.
        self.broadcast_revoke: Callable[[str, str], None] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def connection_count(self) -> int:
        return sum(len(connections) for connections in self._sockets.values())

    def add(self, connection: SocketConnection) -> None:
        self._sockets[connection.subscriber_pk].add(connection)

    def remove(self, connection: SocketConnection) -> None:
        connections = self._sockets.get(connection.subscriber_pk)
        if connections is None:
            return
        connections.discard(connection)
        if not connections:
            del self._sockets[connection.subscriber_pk]

    @property
    def has_any_sockets(self) -> bool:
        """Whether any socket is open; safe to call from any thread."""
        return bool(self._sockets)

    def has_sockets(self, subscriber_pk: str) -> bool:
        """Return whether the subscriber has an open socket; safe to call from any thread."""
        return subscriber_pk in self._sockets

    def publish_threadsafe(self, frames_by_inbox: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        """Deliver frames by (subscriber pk, context key) from any thread; a no-op once the loop is gone.

        The frames are encoded here, in the calling thread, to keep that work off the event loop.
        One loop callback carries the whole batch, so a burst wakes the event loop once per batch
        instead of once per subscriber.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # A membership test is atomic under the interpreter lock. A socket that opens just after
        # it still gets the current counts, which every new socket receives first.
        deliveries = [
            (subscriber_pk, context, [encode(frame) for frame in frames])
            for (subscriber_pk, context), frames in frames_by_inbox.items()
            if subscriber_pk in self._sockets
        ]
        if not deliveries:
            return
        try:
            loop.call_soon_threadsafe(self.deliver, deliveries)
        except RuntimeError:
            logger.debug("event loop closed; dropped frames for %d inboxes", len(deliveries))

    def deliver(self, deliveries: list[tuple[str, str, list[str]]]) -> None:
        """Queue encoded frames on each socket of the subscriber whose context matches exactly."""
        for subscriber_pk, context, texts in deliveries:
            for connection in self._sockets.get(subscriber_pk, ()):
                if connection.context != context:
                    continue
                for text in texts:
                    connection.offer(text)

    def call_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run `callback(*args)` on the event loop from any thread; a no-op once the loop is gone."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            logger.debug("event loop closed; dropped a call to %s", getattr(callback, "__name__", callback))

    def finish_all(self, close_code: int = WS_CLOSE_NORMAL) -> None:
        """Close every socket with `close_code` once the frames already queued on it are sent."""
        for connections in self._sockets.values():
            for connection in connections:
                connection.close_code = close_code
                connection.finish()

    def close_all_for_retry(self) -> None:
        """Close every socket with 1013 (try again later), so clients reconnect and replay missed frames."""
        closed = 0
        for connections in self._sockets.values():
            for connection in connections:
                connection.close_code = WS_CLOSE_TRY_AGAIN_LATER
                connection.finish()
                closed += 1
        if closed:
            logger.info("closed %d sockets with 1013 so their clients reconnect and replay", closed)

    async def revoke_everywhere(self, environment_id: str, error_text: str) -> int:
        """Close the environment's sockets in this process and, in Redis mode, in every other one.

        Returns how many were open in this process.
        """
        revoked = self.revoke_environment(environment_id, error_text)
        if self.broadcast_revoke is not None:
            await asyncio.to_thread(self.broadcast_revoke, environment_id, error_text)
        return revoked

    def revoke_environment(self, environment_id: str, error_text: str) -> int:
        """Close every socket of the environment with `error_text`; return how many were open."""
        revoked = 0
        for connections in self._sockets.values():
            for connection in connections:
                if connection.environment_id == environment_id:
                    connection.revoke(error_text)
                    revoked += 1
        return revoked


def _message_id(text: str) -> str | None:
    message = json.loads(text).get("data", {}).get("message", {})
    return message.get("_id") if isinstance(message, dict) else None
