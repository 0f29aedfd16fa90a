"""A bare Litestar app that keeps WebSockets open and sends one frame to all of them on request.

bench/sockets.py uses it as the floor for broadcasting to many idle sockets: no
authentication, no job store, no queue.
"""

from __future__ import annotations

import asyncio

from litestar import Litestar, WebSocket, get, post, websocket

FRAME = '{"event":"notification_received","data":{"message":{"_id":"bench","content":"hello"}}}'
_sockets: set[WebSocket] = set()


@websocket("/ws")
async def hold(socket: WebSocket) -> None:
    await socket.accept()
    _sockets.add(socket)
    try:
        # Reading until the client closes keeps the socket open and notices its close frame.
        while True:
            await socket.receive_text()
    except Exception:
        pass
    finally:
        _sockets.discard(socket)


@get("/count")
async def count() -> dict[str, int]:
    return {"sockets": len(_sockets)}


@post("/broadcast")
async def broadcast() -> dict[str, int]:
    """Send FRAME to every open socket; return how many were sent to."""
    sockets = list(_sockets)
    await asyncio.gather(*(socket.send_text(FRAME) for socket in sockets), return_exceptions=True)
    return {"sent": len(sockets)}


app = Litestar(route_handlers=[hold, count, broadcast])
