"""Inbox filters on tags, data and creation time, in every form @novu/js sends them.

Tags and each data value reduce to OR groups that must all match. Tags come as an array
or `{"or": [...]}` (one group) or `{"and": [{"or": [...]}, ...]}` (several); in a query
string they are `tags[]=a` or `tags[0][]=a&tags[1][]=b`. Data maps keys, nested at most
two deep, to a scalar, an array, `{"or": [...]}` or `{"and": [{"or": [...]}, ...]}`. A
stored array matches when any of its items is in the group.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement

from novulite.api.body import json_type
from novulite.db.models import Message
from novulite.errors import FieldError
from novulite.json_sql import JsonHasAny

# Bounds as @novu/js enforces them, so one request cannot build an unbounded SQL statement.
MAX_TAG_GROUPS = 30
MAX_TAGS_PER_GROUP = 100
MAX_TAGS_TOTAL = 200
MAX_DATA_KEYS = 50
MAX_DATA_DEPTH = 2
# A key of the `data` filter becomes a JSON path, so it is limited to characters that need no quoting.
DATA_KEY_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,100}")
_INDEXED_TAG = re.compile(r"tags\[(\d{1,3})\]\[\]")

TagGroups = list[list[str]]
DataGroups = list[tuple[tuple[str, ...], list[list[Any]]]]


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int | float)


def _tag_group(raw: Any, field: str, errors: list[FieldError]) -> list[str]:
    if not isinstance(raw, list):
        errors.append(FieldError(field, f"must be an array of strings, got {json_type(raw)}"))
        return []
    if len(raw) > MAX_TAGS_PER_GROUP:
        errors.append(FieldError(field, f"has {len(raw)} tags; send at most {MAX_TAGS_PER_GROUP} in a group"))
        return []
    for index, value in enumerate(raw):
        if not isinstance(value, str):
            errors.append(FieldError(f"{field}[{index}]", f"must be a string, got {json_type(value)}", value))
    return [value for value in raw if isinstance(value, str)]


def parse_tags(raw: Any, field: str, errors: list[FieldError]) -> TagGroups:
    """Return the OR groups of a tags filter. A message must carry a tag of every group."""
    if raw is None:
        return []
    if isinstance(raw, list):
        group = _tag_group(raw, field, errors)
        return [group] if group else []
    if not isinstance(raw, dict) or set(raw) not in ({"or"}, {"and"}):
        shapes = 'an array of tags, {"or": [tags]} or {"and": [{"or": [tags]}, ...]}'
        errors.append(FieldError(field, f"must be {shapes}", raw))
        return []
    if "or" in raw:
        group = _tag_group(raw["or"], f"{field}.or", errors)
        return [group] if group else []
    groups_raw = raw["and"]
    if not isinstance(groups_raw, list) or len(groups_raw) > MAX_TAG_GROUPS:
        problem = f"must be an array of at most {MAX_TAG_GROUPS} {{or}} groups"
        errors.append(FieldError(f"{field}.and", problem))
        return []
    groups = []
    for index, item in enumerate(groups_raw):
        name = f"{field}.and[{index}]"
        if not isinstance(item, dict) or set(item) != {"or"}:
            errors.append(FieldError(name, 'must be {"or": [tags]}', item))
            continue
        if item["or"] == []:
            errors.append(FieldError(f"{name}.or", "is empty; send at least one tag"))
        group = _tag_group(item["or"], f"{name}.or", errors)
        groups.append(group)
    if sum(len(group) for group in groups) > MAX_TAGS_TOTAL:
        errors.append(
            FieldError(field, f"has more than {MAX_TAGS_TOTAL} tags in all; send at most {MAX_TAGS_TOTAL}")
        )
    return groups


def is_indexed_tag(key: str) -> bool:
    """Return whether a query parameter is `tags[N][]`, one group of an AND of tag groups."""
    return _INDEXED_TAG.fullmatch(key) is not None


def tags_from_query(params: Any) -> Any:
    """Return the tags filter of a query string in its JSON form, or None when it has none.

    `tags[]=a&tags[]=b` is one group; `tags[0][]=a&tags[1][]=b` is one group per index.
    """
    indexed: dict[int, list[str]] = {}
    for key in params:
        match = _INDEXED_TAG.fullmatch(key)
        if match:
            indexed[int(match.group(1))] = params.getall(key)
    if indexed:
        return {"and": [{"or": indexed[index]} for index in sorted(indexed)]}
    flat = params.getall("tags[]", []) + params.getall("tags", [])
    return flat or None


def _scalars(value: Any) -> list[Any] | None:
    """Return `value` if it is an array of scalars, else None."""
    if isinstance(value, list) and all(_is_scalar(item) for item in value):
        return value
    return None


def _or_of(value: Any) -> list[Any] | None:
    """Return the items of `{"or": [scalars]}`, else None."""
    if isinstance(value, dict) and set(value) == {"or"}:
        return _scalars(value["or"])
    return None


def _data_groups(value: Any, field: str, errors: list[FieldError]) -> list[list[Any]]:
    if _is_scalar(value):
        return [[value]]
    group = _scalars(value)
    if group is None:
        group = _or_of(value)
    if group is not None:
        return [group] if group else []
    if isinstance(value, dict) and set(value) == {"and"} and isinstance(value["and"], list):
        groups = [_or_of(item) for item in value["and"]]
        if all(groups):
            return [group for group in groups if group]
    invalid = "must be a scalar, an array of scalars, {or: [...]} or {and: [{or: [...]}, ...]}"
    errors.append(FieldError(field, invalid, value))
    return []


def _walk_data(raw: Mapping[str, Any], path: tuple[str, ...], errors: list[FieldError]) -> DataGroups:
    found: DataGroups = []
    for key, value in raw.items():
        field = "data." + ".".join((*path, key))
        if not DATA_KEY_PATTERN.fullmatch(key):
            errors.append(FieldError(field, "is not a valid key; use letters, digits, _ and -"))
            continue
        if isinstance(value, dict) and not ({"or", "and"} & set(value)):
            if len(path) + 1 >= MAX_DATA_DEPTH:
                problem = f"nests too deep; data filters reach {MAX_DATA_DEPTH} levels"
                errors.append(FieldError(field, problem))
                continue
            found.extend(_walk_data(value, (*path, key), errors))
            continue
        groups = _data_groups(value, field, errors)
        if groups:
            found.append(((*path, key), groups))
    return found


def parse_data(raw: Any, errors: list[FieldError]) -> DataGroups:
    """Return the data filter as (path, OR groups) pairs; `raw` is an object or a JSON string of one."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            errors.append(FieldError("data", "must be a JSON object or a string of one", raw))
            return []
    if not isinstance(raw, dict):
        errors.append(FieldError("data", f"must be a JSON object, got {json_type(raw)}"))
        return []
    if len(raw) > MAX_DATA_KEYS:
        errors.append(FieldError("data", f"has {len(raw)} keys; send at most {MAX_DATA_KEYS}"))
        return []
    return _walk_data(raw, (), errors)


