"""Locate the templates and static files shipped with novulite."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the folder `name` ("templates" or "static").

    An installed wheel carries the folder inside the package. A source checkout
    (an editable install) keeps it at the repository's top level instead.
    """
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"novulite's {name!r} folder is missing next to {_PACKAGE_DIR}")
