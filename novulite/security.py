"""Secrets: API keys, inbox HMAC, signed tokens and admin password hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import time
from typing import Any

API_KEY_BYTES = 24
# scrypt cost for admin passwords: n=2**14, r=8 uses 16 MiB and about 50 ms per check.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def generate_api_key() -> str:
    return secrets.token_hex(API_KEY_BYTES)


def generate_app_identifier() -> str:
    return secrets.token_urlsafe(9)


def generate_password() -> str:
    """Return 16 letters and digits: no leading '-' to pass for a command-line option when pasted."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


def hash_api_key(key: str) -> str:
    """Return the SHA-256 hex digest under which an API key is looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def subscriber_hash(api_key: str, subscriber_id: str) -> str:
    """Return the subscriberHash an application computes for the inbox: HMAC-SHA256, lowercase hex."""
    return hmac.new(api_key.encode(), subscriber_id.encode(), hashlib.sha256).hexdigest()


def verify_subscriber_hash(api_key: str, subscriber_id: str, presented: object) -> bool:
    """Check a subscriberHash in constant time; anything but a matching string fails.

    Surrounding white space is ignored and hex digits may be upper case, because
    both spell the same digest.
    """
    if not isinstance(presented, str) or not presented:
        return False
    expected = subscriber_hash(api_key, subscriber_id)
    # Bytes, because compare_digest rejects str with non-ASCII characters.
    return hmac.compare_digest(expected.encode(), presented.strip().lower().encode())


def canonical_json(value: Any) -> str:
    """Serialise `value` as canonical JSON, the form a contextHash is computed over.

    Object keys are sorted by UTF-16 code unit, as JavaScript sorts them, with no white
    space. Strings escape only backslash and double quote. Numbers must be integers.
    These are the rules of OLPC canonical JSON, as the @tufjs/canonical-json package applies them.
    """
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        # JavaScript has one number type, so a browser that parsed 2.0 signs it as 2.
        return str(int(value))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: str(key).encode("utf-16-be"))
        members = [f"{canonical_json(str(key))}:{canonical_json(value[key])}" for key in keys]
        return "{" + ",".join(members) + "}"
    raise ValueError(f"{type(value).__name__} values have no canonical JSON form; use an integer or a string")


def context_hash(api_key: str, context: dict[str, Any]) -> str:
    """Return the contextHash an application computes for an inbox context: HMAC-SHA256, lowercase hex."""
    return hmac.new(api_key.encode(), canonical_json(context).encode(), hashlib.sha256).hexdigest()


def verify_context_hash(api_key: str, context: dict[str, Any], presented: object) -> bool:
    """Check a contextHash in constant time, with the same rules as a subscriberHash."""
    if not isinstance(presented, str) or not presented:
        return False
    expected = context_hash(api_key, context)
    return hmac.compare_digest(expected.encode(), presented.strip().lower().encode())


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(digest.hex(), digest_hex)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Sign and verify small JSON claims with HMAC-SHA256; tokens carry an `exp` in Unix seconds."""

    def __init__(self, key: bytes, purpose: str) -> None:
        # One key serves several token kinds; the purpose keeps them from being swapped.
        self._key = hmac.new(key, purpose.encode(), hashlib.sha256).digest()

    def sign(self, claims: dict[str, Any], ttl_seconds: float, now: float | None = None) -> str:
        issued = time.time() if now is None else now
        body = dict(claims, exp=int(issued + ttl_seconds))
        payload = _b64encode(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._signature(payload)}"

    def verify(self, token: str, now: float | None = None) -> dict[str, Any] | None:
        """Return the claims, or None when the token is malformed, forged or expired."""
        payload, _, signature = token.partition(".")
        if not payload or not signature:
            return None
        if not hmac.compare_digest(self._signature(payload), signature):
            return None
        try:
            claims = json.loads(_b64decode(payload))
        except ValueError:
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            return None
        current = time.time() if now is None else now
        if claims["exp"] <= current:
            return None
        return claims

    def _signature(self, payload: str) -> str:
        return _b64encode(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
