"""Realtime fan-out between processes through Redis pub/sub.

In Redis mode the ws_socket_queue tasks do not build frames. They publish the event
(new message ids, or a subscriber and context whose counts changed) on one channel.
Every server process builds frames only for its own sockets. A subscriber without a
local socket costs a process its share of one indexed read per batch, and no frame.
Revoking an environment's sockets goes through the same channel.

Pub/sub delivers only to subscribers connected at that moment. After the
subscription drops, this process closes its sockets with 1013 (try again later), so
clients reconnect and replay what they missed from their last message id.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable

import msgspec
import redis
import redis.retry
from redis.backoff import NoBackoff

from novulite.engine.context import WorkerContext
from novulite.engine.socket_events import counts_changed, messages_created
from novulite.limiter.connect import REDIS_TIMEOUT_SECONDS, redis_client
from novulite.queue_redis import OutageLog
from novulite.realtime import Hub

logger = logging.getLogger("novulite.ws")

# Seconds one wait for a pub/sub message may take, so the listener notices a stop request.
LISTEN_SECONDS = 0.5
# Back-off between attempts to subscribe again after Redis dropped the subscription.
RESUBSCRIBE_INITIAL_SECONDS = 0.1
RESUBSCRIBE_MAX_SECONDS = 5.0
# Seconds of silence on the subscription after which redis-py sends a PING to check the connection.
HEALTH_CHECK_SECONDS = 10
# Size of one frame-building pass, in message ids plus one per event. A pass stops taking events
# once it reaches this, so the last event may overshoot it by one task batch of ids.
MAX_BATCH = 500


class Event(msgspec.Struct, omit_defaults=True):
    """One realtime event on the channel: kind "messages", "counts" or "revoke"."""

    kind: str
    # kind "messages": ids of new in-app messages.
    ids: list[str] = []
    # kind "counts": the inbox whose counts changed.
    subscriber: str = ""
    context: str = ""
    # kind "revoke": the environment whose sockets close, the last frame they get, and the sender.
    environment: str = ""
    text: str = ""
    origin: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


class RedisFanout:
    """Publishes realtime events to every process and delivers those it receives to local sockets."""

    def __init__(
        self,
        url: str,
        channel: str,
        hub: Hub,
        on_revoke: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = redis_client(url)
        # The subscription's own client never retries a command on a new connection by itself: a
        # silent reconnect would hide the gap in which events were lost. Its pings find a dead peer.
        self._subscriber = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=redis.retry.Retry(NoBackoff(), 0),
            health_check_interval=HEALTH_CHECK_SECONDS,
        )
        self._channel = channel
        self._hub = hub
        # Called on each revoke from another process, to drop caches that still accept the old key.
        self._on_revoke = on_revoke
        self._origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._ctx: WorkerContext | None = None
        self._events: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._publish_outage = OutageLog("realtime events")

    # Publishing, from queue tasks and request handlers.

    def publish_messages(self, message_ids: list[str]) -> None:
        self._publish(Event("messages", ids=message_ids))

    def publish_counts(self, subscriber_pk: str, context: str) -> None:
        self._publish(Event("counts", subscriber=subscriber_pk, context=context))

    def publish_revoke(self, environment_id: str, error_text: str) -> None:
        """Ask every other process to close the environment's sockets with `error_text`."""
        self._publish(Event("revoke", environment=environment_id, text=error_text, origin=self._origin))

    def _publish(self, event: Event) -> None:
        # A lost event costs frames, not data: a client that reconnects gets counts and a replay.
        try:
            self._client.publish(self._channel, _encoder.encode(event))
        except redis.RedisError as exc:
            self._publish_outage.failed(exc)
            return
        self._publish_outage.succeeded()

    # Receiving, on two threads: one listens on the channel and one builds frames from the job store.

    def start(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._stopped.clear()
        for target, name in (
            (self._listen, "novulite-realtime-listen"),
            (self._build, "novulite-realtime-build"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopped.set()
        self._events.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self._client.close()
        self._subscriber.close()

    def _listen(self) -> None:
        delay = RESUBSCRIBE_INITIAL_SECONDS
        lost = False
        while not self._stopped.is_set():
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                if lost:
                    lost = False
                    delay = RESUBSCRIBE_INITIAL_SECONDS
                    self._resubscribed()
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=LISTEN_SECONDS)
                    if message is not None and message["type"] == "message":
                        self._receive(message["data"])
            except Exception as exc:
                if not isinstance(exc, redis.RedisError):
                    # A failure outside redis-py (a revoke callback, a closing event loop) must not
                    # end this thread, or this process's sockets would get no more frames.
                    logger.exception(
                        "realtime listener failed on channel %s, subscribing again", self._channel
                    )
                elif not lost:
                    logger.warning(
                        "realtime subscription to Redis lost, subscribing again: %s: %s",
                        type(exc).__name__,
                        exc,
                    )
                lost = True
                self._stopped.wait(delay)
                delay = min(delay * 2, RESUBSCRIBE_MAX_SECONDS)
            finally:
                pubsub.close()

    def _resubscribed(self) -> None:
        logger.info("realtime subscription to Redis restored; closing local sockets so clients replay")
        self._hub.call_threadsafe(self._hub.close_all_for_retry)

    def _receive(self, data: bytes) -> None:
        try:
            event = _decoder.decode(data)
        except msgspec.DecodeError:
            logger.warning("ignored a malformed realtime event of %d bytes", len(data))
            return
        if event.kind == "revoke":
            if event.origin != self._origin:
                self._on_revoke()
                self._hub.call_threadsafe(self._hub.revoke_environment, event.environment, event.text)
            return
        # Most processes hold no socket of most subscribers, and a process without sockets has no work.
        if self._hub.has_any_sockets:
            self._events.put(event)

    def _build(self) -> None:
        while True:
            first = self._events.get()
            if first is None:
                return
            events = [first]
            size = len(first.ids) + 1
            # The bound keeps the job store's IN lists far below SQLite's limit on parameters.
            while size < MAX_BATCH:
                try:
                    event = self._events.get_nowait()
                except queue.Empty:
                    break
                if event is None:
                    self._deliver(events)
                    return
                events.append(event)
                size += len(event.ids) + 1
            self._deliver(events)

    def _deliver(self, events: list[Event]) -> None:
        ctx = self._ctx
        assert ctx is not None
        message_ids = [message_id for event in events if event.kind == "messages" for message_id in event.ids]
        inboxes = {(event.subscriber, event.context) for event in events if event.kind == "counts"}
        try:
            if message_ids:
                # Reads the subscriber of each message and builds frames only for local sockets.
                messages_created(ctx, message_ids)
            for subscriber_pk, context in inboxes:
                if self._hub.has_sockets(subscriber_pk):
                    counts_changed(ctx, subscriber_pk, context)
        except Exception:
            logger.exception(
                "building realtime frames failed for %d messages and %d inboxes",
                len(message_ids),
                len(inboxes),
            )
