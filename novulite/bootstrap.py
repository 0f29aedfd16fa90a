"""First start: create the schema, the Development environment and the admin user."""

from __future__ import annotations

import dataclasses
import logging
import secrets

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from novulite import security
from novulite.clock import Clock
from novulite.config import Settings
from novulite.db import migrate
from novulite.db.models import AdminUser, Environment, ServerSetting

logger = logging.getLogger("novulite.db")

SIGNING_KEY_SETTING = "signing_key"
ADMIN_USERNAME = "admin"


@dataclasses.dataclass(frozen=True)
class CreatedSecrets:
    """Secrets made on first start; shown once because only hashes or copies in the database remain."""

    api_key: str
    app_identifier: str
    admin_password: str
    generated: tuple[str, ...]


def prepare_database(engine: Engine, settings: Settings, clock: Clock) -> CreatedSecrets | None:
    """Migrate the schema and seed a new database; return the secrets when it was new."""
    with migrate.exclusive(engine):
        migrate.upgrade(engine)
        with Session(engine) as session, session.begin():
            if session.scalar(select(Environment.id).limit(1)) is not None:
                return None
            return _seed(session, settings, clock)


def _seed(session: Session, settings: Settings, clock: Clock) -> CreatedSecrets:
    now = clock.now()
    generated = []
    api_key = settings.initial_api_key
    if not api_key:
        api_key = security.generate_api_key()
        generated.append("api_key")
    app_identifier = settings.initial_app_id
    if not app_identifier:
        app_identifier = security.generate_app_identifier()
        generated.append("app_identifier")
    password = settings.initial_admin_password
    if not password:
        password = security.generate_password()
        generated.append("admin_password")

    session.add(ServerSetting(key=SIGNING_KEY_SETTING, value=secrets.token_hex(32)))
    session.add(
        Environment(
            name="Development",
            identifier=app_identifier,
            api_key_hash=security.hash_api_key(api_key),
            api_key_prefix=api_key[:8],
            api_key=api_key,
            hmac_required=True,
            created_at=now,
            updated_at=now,
        )
    )
    session.add(
        AdminUser(
            username=ADMIN_USERNAME,
            password_hash=security.hash_password(password),
            created_at=now,
        )
    )
    logger.info("created a new database with environment Development and admin user %s", ADMIN_USERNAME)
    return CreatedSecrets(api_key, app_identifier, password, tuple(generated))


def load_signing_key(engine: Engine) -> bytes:
    with Session(engine) as session:
        value = session.scalar(select(ServerSetting.value).where(ServerSetting.key == SIGNING_KEY_SETTING))
    if value is None:
        raise RuntimeError("the database has no signing key; it was not created by novulite serve")
    return bytes.fromhex(value)
