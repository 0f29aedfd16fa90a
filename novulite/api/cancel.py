"""DELETE /v1/events/trigger/{transactionId}: cancel what has not run yet of a transaction."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Router, delete
from litestar.di import Provide

from novulite.api.auth import environment_from_api_key, services_of
from novulite.directory import EnvironmentInfo
from novulite.engine.cancel import cancel_transaction


@delete("/trigger/{transaction_id:str}", status_code=200)
async def cancel_trigger(
    request: Request[Any, Any, Any], environment: EnvironmentInfo, transaction_id: str
) -> dict[str, Any]:
    """Cancel the transaction's unrun work; return `{"data": true}` when something was canceled.

    An unknown transaction, or one whose jobs have all run, gets `{"data": false}` and
    changes nothing, as in Novu, which returns a bare boolean rather than an error.
    """
    services = services_of(request)
    canceled = await asyncio.to_thread(
        cancel_transaction, services.store, services.clock, environment.id, transaction_id
    )
    return {"data": canceled.anything}


cancel_router = Router(
    path="/v1/events",
    route_handlers=[cancel_trigger],
    dependencies={"environment": Provide(environment_from_api_key)},
)
