"""The outbound guard: which addresses it refuses, and that it refuses before any connection.

No test here connects anywhere but loopback. Refused destinations are IP literals
or `localhost`, and a loopback listener counts the connections that reach it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from novulite.outbound import GuardedBackend, OutboundRefused, parse_allow_entries, refusal_reason
from tests.helpers import read_rows
from tests.http_stub import HttpStub
from tests.pipeline import finished_jobs, trigger
from tests.servers import API_KEY, ServerProcess, free_port, server_command

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata service"),
    ("fd00:ec2::254", "cloud metadata service"),
    ("169.254.10.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fd12:3456::1", "unique-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("::ffff:10.0.0.1", "embeds 10.0.0.1"),
    ("64:ff9b::7f00:1", "embeds 127.0.0.1"),
    ("2002:c0a8:101::1", "embeds 192.168.1.1"),
    # A documentation range: Python 3.11 calls it private, and later versions only not global.
    ("192.0.2.10", "address"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_non_public_address_refused(address: str, reason: str) -> None:
    found = refusal_reason(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:8.8.8.8"]
)
def test_public_address_allowed(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_allow_entries_parsed() -> None:
    policy = parse_allow_entries(["10.0.0.0/8", " Hooks.Internal. ", "127.0.0.1", "fd00::/8", ""])
    policy.check("anything", ipaddress.ip_address("10.1.2.3"))
    policy.check("hooks.internal", ipaddress.ip_address("192.168.7.7"))
    policy.check("127.0.0.1", ipaddress.ip_address("127.0.0.1"))
    policy.check("x", ipaddress.ip_address("fd00:ec2::254"))
    with pytest.raises(OutboundRefused) as refused:
        policy.check("other.internal", ipaddress.ip_address("192.168.7.7"))
    assert "other.internal (192.168.7.7)" in str(refused.value)
    with pytest.raises(OutboundRefused):
        policy.check("127.0.0.2", ipaddress.ip_address("127.0.0.2"))


@pytest.mark.parametrize("entry", ["not a host!", "10.0.0.0/33", "http://x.example", "a..b"])
def test_invalid_allow_entry_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match="neither a host name nor an address range"):
        parse_allow_entries([entry])


@pytest.fixture
def listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback TCP listener; the list collects every connection it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()
    for connection in accepted:
        connection.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_backend_refuses_before_connecting(host: str, listener: tuple[int, list[socket.socket]]) -> None:
    port, accepted = listener
    backend = GuardedBackend(parse_allow_entries([]))
    with pytest.raises(OutboundRefused, match="loopback"):
        backend.connect_tcp(host, port, timeout=2)
    assert accepted == []


@pytest.mark.parametrize(("host", "allow"), [("127.0.0.1", "127.0.0.0/8"), ("localhost", "localhost")])
def test_backend_connects_when_allowed(
    host: str, allow: str, listener: tuple[int, list[socket.socket]]
) -> None:
    port, _ = listener
    backend = GuardedBackend(parse_allow_entries([allow]))
    stream = backend.connect_tcp(host, port, timeout=2)
    try:
        peer = stream.get_extra_info("socket").getpeername()
        assert peer[:2] == ("127.0.0.1", port)
    finally:
        stream.close()


def test_server_refuses_private_destinations(tmp_path: Path) -> None:
    stub = HttpStub().start()
    server = ServerProcess(
        data_dir=tmp_path / "data",
        port=free_port(),
        command=server_command(),
        log_path=tmp_path / "server.log",
    ).start()
    headers = {"Authorization": f"ApiKey {API_KEY}"}
    destinations = {
        "private": ("http://10.0.0.1/hook", "10.0.0.1"),
        "metadata": ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        "metadata-v6": ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
        "loopback": (stub.url("/hook"), "127.0.0.1"),
        "localhost": (f"http://localhost:{stub.port}/hook", "127.0.0.1"),
    }
    try:
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as api:
            steps = [
                {
                    "name": name,
                    "stepId": name,
                    "type": "http_request",
                    "controlValues": {"method": "POST", "url": url, "continueOnFailure": True},
                }
                for name, (url, _) in destinations.items()
            ]
            response = api.post(
                "/v2/workflows", json={"name": "Guarded", "workflowId": "guarded", "steps": steps}
            )
            assert response.status_code == 201, response.text
            transaction_id = trigger(api, "guarded", "alice")

        jobs = finished_jobs(server, transaction_id, len(destinations))
        rows = dict(
            read_rows(
                server.data_dir / "novulite.db",
                "SELECT step_id, json_extract(error, '$.message') FROM job WHERE transaction_id = ?",
                (transaction_id,),
            )
        )
        for name, (_, address) in destinations.items():
            assert jobs[name].status == "failed", name
            message = rows[name]
            assert "refused to connect" in message, message
            assert address in message, message
            assert "NOVULITE_OUTBOUND_ALLOW" in message, message
            assert "Attempt 1 failed; retrying" not in jobs[name].details
        assert stub.connections == 0
    finally:
        server.stop()
        stub.stop()


def test_invalid_allow_setting_stops_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "novulite", "serve", "--data-dir", str(tmp_path), "--port", str(free_port())],
        env=dict(os.environ, NOVULITE_OUTBOUND_ALLOW="127.0.0.1,not a host!"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "'not a host!' is neither a host name nor an address range" in result.stderr
    assert not (tmp_path / "novulite.db").exists()