def parse_instant(raw: Any, field: str, errors: list[FieldError]) -> dt.datetime | None:
    """Read createdGte or createdLte: epoch milliseconds, as @novu/js sends them, or an ISO 8601 time."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        errors.append(FieldError(field, "must be epoch milliseconds or an ISO 8601 time", raw))
        return None
    try:
        milliseconds = float(raw)
    except (TypeError, ValueError):
        milliseconds = None
    try:
        if milliseconds is not None:
            return dt.datetime.fromtimestamp(milliseconds / 1000, dt.UTC)
        if isinstance(raw, str):
            parsed = dt.datetime.fromisoformat(raw)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError, OSError):
        pass
    errors.append(FieldError(field, "must be epoch milliseconds or an ISO 8601 time", raw))
    return None


def tag_conditions(groups: TagGroups) -> list[ColumnElement[bool]]:
    return [JsonHasAny(Message.tags, (), group) for group in groups if group]


def data_conditions(groups: DataGroups) -> list[ColumnElement[bool]]:
    return [JsonHasAny(Message.data, path, group) for path, or_groups in groups for group in or_groups]


def created_conditions(gte: dt.datetime | None, lte: dt.datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if gte is not None:
        conditions.append(Message.created_at >= gte)
    if lte is not None:
        # Clients compare createdAt at millisecond precision, so the whole last millisecond is included.
        conditions.append(Message.created_at < lte + dt.timedelta(milliseconds=1))
    return conditions
