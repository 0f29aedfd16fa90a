"""Identifiers in the 24-hex-digit form Novu's clients expect for `_id` fields."""

from __future__ import annotations

import itertools
import os
import random
import re
import sys
import threading
import time

_process_random = os.urandom(5)
# Seeded from os.urandom. Transaction ids must be unique but need not be unpredictable,
# and this is cheaper than uuid.uuid4(), which makes a system call per id.
_random = random.Random()
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_lock = threading.Lock()
# next() on an itertools.count is one C call, which the interpreter lock makes atomic. A lock
# around it made worker threads queue behind a holder that was waiting for the interpreter
# lock: new_id took 22% of the server's samples in bench/sockets.py. A free-threaded build
# has no interpreter lock, so there the lock stays.
_LOCK_COUNTER = not getattr(sys, "_is_gil_enabled", lambda: True)()


def new_id() -> str:
    """Return a new id: 4 bytes of Unix seconds, 5 random bytes fixed per process, a 3-byte counter.

    Ids from one process sort in creation order, which list cursors rely on.
    """
    if _LOCK_COUNTER:
        with _lock:
            count = next(_counter) & 0xFFFFFF
    else:
        count = next(_counter) & 0xFFFFFF
    return (int(time.time()).to_bytes(4, "big") + _process_random + count.to_bytes(3, "big")).hex()


def new_transaction_id() -> str:
    """Return a random version 4 UUID string, the form of Novu's generated transactionId."""
    bits = _random.getrandbits(128)
    # Set the version (4) and variant (RFC 4122) bits as uuid.uuid4() does.
    bits = (bits & ~(0xF << 76) & ~(0xC << 60)) | (0x4 << 76) | (0x8 << 60)
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# novulite serves one organization per server. Novu's clients require `_organizationId`
# on subscribers, messages and activity entries, so every response carries this value.
ORGANIZATION_ID = "000000000000000000000001"

# Pattern of an id made by new_id(), for checking request parameters that name a row.
ID_PATTERN = re.compile(r"[0-9a-f]{24}")
