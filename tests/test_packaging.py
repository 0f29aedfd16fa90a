"""The wheel and the container image definition, checked the way a newcomer would install them.

The slow test builds the wheel, installs it with pip into a new virtual environment and starts
`novulite serve` from outside the repository, so templates, static files and migrations can only
come from the installed package.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.servers import ServerProcess, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = REPO_ROOT / "Containerfile"

# Top-level source folders and where the wheel puts their files (pyproject's force-include).
WHEEL_LOCATIONS = {
    "novulite/": "novulite/",
    "templates/": "novulite/templates/",
    "static/": "novulite/static/",
}
# Folders that are never shipped, so files in them need not be in the wheel.
UNSHIPPED_FOLDERS = ("tests/", "bench/", "docs/", ".ci/")

BUILD_SECONDS = 120
INSTALL_SECONDS = 150
INSTALLED_STARTUP_SECONDS = 120.0
CSRF_FIELD = "_csrf_token"  # Litestar's CSRF middleware reads the token from this form field.


def _tracked_files(*patterns: str) -> list[str]:
    """Return the paths that git tracks under the repository root, matching `patterns`."""
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "--", *patterns],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def _wheel_path(source_path: str) -> str | None:
    """Map a source path to its path inside the wheel, or None for a folder the wheel does not ship."""
    for source_prefix, wheel_prefix in WHEEL_LOCATIONS.items():
        if source_path.startswith(source_prefix):
            return wheel_prefix + source_path.removeprefix(source_prefix)
    return None


def _run(command: list[str], timeout: float, cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{shlex.join(command)} failed with exit code {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from the source tree with `python -m build --wheel` and return its path."""
    out_dir = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out_dir), str(REPO_ROOT)],
        BUILD_SECONDS,
        cwd=out_dir,
    )
    wheels = sorted(out_dir.glob("novulite-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out_dir}, found {wheels}"
    return wheels[0]


@pytest.mark.slow
def test_wheel_ships_package_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    for required in (
        "novulite/templates/admin/login.html",
        "novulite/static/admin.css",
        "novulite/db/migrations/env.py",
    ):
        assert required in names, f"{required} is missing from {wheel.name}"

    versions = _tracked_files("novulite/db/migrations/versions/*.py")
    assert versions, "git lists no migration version files under novulite/db/migrations/versions"
    for path in versions:
        assert path in names, f"migration {path} is missing from {wheel.name}"

    # Every template and static file, not only the two above, because the admin pages load them by name.
    for path in _tracked_files("templates", "static"):
        assert _wheel_path(path) in names, f"{path} is missing from {wheel.name} as {_wheel_path(path)}"

    # Lua scripts must ship inside the package, because the Redis limiter reads them at import time.
    for path in _tracked_files("*.lua"):
        if path.startswith(UNSHIPPED_FOLDERS):
            continue
        location = _wheel_path(path)
        assert location is not None, (
            f"{path} lies outside the folders the wheel ships: {list(WHEEL_LOCATIONS)}"
        )
        assert location in names, f"{path} is missing from {wheel.name} as {location}"


@pytest.fixture(scope="module")
def installed_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Create a new virtual environment, pip-install the wheel and its dependencies, and return the venv.

    The running pip installs into the new environment (`--python`, pip 22.3 or later), so no pip is
    bootstrapped there, and `--no-compile` skips writing bytecode for every dependency. Together they
    cut this step from 26 s to 12 s on a busy 2-vCPU machine. The server compiles what it imports.
    """
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], INSTALL_SECONDS, cwd=venv)
    _run(
        [
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")),
            *("install", "--no-input", "--no-compile", str(wheel)),
        ],
        INSTALL_SECONDS,
        cwd=venv,
    )
    return venv


@pytest.fixture
def installed_server(
    installed_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServerProcess]:
    """Start the installed `novulite serve` with a working directory outside the repository."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    # The child inherits both, so nothing can be imported or read through the source tree.
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("PYTHONPATH", raising=False)

    server = ServerProcess(
        data_dir=tmp_path / "data",
        port=free_port(),
        command=[str(installed_venv / "bin" / "novulite"), "serve"],
        log_path=tmp_path / "server.log",
        # The wheel was installed without bytecode, so the first start compiles every module it imports.
        startup_seconds=INSTALLED_STARTUP_SECONDS,
    ).start()
    yield server
    server.stop()


class _FormInputs(HTMLParser):
    """Collect the attributes of every <input> inside a <form>."""

    def __init__(self) -> None:
        super().__init__()
        self.form_count = 0
        self.inputs: list[dict[str, str | None]] = []
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self.form_count += 1
            self._in_form = True
        elif tag == "input" and self._in_form:
            self.inputs.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


@pytest.mark.slow
def test_installed_wheel_serves_admin(installed_venv: Path, installed_server: ServerProcess) -> None:
    located = subprocess.run(
        [str(installed_venv / "bin" / "python"), "-c", "import novulite; print(novulite.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    module_file = Path(located.stdout.strip())
    assert module_file.is_relative_to(installed_venv), f"novulite was imported from {module_file}"

    with httpx.Client(base_url=installed_server.base_url, timeout=10) as client:
        root = client.get("/", follow_redirects=False)
        assert root.is_redirect, f"GET / returned {root.status_code}"
        assert root.headers["location"] == "/admin/"

        login = client.get("/admin/login")
        assert login.status_code == 200, login.text
        assert login.headers["content-type"].startswith("text/html")
        form = _FormInputs()
        form.feed(login.text)
        assert form.form_count == 1
        fields = {attrs.get("name"): attrs for attrs in form.inputs}
        assert "username" in fields
        assert "password" in fields
        assert fields["password"].get("type") == "password"
        assert CSRF_FIELD in fields, f"no CSRF input in the sign-in form: {form.inputs}"
        assert fields[CSRF_FIELD].get("type") == "hidden"
        assert fields[CSRF_FIELD].get("value")

        stylesheet = client.get("/static/admin.css")
        assert stylesheet.status_code == 200
        assert stylesheet.headers["content-type"].startswith("text/css")
        assert stylesheet.text == (REPO_ROOT / "static" / "admin.css").read_text()

    elapsed = installed_server.terminate()
    assert elapsed < 10
    # Uvicorn (0.55 here) shuts down cleanly, then re-raises the SIGTERM it caught, so the status is -15.
    assert installed_server.process is not None
    assert installed_server.process.returncode in (0, -signal.SIGTERM), installed_server.log()
    assert "Application shutdown complete." in installed_server.log()


def _containerfile_instructions() -> list[tuple[str, str]]:
    """Parse the Containerfile into (INSTRUCTION, arguments) pairs, joining continued lines."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw_line in CONTAINERFILE.read_text().splitlines():
        line = raw_line.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Containerfile ends with a continued line"
    return instructions


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_containerfile_image_settings() -> None:
    instructions = _containerfile_instructions()
    final = _final_stage(instructions)

    bases = [arguments.split()[0] for keyword, arguments in instructions if keyword == "FROM"]
    assert len(bases) >= 2, f"expected a builder stage and a final stage, found {bases}"
    for base in bases:
        assert base == "python:3.11-slim", f"base image {base} is not python:3.11-slim"

    builder_runs = " ".join(
        arguments for keyword, arguments in instructions[: -len(final)] if keyword == "RUN"
    )
    assert "-m build --wheel" in builder_runs
    final_runs = " ".join(arguments for keyword, arguments in final if keyword == "RUN")
    assert any(keyword == "COPY" and "--from=" in arguments for keyword, arguments in final)
    assert "pip install" in final_runs
    assert ".whl" in final_runs

    assert "--uid 10001" in final_runs
    assert "--gid 10001" in final_runs
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users, "the final stage sets no USER, so it runs as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"}
    assert user == "10001"
    assert group in {"", "10001"}

    env = " ".join(arguments for keyword, arguments in final if keyword == "ENV").split()
    assert "NOVULITE_DATA_DIR=/data" in env
    assert "PYTHONUNBUFFERED=1" in env

    volumes = [arguments for keyword, arguments in final if keyword == "VOLUME"]
    assert volumes in (["/data"], ['["/data"]'])
    # Per the Dockerfile reference, build steps after VOLUME that change the volume are discarded.
    volume_index = final.index(("VOLUME", volumes[0]))
    chowns = [
        i
        for i, (keyword, arguments) in enumerate(final)
        if keyword == "RUN" and "10001:10001 /data" in arguments
    ]
    assert chowns, "no RUN gives /data to 10001:10001"
    assert chowns[0] < volume_index

    assert ("EXPOSE", "8000") in final

    healthchecks = [arguments for keyword, arguments in final if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "urllib.request" in healthchecks[0]
    assert "http://127.0.0.1:8000/v1/health-check" in healthchecks[0]

    commands = [arguments for keyword, arguments in final if keyword == "CMD"]
    assert len(commands) == 1
    assert json.loads(commands[0]) == ["novulite", "serve", "--host", "0.0.0.0", "--port", "8000"]
