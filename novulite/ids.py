"""Identifiers in the 24-hex-digit form Novu's clients expect for `_id` fields."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time

_process_random = os.urandom(5)
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_lock = threading.Lock()


def new_id() -> str:
    """Return a new id: 4 bytes of Unix seconds, 5 random bytes fixed per process, a 3-byte counter.

    Ids from one process sort in creation order, which list cursors rely on.
    """
    with _lock:
        count = next(_counter) & 0xFFFFFF
    return (int(time.time()).to_bytes(4, "big") + _process_random + count.to_bytes(3, "big")).hex()


# novulite serves one organization per server. Novu's clients require `_organizationId`
# on subscribers, messages and activity entries, so every response carries this value.
ORGANIZATION_ID = "000000000000000000000001"

# Pattern of an id made by new_id(), for checking request parameters that name a row.
ID_PATTERN = re.compile(r"[0-9a-f]{24}")
