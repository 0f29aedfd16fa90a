"""GET /v2/subscribers: filtered subscriber lists in cursor pages.

A page is read in listing order from just beyond a cursor. A cursor is opaque to
clients: base64url of JSON `[orderBy, sort value, id]`. It carries the sort value
itself, so a page boundary stays put even if the row it was made from changes or is
deleted. Ids are unique and, within one process, increase with creation time (see
novulite.ids), so (sort value, id) orders every listing completely.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import operator
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from novulite.api import query
from novulite.db.models import Subscriber
from novulite.errors import INVALID_QUERY, ApiError, FieldError
from novulite.subscribers import to_response

# orderBy value -> sort column; `_id` sorts by the id alone.
ORDER_COLUMNS: dict[str, InstrumentedAttribute[Any] | None] = {
    "_id": None,
    "createdAt": Subscriber.created_at,
    "updatedAt": Subscriber.updated_at,
}
DIRECTIONS = ("ASC", "DESC")
# Novu caps totalCount at this number and then sets totalCountCapped.
MAX_TOTAL_COUNT = 50_000

Key = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class SearchRequest:
    limit: int
    order_by: str
    descending: bool
    include_cursor: bool
    # The cursor and whether the page lies before it (a `before` cursor) rather than after it.
    cursor: Key | None
    backward: bool
    conditions: list[ColumnElement[bool]]


def parse_search(params: Any) -> SearchRequest:
    """Read the query of a search; raise a 400 naming each invalid parameter."""
    errors: list[FieldError] = []
    limit = query.page_limit(params, errors)
    order_by = (query.one_of(params, "orderBy", tuple(ORDER_COLUMNS), errors) or ["_id"])[0]
    direction = (query.one_of(params, "orderDirection", DIRECTIONS, errors) or ["DESC"])[0]
    include_cursor = query.boolean(params, "includeCursor", errors) or False
    after, before = params.get("after") or None, params.get("before") or None
    if after and before:
        errors.append(FieldError("before", "cannot be sent with after; send one of the two cursors", before))
    name, text = ("before", before) if before else ("after", after)
    cursor = _decode_cursor(text, name, order_by, errors) if text else None
    if errors:
        raise ApiError(INVALID_QUERY, errors=errors)
    return SearchRequest(
        limit=limit,
        order_by=order_by,
        descending=direction == "DESC",
        include_cursor=include_cursor,
        cursor=cursor,
        backward=bool(before),
        conditions=_filters(params),
    )


def _filters(params: Any) -> list[ColumnElement[bool]]:
    """Return the conditions of the exact-match filters email, phone, subscriberId and name."""
    conditions: list[ColumnElement[bool]] = []
    for name, column in (
        ("email", Subscriber.email),
        ("phone", Subscriber.phone),
        ("subscriberId", Subscriber.subscriber_id),
    ):
        value = params.get(name)
        if value:
            conditions.append(column == value.strip())
    name = (params.get("name") or "").strip()
    if name:
        full_name = func.trim(
            func.coalesce(Subscriber.first_name, "")
            .concat(" ")
            .concat(func.coalesce(Subscriber.last_name, ""))
        )
        conditions.append(or_(Subscriber.first_name == name, Subscriber.last_name == name, full_name == name))
    return conditions


def encode_cursor(order_by: str, key: Key) -> str:
    value = None if len(key) == 1 else key[0].isoformat()
    text = json.dumps([order_by, value, key[-1]], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(text: str, name: str, order_by: str, errors: list[FieldError]) -> Key | None:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        made_for, value, pk = decoded
        if not isinstance(made_for, str) or made_for not in ORDER_COLUMNS or not isinstance(pk, str):
            raise ValueError("not a cursor")
        if made_for == "_id":
            key: Key = (pk,)
        else:
            instant = dt.datetime.fromisoformat(value)
            if instant.tzinfo is None:
                raise ValueError("cursor time without a time zone")
            key = (instant, pk)
    except (ValueError, TypeError):
        errors.append(
            FieldError(
                name, "is not a cursor from this server; send the next or previous value of a page", text
            )
        )
        return None
    if made_for != order_by:
        errors.append(
            FieldError(
                name,
                f"was made for orderBy={made_for}; send that orderBy with it or start again without a cursor",
                text,
            )
        )
        return None
    return key


def _key_columns(order_by: str) -> list[InstrumentedAttribute[Any]]:
    column = ORDER_COLUMNS[order_by]
    return [Subscriber.id] if column is None else [column, Subscriber.id]


def _row_key(row: Subscriber, order_by: str) -> Key:
    column = ORDER_COLUMNS[order_by]
    return (row.id,) if column is None else (getattr(row, column.key), row.id)


def _beyond(
    columns: list[InstrumentedAttribute[Any]], key: Key, descending: bool, inclusive: bool
) -> ColumnElement[bool]:
    """Return the condition for rows past `key` when walking toward smaller keys (or larger ones)."""
    strict: Callable[[Any, Any], Any] = operator.lt if descending else operator.gt
    last: Callable[[Any, Any], Any] = strict
    if inclusive:
        last = operator.le if descending else operator.ge
    if len(columns) == 1:
        return last(columns[0], key[0])
    (column, id_column), (value, pk) = columns, key
    return or_(strict(column, value), and_(column == value, last(id_column, pk)))


def search_page(session: Session, environment_id: str, search: SearchRequest) -> dict[str, Any]:
    """Return one page of live subscribers in Novu's ListSubscribersResponseDto shape."""
    conditions = [
        Subscriber.environment_id == environment_id,
        Subscriber.deleted.is_(false()),
        *search.conditions,
    ]
    columns = _key_columns(search.order_by)
    # The page is read walking away from the cursor: backward for a `before` cursor.
    walk_descending = search.descending != search.backward
    statement = select(Subscriber).where(*conditions)
    if search.cursor is not None:
        statement = statement.where(_beyond(columns, search.cursor, walk_descending, search.include_cursor))
    order = [column.desc() if walk_descending else column.asc() for column in columns]
    rows = list(session.scalars(statement.order_by(*order).limit(search.limit + 1)))
    more_in_walk = len(rows) > search.limit
    page = rows[: search.limit]
    if search.backward:
        page.reverse()

    def has_beyond(row: Subscriber, descending: bool) -> bool:
        condition = _beyond(columns, _row_key(row, search.order_by), descending, inclusive=False)
        return session.scalar(select(Subscriber.id).where(*conditions, condition).limit(1)) is not None

    next_cursor = previous_cursor = None
    if page:
        more_after = more_in_walk if not search.backward else has_beyond(page[-1], search.descending)
        more_before = more_in_walk if search.backward else has_beyond(page[0], not search.descending)
        if more_after:
            next_cursor = encode_cursor(search.order_by, _row_key(page[-1], search.order_by))
        if more_before:
            previous_cursor = encode_cursor(search.order_by, _row_key(page[0], search.order_by))

    counted = select(Subscriber.id).where(*conditions).limit(MAX_TOTAL_COUNT + 1).subquery()
    total = session.scalar(select(func.count()).select_from(counted)) or 0
    return {
        "data": [to_response(row) for row in page],
        "next": next_cursor,
        "previous": previous_cursor,
        "totalCount": min(total, MAX_TOTAL_COUNT),
        "totalCountCapped": total > MAX_TOTAL_COUNT,
    }
