"""Group commit for triggers: many concurrent requests share one SQLite transaction.

A request hands its trigger row to the intake and waits. One writer thread takes
every row waiting at that moment, inserts them in a single transaction, enqueues
their ids for trigger-handler, and then releases the waiting requests. A request
gets its response only after its row is committed, so an acknowledged trigger
survives a crash. Rows pile up while a commit runs, so batches grow with load.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from novulite import idempotency
from novulite.db.fast import insert_many_returning, insert_returning
from novulite.db.models import TriggerEvent, table
from novulite.db.store import Store
from novulite.queues import HANDLE_TRIGGERS, Queues

logger = logging.getLogger("novulite.api")

MAX_BATCH = 500
ENQUEUE_CHUNK = 100

_triggers = table(TriggerEvent)
_SKIP_REPEATED_TRANSACTION = "ON CONFLICT (environment_id, transaction_id) DO NOTHING RETURNING id"


@dataclasses.dataclass(frozen=True)
class KeyedTrigger:
    """A trigger sent with an Idempotency-Key, and how to build its response once stored."""

    key: idempotency.IdempotencyKey
    # Builds the response body from whether the row was new (False: its transactionId was used).
    respond: Callable[[bool], Any]


@dataclasses.dataclass(frozen=True)
class IntakeResult:
    inserted: bool
    # The record that already contained the Idempotency-Key, so the trigger was not stored again.
    repeated: idempotency.StoredResponse | None = None


_Pending = tuple[dict[str, Any], KeyedTrigger | None, "asyncio.Future[IntakeResult]"]


class TriggerIntake:
    def __init__(self, store: Store, queues: Queues) -> None:
        self._store = store
        self._queues = queues
        self._waiting: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="novulite-intake")

    async def start(self) -> None:
        self._waiting = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="novulite-intake")

    async def submit(self, row: dict[str, Any]) -> bool:
        """Store a trigger row durably; return False when its transactionId was already used."""
        return (await self.submit_keyed(row, None)).inserted

    async def submit_keyed(self, row: dict[str, Any], keyed: KeyedTrigger | None) -> IntakeResult:
        """Store a trigger row durably, with its Idempotency-Key record in the same transaction."""
        if self._waiting is None:
            raise RuntimeError("the trigger intake is not running")
        future: asyncio.Future[IntakeResult] = asyncio.get_running_loop().create_future()
        self._waiting.put_nowait((row, keyed, future))
        return await future

    async def stop(self) -> None:
        """Commit what is waiting, then stop the writer."""
        if self._task is None or self._waiting is None:
            return
        while not self._waiting.empty():
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._executor.shutdown(wait=True)
        self._task = None

    async def _run(self) -> None:
        assert self._waiting is not None
        loop = asyncio.get_running_loop()
        while True:
            backlogged = not self._waiting.empty()
            batch = [await self._waiting.get()]
            while len(batch) < MAX_BATCH and not self._waiting.empty():
                batch.append(self._waiting.get_nowait())
            self._queues.pacer.note_commit(backlogged)
            entries = [(row, keyed) for row, keyed, _ in batch]

            def release(results: list[IntakeResult], batch: list[_Pending] = batch) -> None:
                for (_, _, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)

            def release_soon(results: list[IntakeResult], release: Callable[..., None] = release) -> None:
                loop.call_soon_threadsafe(release, results)

            try:
                await asyncio.shield(loop.run_in_executor(self._executor, self._write, entries, release_soon))
            except Exception as exc:
                logger.exception("storing %d triggers failed", len(batch))
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)

    def _write(
        self,
        entries: list[tuple[dict[str, Any], KeyedTrigger | None]],
        release: Callable[[list[IntakeResult]], None],
    ) -> None:
        """Insert rows, skipping repeated transaction ids and idempotency keys, and enqueue the new ones.

        `release` gets the results right after the commit, so the responses go out
        while the queue entries are written. If an entry is lost, the reconciler
        enqueues the stored trigger again.
        """
        with self._store.raw_write() as raw:
            plain = [row for row, keyed in entries if keyed is None]
            inserted_plain = set(insert_many_returning(raw, _triggers, plain, _SKIP_REPEATED_TRANSACTION))
            results = [
                IntakeResult(row["id"] in inserted_plain) if keyed is None else _insert_keyed(raw, row, keyed)
                for row, keyed in entries
            ]
        release(results)
        inserted = [row["id"] for (row, _), result in zip(entries, results, strict=True) if result.inserted]
        try:
            for start in range(0, len(inserted), ENQUEUE_CHUNK):
                self._queues.enqueue(HANDLE_TRIGGERS, inserted[start : start + ENQUEUE_CHUNK])
        except Exception:
            # The rows are committed; the reconciler enqueues them after its grace period.
            logger.exception("enqueueing %d stored triggers failed; the reconciler will retry", len(inserted))


def _insert_keyed(raw: Any, row: dict[str, Any], keyed: KeyedTrigger) -> IntakeResult:
    environment_id, now = row["environment_id"], row["created_at"]
    # The key is stored before the trigger, so of two processes that receive it at once, the
    # second finds the first's record and stores no trigger.
    repeated = idempotency.store(raw, environment_id, keyed.key, now, None, None)
    if repeated is not None:
        return IntakeResult(False, repeated)
    inserted = insert_returning(raw, _triggers, row, _SKIP_REPEATED_TRANSACTION) is not None
    idempotency.complete(raw, environment_id, keyed.key.key, 201, keyed.respond(inserted))
    return IntakeResult(inserted)
