"""API rate limits per API key and category, on both limiters, and their configuration at start.

The servers here allow 100 trigger tokens refilled at 20 per second, and 3 configuration
tokens refilled at one every two seconds. The tests of a server run in file order, and
the bulk trigger test comes first so it starts on a full trigger bucket.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LIMITER_MODES, api_client, limiter_env, start_server
from tests.helpers import create_workflow, open_session
from tests.servers import REDIS_PASSWORD, RedisProcess, ServerProcess, server_command

RATE_LIMITS = "trigger=100:20,configuration=3:0.5"
HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")


@pytest.fixture(scope="module", params=LIMITER_MODES)
def limited_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server with rate limits on RATE_LIMITS and the workflow `welcome`, one per limiter."""
    process = start_server(
        tmp_path_factory.mktemp(request.param),
        args=["--rate-limits", RATE_LIMITS],
        env=limiter_env(request, request.param),
    )
    with api_client(process) as api:
        create_workflow(api, "welcome")
    yield process
    process.stop()


@pytest.fixture
def api(limited_server: ServerProcess) -> Iterator[httpx.Client]:
    with api_client(limited_server) as client:
        yield client


def bulk(api: httpx.Client, count: int) -> httpx.Response:
    events = [{"name": "welcome", "to": "bulk-user", "payload": {"n": n}} for n in range(count)]
    return api.post("/v1/events/trigger/bulk", json={"events": events})


def test_bulk_triggers_within_capacity(api: httpx.Client) -> None:
    first = bulk(api, 1)
    assert first.status_code == 201, first.text
    assert first.headers["ratelimit-remaining"] == "99"
    # 91 of the 100 tokens: every request fits the full bucket, however fast they follow each other.
    remaining = [int(first.headers["ratelimit-remaining"])]
    for _ in range(3):
        response = bulk(api, 30)
        assert response.status_code == 201, response.text
        remaining.append(int(response.headers["ratelimit-remaining"]))
    assert remaining == sorted(remaining, reverse=True)

    # The bucket refills 20 tokens per second, so a 30-event request soon finds too few.
    for _ in range(5):
        refused = bulk(api, 30)
        if refused.status_code == 429:
            break
        assert refused.status_code == 201, refused.text
    assert refused.status_code == 429, refused.text
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 2
    assert int(refused.headers["ratelimit-remaining"]) < 30
    assert refused.headers["ratelimit-limit"] == "20"
    policy = refused.headers["ratelimit-policy"]
    assert policy.startswith("20;w=1;burst=100;")
    assert 'category="trigger"' in policy
    assert 'cost="bulk"' in policy
    body = refused.json()
    assert body["statusCode"] == 429
    assert body["message"].startswith("API rate limit exceeded for the trigger category")
    assert f"retry after {retry_after} s" in body["message"]

    # Retry-After is when the request fits, which is the protocol this test follows.
    time.sleep(retry_after)
    retried = bulk(api, 30)
    assert retried.status_code == 201, retried.text


def test_bulk_above_capacity_is_400(api: httpx.Client) -> None:
    for _ in range(2):
        response = bulk(api, 101)
        assert response.status_code == 400, response.text
        message = response.json()["message"]
        assert "costs 101 tokens of the trigger rate limit" in message
        assert "bucket holds only 100" in message
        assert "split it into requests of at most 100 events" in message
        assert response.headers["ratelimit-limit"] == "20"


def test_single_trigger_headers(api: httpx.Client) -> None:
    response = api.post("/v1/events/trigger", json={"name": "welcome", "to": "single-user"})
    assert response.status_code in (201, 429), response.text
    for header in HEADERS:
        assert header in response.headers, header
    assert 'category="trigger";cost="single"' in response.headers["ratelimit-policy"]


def test_configuration_category_separate(api: httpx.Client) -> None:
    statuses = []
    for number in range(5):
        response = api.post("/v2/topics", json={"key": f"limits-{number}", "name": "Limits"})
        statuses.append(response.status_code)
        assert 'category="configuration"' in response.headers["ratelimit-policy"]
        if response.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert response.json()["message"].startswith("API rate limit exceeded for the configuration category")

    # Reads are in the global category, whose bucket is untouched.
    listed = api.get("/v2/topics")
    assert listed.status_code == 200, listed.text
    assert 'category="global";cost="single"' in listed.headers["ratelimit-policy"]
    assert listed.headers["ratelimit-limit"] == "300"


