"""A bare Litestar app that decodes a small JSON POST and returns 201.

It is the reference that bench/trigger.py compares the trigger endpoint with.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request, Response, post


@post("/echo", status_code=201)
async def echo(request: Request[Any, Any, Any]) -> Response[Any]:
    body = msgspec.json.decode(await request.body())
    return Response(content={"data": body}, status_code=201)


app = Litestar(route_handlers=[echo], openapi_config=None, logging_config=None)
