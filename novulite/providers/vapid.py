"""Web Push keys and subscriptions: VAPID key pairs (RFC 8292) and browser PushSubscription JSON.

A VAPID key pair is an ECDSA P-256 key. The public key is shared as the base64url
encoding of its 65-byte uncompressed point, the `applicationServerKey` a page
passes to `pushManager.subscribe()`. The private key is stored as the base64url
encoding of its 32-byte scalar, the form the `web-push` npm package and
`novulite vapid-keys` print, or as a PEM block.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# A subscription's p256dh key is an uncompressed P-256 point, and its auth secret is 16 bytes (RFC 8291).
P256_POINT_BYTES = 65
AUTH_SECRET_BYTES = 16
PRIVATE_SCALAR_BYTES = 32
# The VAPID `sub` claim: a mailto: address or an https: URL where the push service can reach the sender.
SUBJECT_PATTERN = re.compile(r"^(mailto:[^@\s]+@[^@\s]+|https://[^\s/]+(/\S*)?)$", re.IGNORECASE)


class InvalidKey(ValueError):
    """An invalid VAPID key or subscription; the message names the invalid part."""


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding, raising ValueError for other text."""
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"is not base64url: {exc}") from exc


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_key_text(key: ec.EllipticCurvePublicKey) -> str:
    """Return a public key as base64url of its uncompressed point, the `applicationServerKey` form."""
    point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b64url_encode(point)


def private_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    """Return a private key as base64url of its 32-byte scalar."""
    return b64url_encode(key.private_numbers().private_value.to_bytes(PRIVATE_SCALAR_BYTES, "big"))


def generate_key_pair() -> tuple[str, str]:
    """Return a new VAPID key pair as (public key, private key) text."""
    key = ec.generate_private_key(ec.SECP256R1())
    return public_key_text(key.public_key()), private_key_text(key)


def load_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """Parse a VAPID private key: base64url of the 32-byte scalar, or a PEM block of a P-256 key."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidKey(f"is not a readable PEM private key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise InvalidKey("must be an ECDSA P-256 (prime256v1) key")
        return key
    try:
        raw = b64url_decode(text)
    except ValueError as exc:
        raise InvalidKey(str(exc)) from exc
    if len(raw) != PRIVATE_SCALAR_BYTES:
        raise InvalidKey(
            "must be the base64url encoding of a 32-byte P-256 private key or a PEM block, "
            f"got {len(raw)} bytes"
        )
    try:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError as exc:
        raise InvalidKey(f"is not a valid P-256 private key: {exc}") from exc


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """Parse a public key given as base64url of its 65-byte uncompressed P-256 point."""
    try:
        raw = b64url_decode(text)
    except ValueError as exc:
        raise InvalidKey(str(exc)) from exc
    if len(raw) != P256_POINT_BYTES or raw[0] != 4:
        raise InvalidKey(
            "must be the base64url encoding of a 65-byte uncompressed P-256 point (starting with 0x04), "
            f"got {len(raw)} bytes"
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:
        raise InvalidKey(f"is not a point on the P-256 curve: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class Subscription:
    """A browser's PushSubscription, and the device token string it was stored as."""

    token: str
    endpoint: str
    p256dh: str
    auth: str

    @property
    def key(self) -> str:
        """A short hash of the endpoint that names the subscription in details without revealing it.

        The endpoint URL is a capability: anyone who has it can send to the browser.
        """
        return hashlib.sha256(self.endpoint.encode()).hexdigest()[:16]

    def as_info(self) -> dict[str, object]:
        """Return the subscription as pywebpush's `subscription_info`."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def looks_like_subscription(token: str) -> bool:
    """Return whether a device token is meant as a Web Push subscription: a JSON object with `endpoint`."""
    if not token.lstrip().startswith("{"):
        return False
    try:
        data = json.loads(token)
    except ValueError:
        return False
    return isinstance(data, dict) and "endpoint" in data


def parse_subscription(token: str) -> Subscription:
    """Parse a PushSubscription JSON string: `{endpoint, keys: {p256dh, auth}}`.

    Raises InvalidKey naming the part that is missing or invalid.
    """
    try:
        data = json.loads(token)
    except ValueError as exc:
        raise InvalidKey(f"is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidKey("must be a PushSubscription JSON object: {endpoint, keys: {p256dh, auth}}")
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or not re.match(r"^https?://[^/\s]+", endpoint):
        raise InvalidKey("endpoint must be the http or https URL from PushSubscription.endpoint")
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise InvalidKey("keys must be an object with p256dh and auth, as PushSubscription.toJSON() gives")
    p256dh = keys.get("p256dh")
    auth = keys.get("auth")
    if not isinstance(p256dh, str):
        raise InvalidKey("keys.p256dh must be a string")
    if not isinstance(auth, str):
        raise InvalidKey("keys.auth must be a string")
    try:
        load_public_key(p256dh)
    except InvalidKey as exc:
        raise InvalidKey(f"keys.p256dh {exc}") from exc
    try:
        secret = b64url_decode(auth)
    except ValueError as exc:
        raise InvalidKey(f"keys.auth {exc}") from exc
    if len(secret) != AUTH_SECRET_BYTES:
        raise InvalidKey(f"keys.auth must encode {AUTH_SECRET_BYTES} bytes, got {len(secret)}")
    return Subscription(token, endpoint, p256dh, auth)
