"""File primitives (chatcli/store/files.py): private files, regular-file reads, atomic writes."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from chatcli.store.files import NotRegularFile, atomic_write, create_private_file, read_regular


def test_a_created_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        create_private_file(tmp_path / "cache.sqlite")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cache.sqlite").stat().st_mode) == 0o600


def test_an_existing_file_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"kept")
    create_private_file(path)
    assert path.read_bytes() == b"kept"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_regular(fifo)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "blocked on the FIFO"
    assert isinstance(outcome[0], NotRegularFile) and outcome[0].kind == "a named pipe (FIFO)"


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotRegularFile, match="is a folder"):
        read_regular(tmp_path)


def test_a_regular_file_is_read_whole_or_its_first_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"SQLite format 3\0rest")
    assert read_regular(path) == b"SQLite format 3\0rest"
    assert read_regular(path, 16) == b"SQLite format 3\0"


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_bytes(b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.json"]
