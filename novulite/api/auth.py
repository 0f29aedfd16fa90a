"""Authentication of server API calls (`Authorization: ApiKey`) and inbox calls (`Bearer`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar import Request

from novulite import security
from novulite.directory import EnvironmentInfo
from novulite.errors import (
    INVALID_API_KEY,
    INVALID_AUTH_SCHEME,
    INVALID_INBOX_TOKEN,
    MISSING_AUTHORIZATION,
    ApiError,
)
from novulite.services import Services


def services_of(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


async def environment_from_api_key(request: Request[Any, Any, Any]) -> EnvironmentInfo:
    """Return the environment whose secret key the request carries."""
    return await authenticate_api_key(services_of(request), request.headers.get("authorization", ""))


async def authenticate_api_key(services: Services, header: str) -> EnvironmentInfo:
    """Return the environment whose secret key an Authorization header carries.

    Accepts `ApiKey <key>` and, like Novu's SDKs, a bare key.
    """
    header = header.strip()
    if not header:
        raise ApiError(MISSING_AUTHORIZATION)
    scheme, _, key = header.partition(" ")
    if not key:
        scheme, key = "ApiKey", scheme
    if scheme.lower() != "apikey":
        raise ApiError(INVALID_AUTH_SCHEME, scheme=scheme[:20])
    environment = await services.directory.environment_by_key_hash(security.hash_api_key(key.strip()))
    if environment is None:
        raise ApiError(INVALID_API_KEY)
    return environment


@dataclasses.dataclass(frozen=True)
class InboxSubject:
    """Whose inbox a session token opens: environment, subscriber and exact context."""

    environment_id: str
    subscriber_pk: str
    subscriber_id: str
    context: str
    # When the token expires, in Unix seconds; None for a subject not read from a token.
    expires_at: float | None = None


async def inbox_subject_from_token(services: Services, token: str | None) -> InboxSubject:
    """Verify an inbox session token; it dies with the secret key it was issued under."""
    claims = services.inbox_tokens.verify(token) if token else None
    if claims is None:
        raise ApiError(INVALID_INBOX_TOKEN)
    # NOTE: the subscriber is not looked up, so a token outlives a deleted subscriber until it
    # expires. Its calls then find no messages, because a deleted subscriber's messages go with it.
    environment = await services.directory.environment_by_id(str(claims.get("env")))
    if environment is None or environment.api_key_hash[:16] != claims.get("key"):
        raise ApiError(INVALID_INBOX_TOKEN)
    return InboxSubject(
        environment_id=environment.id,
        subscriber_pk=str(claims["sub"]),
        subscriber_id=str(claims["sid"]),
        context=str(claims.get("ctx", "")),
        expires_at=float(claims["exp"]),
    )


def issue_inbox_token(services: Services, environment: EnvironmentInfo, subject: InboxSubject) -> str:
    claims = {
        "env": environment.id,
        "key": environment.api_key_hash[:16],
        "sub": subject.subscriber_pk,
        "sid": subject.subscriber_id,
        "ctx": subject.context,
    }
    return services.inbox_tokens.sign(claims, services.settings.inbox_token_ttl_seconds)


async def inbox_subject(request: Request[Any, Any, Any]) -> InboxSubject:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise ApiError(INVALID_INBOX_TOKEN)
    return await inbox_subject_from_token(services_of(request), token.strip())
