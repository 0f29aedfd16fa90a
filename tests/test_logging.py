"""Log formats of a real server, and that no format lets a secret through."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from novulite.logs import REDACTED, JsonFormatter, KeyValueFormatter, RedactSecrets, TextFormatter
from tests.conftest import api_client
from tests.helpers import open_session
from tests.servers import API_KEY, REDIS_PASSWORD, RedisProcess, ServerProcess, free_port, server_command

# A password sent to the admin sign-in form that must not reach the log.
WRONG_PASSWORD = "wrong-password-5d0c2a"
KV_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)')


def parse_kv(line: str) -> dict[str, str]:
    """Parse one key=value line whose quoted values use JSON string escapes, or raise ValueError."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = KV_FIELD.match(line, position)
        if match is None:
            raise ValueError(f"not a key=value line at column {position}: {line!r}")
        key, value = match.groups()
        fields[key] = json.loads(value) if value.startswith('"') else value
        position = match.end()
    return fields


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose database exists, so later starts print no first-start secrets."""
    root = tmp_path_factory.mktemp("logging")
    server = ServerProcess(root / "data", free_port(), server_command(), root / "first-start.log").start()
    server.stop()
    return root / "data"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path).start()
    yield process
    process.stop()


def _sign_in_wrong(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        form = client.get("/admin/login")
        match = re.search(r'name="_csrf_token" value="([^"]+)"', form.text)
        assert match, "the sign-in form has no CSRF token"
        response = client.post(
            "/admin/login",
            data={"_csrf_token": match.group(1), "username": "admin", "password": WRONG_PASSWORD},
        )
        assert response.status_code == 401, response.text


def _make_requests(server: ServerProcess, redis_url: str) -> str:
    """Send requests that carry every kind of secret and return the inbox session token used."""
    token = str(open_session(server.base_url, "log-subscriber")["token"])
    with connect(f"{server.ws_url}?token={token}", open_timeout=10) as socket:
        socket.ping().wait(10)

    with api_client(server) as api:
        assert api.get("/v2/subscribers/log-subscriber").status_code == 200
    # Secrets in a query string reach uvicorn's access log line unless the filter redacts them.
    response = httpx.get(
        f"{server.base_url}/v1/health-check",
        params={"apiKey": API_KEY, "password": REDIS_PASSWORD, "next": redis_url},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    _sign_in_wrong(server.base_url)
    return token


@pytest.mark.parametrize("log_format", ["text", "json", "kv"])
def test_log_format_redacts_secrets(
    tmp_path: Path, data_dir: Path, private_redis: RedisProcess, log_format: str
) -> None:
    log_path = tmp_path / f"server-{log_format}.log"
    server = ServerProcess(
        data_dir,
        free_port(),
        server_command(),
        log_path,
        args=["--log-format", log_format, "--log-level", "debug", "--access-log"],
        env={"NOVULITE_REDIS_URL": private_redis.url},
    ).start()
    try:
        token = _make_requests(server, private_redis.url)
    finally:
        server.stop()

    log = log_path.read_text()
    lines = log.splitlines()
    assert lines, "the server wrote no log lines"
    for secret in (API_KEY, token, REDIS_PASSWORD, WRONG_PASSWORD):
        assert secret not in log, f"{secret!r} appears in the {log_format} log:\n{log}"
    assert "/ws?token=[redacted]" in log
    assert "failed admin sign-in for user 'admin'" in log
    assert "password=[redacted]" in log

    if log_format == "json":
        entries = [json.loads(line) for line in lines]
        for entry in entries:
            assert set(entry) == {"time", "level", "logger", "message", "exception"}, entry
        assert any(entry["logger"] == "uvicorn.access" for entry in entries)
    elif log_format == "kv":
        entries = [parse_kv(line) for line in lines]
        for entry in entries:
            assert list(entry)[:4] == ["time", "level", "logger", "msg"], entry
    else:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO) ", lines[0]), lines[0]


def _format(formatter: logging.Formatter, message: str, *args: Any, error: bool = False) -> str:
    record = logging.LogRecord("novulite.test", logging.ERROR, __file__, 1, message, args, None)
    if error:
        try:
            raise RuntimeError(f"cannot connect to redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0")
        except RuntimeError:
            record.exc_info = sys.exc_info()
    RedactSecrets().filter(record)
    return formatter.format(record)


SECRET_MESSAGES = [
    ("settings %s", {"smtp": {"host": "127.0.0.1", "password": "smtp-pass-1"}, "apiKey": "key-1"}),
    ("headers %r", {"Authorization": f"ApiKey {API_KEY}"}),
    ("header Authorization: Bearer %s", "bearer-token-0123456789"),
    ("connecting to %s", "smtp://mailer:smtp-pass-2@127.0.0.1:25"),
    ("body %s", '{"subscriberId": "s1", "token": "body-token-3"}'),
    ("client secret %s", [{"client_secret": "client-secret-4"}]),
]


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter(), KeyValueFormatter()])
@pytest.mark.parametrize(("message", "argument"), SECRET_MESSAGES)
def test_formatter_redacts_message(formatter: logging.Formatter, message: str, argument: Any) -> None:
    line = _format(formatter, message, argument)
    for secret in ("smtp-pass-1", "key-1", API_KEY, "bearer-token-0123456789", "smtp-pass-2"):
        assert secret not in line
    for secret in ("body-token-3", "client-secret-4"):
        assert secret not in line
    assert REDACTED in line


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter(), KeyValueFormatter()])
def test_formatter_redacts_exception(formatter: logging.Formatter) -> None:
    line = _format(formatter, "Redis failed", error=True)

    assert REDIS_PASSWORD not in line
    assert "RuntimeError: cannot connect to redis://:[redacted]@127.0.0.1:6379/0" in line.replace('\\"', '"')


def test_formatter_keeps_plain_text() -> None:
    line = _format(
        KeyValueFormatter(), "sent %d messages to %s; tokens left: %d", 3, "redis://:***@127.0.0.1/0", 5
    )

    assert parse_kv(line)["msg"] == "sent 3 messages to redis://:***@127.0.0.1/0; tokens left: 5"
    assert parse_kv(line)["level"] == "ERROR"
    assert parse_kv(line)["logger"] == "novulite.test"


def test_json_line_has_exception() -> None:
    entry = json.loads(_format(JsonFormatter(), 'quote " and\nnewline', error=True))

    assert entry["message"] == 'quote " and\nnewline'
    assert entry["level"] == "ERROR"
    assert entry["exception"].startswith("Traceback (most recent call last):")
