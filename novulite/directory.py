"""Cached lookups on the trigger path: environments by key and workflows by identifier.

Entries live for a few seconds, so a change made by another process shows within
that time. Changes made through this process invalidate the entry at once. Misses
are never cached, so a new workflow is visible immediately.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from novulite.db.models import Environment, Step, Workflow

CACHE_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class EnvironmentInfo:
    id: str
    name: str
    identifier: str
    api_key_hash: str
    api_key: str
    hmac_required: bool


@dataclasses.dataclass(frozen=True)
class WorkflowInfo:
    pk: str
    workflow_id: str
    name: str
    active: bool
    step_count: int
    active_step_count: int


class _TimedCache:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: Any, value: Any) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self._seconds, value)

    def clear(self) -> None:
        self._entries.clear()

    def pop(self, key: Any) -> None:
        self._entries.pop(key, None)


def _environment_info(row: Environment) -> EnvironmentInfo:
    return EnvironmentInfo(
        id=row.id,
        name=row.name,
        identifier=row.identifier,
        api_key_hash=row.api_key_hash,
        api_key=row.api_key,
        hmac_required=row.hmac_required,
    )


class Directory:
    def __init__(self, reader: AsyncEngine, seconds: float = CACHE_SECONDS) -> None:
        self._reader = reader
        self._environments = _TimedCache(seconds)
        self._workflows = _TimedCache(seconds)

    async def _environment(self, column: str, value: str) -> EnvironmentInfo | None:
        cached = self._environments.get((column, value))
        if cached is not None:
            return cached
        # Built only on a miss: constructing the expression costs more than a cache hit.
        condition = getattr(Environment, column) == value
        async with self._reader.connect() as connection:
            row = (await connection.execute(select(Environment).where(condition))).first()
        if row is None:
            return None
        info = _environment_info(Environment(**row._mapping))
        self._environments.put((column, value), info)
        return info

    async def environment_by_key_hash(self, key_hash: str) -> EnvironmentInfo | None:
        return await self._environment("api_key_hash", key_hash)

    async def environment_by_identifier(self, identifier: str) -> EnvironmentInfo | None:
        return await self._environment("identifier", identifier)

    async def environment_by_id(self, environment_id: str) -> EnvironmentInfo | None:
        return await self._environment("id", environment_id)

    async def workflow(self, environment_id: str, workflow_id: str) -> WorkflowInfo | None:
        cache_key = (environment_id, workflow_id)
        cached = self._workflows.get(cache_key)
        if cached is not None:
            return cached
        async with self._reader.connect() as connection:
            row = (
                await connection.execute(
                    select(Workflow.id, Workflow.name, Workflow.active).where(
                        Workflow.environment_id == environment_id,
                        Workflow.workflow_id == workflow_id,
                    )
                )
            ).first()
            if row is None:
                return None
            counts = (
                await connection.execute(
                    select(func.count(), func.count().filter(Step.active.is_(True))).where(
                        Step.workflow_pk == row.id
                    )
                )
            ).one()
        info = WorkflowInfo(
            pk=row.id,
            workflow_id=workflow_id,
            name=row.name,
            active=row.active,
            step_count=counts[0],
            active_step_count=counts[1],
        )
        self._workflows.put(cache_key, info)
        return info

    def invalidate_environments(self) -> None:
        """Forget every cached environment, after a change such as a new secret key."""
        self._environments.clear()

    def invalidate_workflow(self, environment_id: str, workflow_id: str) -> None:
        self._workflows.pop((environment_id, workflow_id))
