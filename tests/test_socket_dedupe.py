"""A socket's opening replay and the live frames that follow it never repeat a message."""

from __future__ import annotations

import asyncio

from novulite.realtime import SocketConnection, encode


def _received(message_id: str) -> str:
    return encode({"event": "notification_received", "data": {"message": {"_id": message_id}}})


def _drain(connection: SocketConnection) -> list[str]:
    texts = []
    while not connection.outbox.empty():
        text = connection.outbox.get_nowait()
        assert text is not None
        texts.append(text)
    return texts


def test_late_live_frame_of_replayed_message_dropped() -> None:
    async def scenario() -> list[str]:
        connection = SocketConnection("subscriber", "")
        # Held while the socket opened: the frame of a message the replay also read, and a newer one.
        connection.offer(_received("m2"))
        connection.offer(_received("m3"))
        connection.release([_received("m1"), _received("m2")], {"m1", "m2"})
        # The job that publishes m1's frame ran after the replay had read m1 from the database.
        connection.offer(_received("m1"))
        connection.offer(_received("m4"))
        return _drain(connection)

    texts = asyncio.run(scenario())

    assert texts == [_received("m1"), _received("m2"), _received("m3"), _received("m4")]