def test_unlimited_requests_have_no_headers(limited_server: ServerProcess) -> None:
    session = open_session(limited_server.base_url, "inbox-user")
    inbox = httpx.get(
        f"{limited_server.base_url}/v1/inbox/notifications",
        headers={"Authorization": f"Bearer {session['token']}"},
    )
    anonymous = httpx.get(f"{limited_server.base_url}/v2/subscribers")
    wrong_key = httpx.get(
        f"{limited_server.base_url}/v2/subscribers", headers={"Authorization": "ApiKey wrong"}
    )
    assert inbox.status_code == 200
    assert (anonymous.status_code, wrong_key.status_code) == (401, 401)
    for response in (inbox, anonymous, wrong_key):
        assert "ratelimit-limit" not in response.headers, response.request.url


def test_startup_line_names_limiter(limited_server: ServerProcess) -> None:
    log = limited_server.log()
    assert REDIS_PASSWORD not in log
    assert "API rate limits trigger=100:20,configuration=3:0.5,global=1650:300" in log
    redis_url = limited_server.env.get("NOVULITE_REDIS_URL")
    if redis_url:
        port = urllib.parse.urlsplit(redis_url).port
        assert f"Redis limiter at redis://:***@127.0.0.1:{port}/0" in log
    else:
        assert f"SQLite limiter in {limited_server.data_dir / 'limiter.db'}" in log


def test_off_by_default(shared_api: httpx.Client) -> None:
    response = shared_api.get("/v2/subscribers")
    assert response.status_code == 200
    assert not [name for name in response.headers if name.startswith("ratelimit")]


@pytest.mark.parametrize("mode", LIMITER_MODES)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--rate-limits", "trigger=100:20", "--rate-limit-bulk-cost", "101"],
            "the bulk trigger cost 101 exceeds the trigger capacity 100",
        ),
        (["--rate-limits", "trigger=0:20"], "the trigger capacity must be at least 1 request"),
        (["--rate-limits", "trigger=100"], "must be trigger=CAPACITY:REFILL"),
        (["--rate-limits", "events=10:1"], "unknown category 'events'"),
        (["--rate-limit-bulk-cost", "lots"], "the bulk cost must be 'events' or a whole number"),
    ],
)
def test_invalid_limits_refused_at_start(
    request: pytest.FixtureRequest, tmp_path: Path, mode: str, options: list[str], message: str
) -> None:
    data_dir = tmp_path / "data"
    command = [*server_command(), "--data-dir", str(data_dir), *options]
    if options[0] != "--rate-limits":
        command += ["--rate-limits", "on"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **limiter_env(request, mode)},
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists()


def test_help_describes_rate_limits() -> None:
    result = subprocess.run([*server_command(), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for expected in (
        "--rate-limits",
        "NOVULITE_RATE_LIMITS",
        "CATEGORY=CAPACITY:REFILL",
        "Off by default",
        "--rate-limit-bulk-cost",
        "--redis-url",
        "NOVULITE_REDIS_URL",
    ):
        assert expected in text, expected


def test_limiter_outage_lets_requests_through(tmp_path: Path) -> None:
    redis_process = RedisProcess(tmp_path).start()
    server = start_server(
        tmp_path, args=["--rate-limits", RATE_LIMITS], env={"NOVULITE_REDIS_URL": redis_process.url}
    )
    try:
        with api_client(server) as api:
            assert "ratelimit-limit" in api.get("/v2/subscribers").headers
            redis_process.stop()
            responses = [api.get("/v2/subscribers") for _ in range(2)]
        for response in responses:
            assert response.status_code == 200, response.text
            assert "ratelimit-limit" not in response.headers
        log = server.log()
        assert log.count("the rate limiter failed, so API requests go through unlimited") == 1
        assert REDIS_PASSWORD not in log
    finally:
        server.stop()
        redis_process.stop()
