"""GET /v1/health-check against a real server, with and without Redis."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import start_server
from tests.servers import REDIS_PASSWORD, RedisProcess, ServerProcess


def _health(server: ServerProcess) -> httpx.Response:
    return httpx.get(f"{server.base_url}/v1/health-check", timeout=10)


def test_health_without_redis(server: ServerProcess) -> None:
    response = _health(server)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["error"] == {}
    assert body["info"]["db"] == {"status": "up"}
    assert body["info"]["queues"]["status"] == "up"
    assert all(count == 0 for count in body["info"]["queues"]["pending"].values())
    assert body["info"]["sockets"] == {"status": "up", "open": 0}
    assert "redis" not in body["details"]


def test_health_reports_redis_outage(tmp_path: Path) -> None:
    redis_server = RedisProcess(tmp_path).start()
    server = start_server(tmp_path, env={"NOVULITE_REDIS_URL": redis_server.url})
    try:
        healthy = _health(server)
        assert healthy.status_code == 200, healthy.text
        assert healthy.json()["info"]["redis"]["status"] == "up"

        redis_server.stop()
        down = _health(server)
        assert down.status_code == 503, down.text
        body = down.json()
        assert body["status"] == "error"
        # The queues live in the same Redis, so they are down with it.
        assert sorted(body["error"]) == ["queues", "redis"]
        assert body["error"]["redis"]["status"] == "down"
        assert body["error"]["redis"]["message"]
        assert body["details"]["redis"] == body["error"]["redis"]
        assert body["error"]["queues"]["message"].startswith("ConnectionError")
        assert body["info"]["db"] == {"status": "up"}
        assert REDIS_PASSWORD not in down.text

        redis_server.start()
        recovered = _health(server)
        assert recovered.status_code == 200, recovered.text
        assert recovered.json()["error"] == {}
    finally:
        server.stop()
        redis_server.stop()
