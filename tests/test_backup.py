"""`novulite backup` against a running server under load, and the retention purge on its database file."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from novulite.db.fast import db_datetime
from novulite.engine.retention import file_transactions, purge_history
from tests.conftest import start_server
from tests.helpers import create_workflow, poll, read_rows, wait_settled
from tests.pipeline import trigger
from tests.servers import API_KEY, ServerProcess

BACKUP_COMMAND = [sys.executable, "-m", "novulite", "backup"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("backup"))
    yield process
    process.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
    ) as client:
        yield client


def run_backup(server: ServerProcess, target: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BACKUP_COMMAND, str(target), "--data-dir", str(server.data_dir), *options],
        capture_output=True,
        text=True,
        timeout=120,
    )


def database(server: ServerProcess) -> Path:
    return server.data_dir / "novulite.db"


def test_backup_during_trigger_burst(server: ServerProcess, api: httpx.Client, tmp_path: Path) -> None:
    create_workflow(api, "backup-burst")
    for number in range(20):
        trigger(api, "backup-burst", f"backup-{number % 4}", payload={"text": str(number)})
    wait_settled(database(server), timeout=30)

    stop = threading.Event()
    sent_during_backup = []

    def send_burst() -> None:
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
        ) as client:
            while not stop.is_set():
                sent_during_backup.append(
                    trigger(client, "backup-burst", "backup-burst", payload={"text": "x"})
                )

    sender = threading.Thread(target=send_burst)
    sender.start()
    try:
        # Wait for the burst to be under way, then note what was committed before the backup begins.
        while len(sent_during_backup) < 20:
            assert sender.is_alive(), "the trigger burst stopped early"
            stop.wait(0.01)
        committed = {row[0] for row in read_rows(database(server), "SELECT id FROM notification")}
        target = tmp_path / "copy.db"
        result = run_backup(server, target)
    finally:
        stop.set()
        sender.join(timeout=30)

    assert result.returncode == 0, result.stderr
    assert "integrity_check ok" in result.stdout
    assert "notification" in result.stdout
    assert len(sent_during_backup) > 20
    assert not list(tmp_path.glob(".copy.db.*")), "the temporary file was left behind"
    with contextlib.closing(sqlite3.connect(target)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        copied = {row[0] for row in copy.execute("SELECT id FROM notification")}
    assert len(committed) >= 20
    assert committed <= copied


def test_backup_rejects_existing_path(server: ServerProcess, tmp_path: Path) -> None:
    target = tmp_path / "existing.db"
    target.write_bytes(b"keep me")

    refused = run_backup(server, target)

    assert refused.returncode != 0
    assert "already exists; pass --force" in refused.stderr
    assert target.read_bytes() == b"keep me"

    forced = run_backup(server, target, "--force")

    assert forced.returncode == 0, forced.stderr
    with contextlib.closing(sqlite3.connect(target)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_backup_rejects_live_database(server: ServerProcess) -> None:
    before = database(server).stat()

    result = run_backup(server, database(server), "--force")

    assert result.returncode != 0
    assert "is the server's own database file" in result.stderr
    assert database(server).stat().st_ino == before.st_ino


def test_serve_help_names_retention() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "novulite", "serve", "--help"], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0
    assert "--retention-days" in result.stdout
    assert "NOVULITE_RETENTION_DAYS" in result.stdout


def test_backup_unknown_data_dir(tmp_path: Path) -> None:
    result = subprocess.run(
        [*BACKUP_COMMAND, str(tmp_path / "copy.db"), "--data-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "no database at" in result.stderr
    assert not (tmp_path / "copy.db").exists()


def test_backup_unwritable_path(server: ServerProcess, tmp_path: Path) -> None:
    result = run_backup(server, tmp_path / "missing-folder" / "copy.db")

    assert result.returncode != 0
    assert "cannot write in" in result.stderr


def message_ids(path: Path) -> set[str]:
    return {row[0] for row in read_rows(path, "SELECT id FROM message")}


def test_retention_purge_keeps_inbox(server: ServerProcess, api: httpx.Client) -> None:
    create_workflow(api, "retention")
    transactions = [
        trigger(api, "retention", "retention-subscriber", payload={"text": str(n)}) for n in range(6)
    ]
    wait_settled(database(server), timeout=30)
    by_transaction = dict(
        read_rows(
            database(server),
            "SELECT transaction_id, id FROM message WHERE transaction_id IN (?, ?, ?, ?, ?, ?)",
            tuple(transactions),
        )
    )
    old_unread, old_read, old_archived, old_other_channel, old_error, new_read = (
        by_transaction[transaction] for transaction in transactions
    )
    now = dt.datetime.now(dt.UTC)
    with contextlib.closing(sqlite3.connect(database(server), isolation_level=None)) as connection:
        connection.execute("PRAGMA busy_timeout=15000")
        with file_transactions(connection)() as write:
            for message in (old_unread, old_read, old_archived, old_other_channel, old_error):
                write.execute(
                    "UPDATE message SET created_at = datetime(created_at, '-40 days') WHERE id = ?",
                    (message,),
                )
                write.execute(
                    "UPDATE execution_detail SET created_at = datetime(created_at, '-40 days') "
                    "WHERE job_id = (SELECT job_id FROM message WHERE id = ?)",
                    (message,),
                )
            write.execute("UPDATE message SET read = 1 WHERE id IN (?, ?)", (old_read, new_read))
            write.execute("UPDATE message SET archived = 1 WHERE id = ?", (old_archived,))
            # Only in-app steps run here without a provider, so two rows become email messages.
            write.execute(
                "UPDATE message SET channel = 'email' WHERE id IN (?, ?)", (old_other_channel, old_error)
            )
            write.execute("UPDATE message SET status = 'error' WHERE id = ?", (old_error,))
        details_before = read_rows(database(server), "SELECT count(*) FROM execution_detail")[0][0]
        aged_details = read_rows(
            database(server),
            "SELECT count(*) FROM execution_detail WHERE created_at < ?",
            (db_datetime(now - dt.timedelta(days=30)),),
        )[0][0]

        kept_forever = purge_history(file_transactions(connection), now, retention_days=0)
        result = purge_history(file_transactions(connection), now, retention_days=30, batch_size=2)

    assert kept_forever.messages == 0
    assert kept_forever.execution_details == 0
    remaining = message_ids(database(server))
    assert old_read not in remaining
    assert old_archived not in remaining
    assert old_other_channel not in remaining
    assert old_unread in remaining
    assert old_error in remaining
    assert new_read in remaining
    assert result.messages == 3
    assert aged_details >= 5
    assert result.execution_details == aged_details
    details_after = read_rows(database(server), "SELECT count(*) FROM execution_detail")[0][0]
    assert details_after == details_before - aged_details
    assert details_after > 0


def test_restored_copy_serves(server: ServerProcess, api: httpx.Client, tmp_path: Path) -> None:
    create_workflow(api, "restore")
    transaction = trigger(api, "restore", "restore-subscriber", payload={"text": "before"})
    wait_settled(database(server), timeout=30)
    backup = tmp_path / "novulite-backup.db"
    assert run_backup(server, backup).returncode == 0

    # Restore as docs/operations.md describes: the copy becomes novulite.db of an empty data directory.
    restored_root = tmp_path / "restored"
    (restored_root / "data").mkdir(parents=True)
    backup.replace(restored_root / "data" / "novulite.db")
    restored = start_server(restored_root)
    try:
        assert read_rows(
            database(restored), "SELECT count(*) FROM message WHERE transaction_id = ?", (transaction,)
        ) == [(1,)]
        with httpx.Client(
            base_url=restored.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
        ) as restored_api:
            after = trigger(restored_api, "restore", "restore-subscriber", payload={"text": "after"})
        wait_settled(database(restored), timeout=30)
        assert read_rows(
            database(restored), "SELECT count(*) FROM message WHERE transaction_id = ?", (after,)
        ) == [(1,)]
    finally:
        restored.stop()


def test_server_purges_at_start(tmp_path: Path) -> None:
    process = start_server(tmp_path, ["--retention-days", "30"])
    try:
        with httpx.Client(
            base_url=process.base_url, headers={"Authorization": f"ApiKey {API_KEY}"}, timeout=10
        ) as client:
            create_workflow(client, "purge-at-start")
            old = trigger(client, "purge-at-start", "purge-subscriber", payload={"text": "old"})
            new = trigger(client, "purge-at-start", "purge-subscriber", payload={"text": "new"})
        wait_settled(database(process), timeout=30)
    finally:
        process.stop()
    with contextlib.closing(sqlite3.connect(database(process))) as connection, connection:
        connection.execute(
            "UPDATE message SET created_at = datetime(created_at, '-31 days'), read = 1 "
            "WHERE transaction_id = ?",
            (old,),
        )
        connection.execute("UPDATE message SET read = 1 WHERE transaction_id = ?", (new,))

    # The reconciler thread runs its first purge on its first pass, 5 s after the start.
    restarted = start_server(tmp_path, ["--retention-days", "30"])
    try:
        poll(restarted.log, lambda log: "deleted 1 messages" in log, "the purge's log line", timeout=30)
        remaining = read_rows(database(restarted), "SELECT transaction_id FROM message")
    finally:
        restarted.stop()
    assert (new,) in remaining
    assert (old,) not in remaining
