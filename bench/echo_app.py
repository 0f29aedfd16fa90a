"""A bare Litestar app that decodes a small JSON POST and answers 201: the reference the trigger is compared with."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request, Response, post


@post("/echo", status_code=201)
async def echo(request: Request[Any, Any, Any]) -> Response[Any]:
    body = msgspec.json.decode(await request.body())
    return Response(content={"data": body}, status_code=201)


app = Litestar(route_handlers=[echo], openapi_config=None, logging_config=None)
