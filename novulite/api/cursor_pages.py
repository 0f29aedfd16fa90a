"""Cursor pagination for Novu's v2 list endpoints: `{data, next, previous, totalCount, totalCountCapped}`.

A cursor is the `_id` of an item. Ids made by one process sort in creation order
(see novulite.ids), so paging by id is paging by creation time. `after` returns
the items that follow the cursor in the requested order, and `before` returns the
items that precede it. `next` and `previous` are the cursors of the neighbouring
pages, or null at either end.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar import Request
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from novulite.errors import INVALID_QUERY, ApiError, FieldError

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
# Counting stops here, as in Novu, so a large table is not scanned for a total.
TOTAL_COUNT_CAP = 50_000
ORDER_BY = ("createdAt", "_id")


@dataclasses.dataclass(frozen=True)
class PageRequest:
    after: str | None
    before: str | None
    limit: int
    descending: bool
    include_cursor: bool


def page_request(request: Request[Any, Any, Any]) -> PageRequest:
    """Read after, before, limit, orderDirection, orderBy and includeCursor; raise a 400 naming bad ones."""
    params = request.query_params
    errors: list[FieldError] = []

    limit = DEFAULT_LIMIT
    raw_limit = params.get("limit")
    if raw_limit is not None:
        # novu-py sends numbers typed as float, such as limit=10.0.
        try:
            number = float(raw_limit)
        except ValueError:
            number = float("nan")
        if not number.is_integer() or not 1 <= number <= MAX_LIMIT:
            errors.append(FieldError("limit", f"must be a whole number from 1 to {MAX_LIMIT}", raw_limit))
        else:
            limit = int(number)

    direction = (params.get("orderDirection") or "DESC").upper()
    if direction not in ("ASC", "DESC"):
        errors.append(FieldError("orderDirection", "must be ASC or DESC", params.get("orderDirection")))
    order_by = params.get("orderBy")
    if order_by is not None and order_by not in ORDER_BY:
        errors.append(FieldError("orderBy", f"must be one of {', '.join(ORDER_BY)}", order_by))

    include_cursor = params.get("includeCursor", "false").lower()
    if include_cursor not in ("true", "false"):
        errors.append(FieldError("includeCursor", "must be true or false", params.get("includeCursor")))

    after = params.get("after") or None
    before = params.get("before") or None
    if after and before:
        errors.append(FieldError("before", "cannot be combined with after; send one cursor", before))
    if errors:
        raise ApiError(INVALID_QUERY, errors=errors)
    return PageRequest(
        after=after,
        before=before,
        limit=limit,
        descending=direction == "DESC",
        include_cursor=include_cursor == "true",
    )


@dataclasses.dataclass
class Page:
    rows: list[Any]
    next: str | None
    previous: str | None
    total_count: int
    total_count_capped: bool

    def body(self, data: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "data": data,
            "next": self.next,
            "previous": self.previous,
            "totalCount": self.total_count,
            "totalCountCapped": self.total_count_capped,
        }


async def fetch_page(
    session: AsyncSession,
    statement: Select[*tuple[Any, ...]],
    id_column: InstrumentedAttribute[str],
    page: PageRequest,
) -> Page:
    """Run `statement` (already filtered) for one page ordered by `id_column`; rows keep its columns."""
    forward = page.before is None
    cursor = page.after if forward else page.before
    # A `before` page is read backwards from its cursor, then put back in the requested order.
    descending = page.descending if forward else not page.descending
    conditions = []
    if cursor is not None:
        conditions.append(_beyond(id_column, cursor, descending, inclusive=page.include_cursor))
    ordered = statement.where(*conditions).order_by(id_column.desc() if descending else id_column.asc())
    rows = list((await session.execute(ordered.limit(page.limit + 1))).all())
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    if not forward:
        rows.reverse()

    first = _id(rows[0]) if rows else None
    last = _id(rows[-1]) if rows else None
    if forward:
        next_cursor = last if more else None
        previous_cursor = None
        if (
            cursor is not None
            and first is not None
            and await _has(session, statement, id_column, first, not page.descending)
        ):
            previous_cursor = first
    else:
        previous_cursor = first if more else None
        next_cursor = None
        if last is not None and await _has(session, statement, id_column, last, page.descending):
            next_cursor = last

    total = await session.scalar(
        select(func.count()).select_from(statement.limit(TOTAL_COUNT_CAP + 1).subquery())
    )
    total = int(total or 0)
    return Page(
        rows=rows,
        next=next_cursor,
        previous=previous_cursor,
        total_count=min(total, TOTAL_COUNT_CAP),
        total_count_capped=total > TOTAL_COUNT_CAP,
    )


def _id(row: Any) -> str:
    return str(row[0].id)


def _beyond(
    id_column: InstrumentedAttribute[str], cursor: str, descending: bool, *, inclusive: bool = False
) -> ColumnElement[bool]:
    """Return the condition for ids that come after `cursor` when reading in this direction."""
    if descending:
        return id_column <= cursor if inclusive else id_column < cursor
    return id_column >= cursor if inclusive else id_column > cursor


async def _has(
    session: AsyncSession,
    statement: Select[*tuple[Any, ...]],
    id_column: InstrumentedAttribute[str],
    boundary: str,
    descending: bool,
) -> bool:
    """Return whether the statement has a row beyond `boundary` when reading in this direction."""
    found = await session.scalar(select(statement.where(_beyond(id_column, boundary, descending)).exists()))
    return bool(found)
