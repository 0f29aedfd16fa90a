"""The environment's secret API key: read it, and rotate it.

Rotating replaces the key at once. The old key, subscriber hashes made with it and
inbox session tokens issued under it stop working. Other server processes see the
change within the directory's cache time (5 s).
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Router, get, post
from litestar.di import Provide
from sqlalchemy import update

from novulite import security
from novulite.api.auth import environment_from_api_key, services_of
from novulite.api.socket import invalid_token_frame
from novulite.db.models import Environment
from novulite.directory import EnvironmentInfo
from novulite.services import Services

logger = logging.getLogger("novulite.api")


def _keys_body(key: str) -> dict[str, Any]:
    # Novu lists one entry per key with the user who made it. This server has no API users.
    return {"data": [{"key": key, "_userId": None}]}


@get("/api-keys")
async def list_api_keys(environment: EnvironmentInfo) -> dict[str, Any]:
    return _keys_body(environment.api_key)


async def rotate_api_key(services: Services, environment_id: str, identifier: str) -> str:
    """Replace an environment's secret key, close its open inbox sockets and return the new key.

    The old key, subscriber hashes made with it and inbox session tokens issued under it are
    rejected from the moment this returns, in this process. In Redis mode the other processes
    close their sockets and drop their cached environments when the revoke reaches them over
    pub/sub. Without Redis, other processes accept the old key until their cache expires.
    """
    new_key = security.generate_api_key()
    async with services.writer.begin() as connection:
        await connection.execute(
            update(Environment)
            .where(Environment.id == environment_id)
            .values(
                api_key=new_key,
                api_key_hash=security.hash_api_key(new_key),
                api_key_prefix=new_key[:8],
                updated_at=services.clock.now(),
            )
        )
    services.directory.invalidate_environments()
    # Open sockets were authenticated under the old key, so they end as a handshake with it would.
    closed = await services.hub.revoke_everywhere(environment_id, invalid_token_frame("/ws"))
    logger.warning("secret API key rotated environment=%s sockets_closed=%d", identifier, closed)
    return new_key


@post("/api-keys/regenerate", status_code=201)
async def regenerate_api_key(request: Request[Any, Any, Any], environment: EnvironmentInfo) -> dict[str, Any]:
    """Replace the secret key and return the new one.

    The key that authenticated this request is rejected from now on.
    """
    new_key = await rotate_api_key(services_of(request), environment.id, environment.identifier)
    return _keys_body(new_key)


environments_router = Router(
    path="/v1/environments",
    route_handlers=[list_api_keys, regenerate_api_key],
    dependencies={"environment": Provide(environment_from_api_key)},
)
