"""The command line: help text and start-up failures that must leave nothing behind."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.servers import server_command


def test_busy_port_creates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*server_command(), "--port", str(port), "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "secret API key" not in result.stdout
    assert not (data_dir / "novulite.db").exists()


def test_serve_help_names_variables() -> None:
    result = subprocess.run([*server_command(), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for variable in ["NOVULITE_HOST", "NOVULITE_PORT", "NOVULITE_DATA_DIR", "NOVULITE_API_KEY"]:
        assert variable in result.stdout, variable
