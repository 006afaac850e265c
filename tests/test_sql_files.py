"""chatcli.sql.files: data files into a SQLite database, with real files on disk."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from chatcli.errors import DataFileError, TableExists
from chatcli.sql.files import (
    BATCH_ROWS,
    SAMPLE_ROWS,
    detect_kind,
    import_file,
    import_files,
    table_name_for,
)


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def types(db: Path, table: str) -> dict[str, str]:
    return {r[1]: r[2] for r in rows(db, f'PRAGMA table_info("{table}")')}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A session database copy that already holds a table."""
    path = tmp_path / "session.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE existing (x INTEGER)")
    conn.execute("INSERT INTO existing VALUES (1)")
    conn.commit()
    conn.close()
    return path


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# Text, encodings, delimiters


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
def test_encodings_are_detected(tmp_path: Path, db: Path, encoding: str) -> None:
    src = write(tmp_path / "cities.csv", "name,n\nZürich,1\nCafé “noir”,2\n", encoding)
    result = import_file(src, db)
    assert rows(db, "SELECT name FROM cities") == [("Zürich",), ("Café “noir”",)]
    assert result.encoding == encoding


def test_latin1_bytes_cp1252_leaves_undefined_still_import(tmp_path: Path, db: Path) -> None:
    src = tmp_path / "odd.csv"
    src.write_bytes(b"a\nx\x81y\n")  # 0x81 is undefined in cp1252: Latin-1 takes it
    assert import_file(src, db).encoding == "latin-1"
    assert rows(db, "SELECT a FROM odd") == [("x\x81y",)]


def test_a_late_non_utf8_byte_restarts_in_the_fallback(tmp_path: Path, db: Path) -> None:
    head = "".join(f"{i},plain\n" for i in range(20_000))  # > the 64 KB looked at first
    src = tmp_path / "late.csv"
    src.write_bytes(b"n,s\n" + head.encode() + "1,café\n".encode("cp1252"))
    result = import_file(src, db)
    assert result.encoding == "cp1252" and result.rows == 20_001
    assert rows(db, "SELECT s FROM late WHERE s <> 'plain'") == [("café",)]


def test_bad_utf16_names_the_line_and_leaves_the_database(tmp_path: Path, db: Path) -> None:
    src = tmp_path / "broken.csv"
    src.write_bytes("a\n1\n2\n".encode("utf-16") + b"\x00\xdc" + "\n".encode("utf-16-le"))
    before = db.read_bytes()
    with pytest.raises(DataFileError, match=r"line 4: not valid utf-16") as e:
        import_file(src, db)
    assert "broken.csv" in str(e.value)
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    ("delimiter", "name"),
    [(";", "semi.csv"), ("\t", "tabs.tsv"), ("\t", "tabs.csv"), ("|", "pipes.csv")],
)
def test_delimiters_are_detected(tmp_path: Path, db: Path, delimiter: str, name: str) -> None:
    text = "".join(delimiter.join(r) + "\n" for r in [["a", "b", "c"], ["1", "x,y", "2.5"]])
    result = import_file(write(tmp_path / name, text), db, table="t")
    assert result.delimiter == delimiter
    assert rows(db, "SELECT * FROM t") == [(1, "x,y", 2.5)]


def test_quoted_newlines_and_quotes_stay_in_their_cell(tmp_path: Path, db: Path) -> None:
    src = write(tmp_path / "q.csv", 'id,text\n1,"two\nlines"\n2,"say ""hi"""\n')
    import_file(src, db)
    assert rows(db, "SELECT text FROM q ORDER BY id") == [("two\nlines",), ('say "hi"',)]


# Types and NULLs


def test_column_types_and_empty_cells(tmp_path: Path, db: Path) -> None:
    src = write(tmp_path / "t.csv", "i,r,s,zip,e\n1,1.5,a,01234,\n-2,,b,00042,\n3,1e3,,12345,\n")
    import_file(src, db)
    assert types(db, "t") == {"i": "INTEGER", "r": "REAL", "s": "TEXT", "zip": "TEXT", "e": "TEXT"}
    assert rows(db, "SELECT * FROM t") == [
        (1, 1.5, "a", "01234", None),
        (-2, None, "b", "00042", None),
        (3, 1000.0, None, "12345", None),
    ]


def test_a_later_zero_padded_value_makes_the_column_text(tmp_path: Path, db: Path) -> None:
    lines = [str(i + 1) for i in range(SAMPLE_ROWS + BATCH_ROWS)] + ["007", "8"]
    import_file(write(tmp_path / "ids.csv", "id\n" + "\n".join(lines) + "\n"), db)
    assert types(db, "ids") == {"id": "TEXT"}
    assert rows(db, "SELECT id FROM ids WHERE rowid IN (1, 6001, 6002)") == [
        ("1",), ("007",), ("8",)
    ]  # fmt: skip


def test_a_later_word_in_a_number_column_is_kept_as_text(tmp_path: Path, db: Path) -> None:
    lines = [f"{i}.5" for i in range(SAMPLE_ROWS)] + ["N/A", "2"]
    import_file(write(tmp_path / "m.csv", "v\n" + "\n".join(lines) + "\n"), db)
    assert types(db, "m") == {"v": "REAL"}
    assert rows(db, f"SELECT v, typeof(v) FROM m WHERE rowid > {SAMPLE_ROWS}") == [
        ("N/A", "text"), (2.0, "real")
    ]  # fmt: skip


def test_long_digit_strings_stay_exact(tmp_path: Path, db: Path) -> None:
    import_file(write(tmp_path / "cards.csv", "n\n12345678901234567890\n+4412345\n"), db)
    assert types(db, "cards") == {"n": "TEXT"}
    assert rows(db, "SELECT n FROM cards") == [("12345678901234567890",), ("+4412345",)]


def test_short_rows_are_padded_and_blank_lines_skipped(tmp_path: Path, db: Path) -> None:
    import_file(write(tmp_path / "p.csv", "a,b,c\n1,2\n\n4,5,6,\n"), db)
    assert rows(db, "SELECT * FROM p") == [(1, 2, None), (4, 5, 6)]


def test_header_names_are_cleaned(tmp_path: Path, db: Path) -> None:
    import_file(write(tmp_path / "h.csv", " Name ,,name,x\n1,2,3,4\n"), db)
    assert list(types(db, "h")) == ["Name", "column_2", "name_2", "x"]


# Bad files: one error naming the file and the line; the database unchanged


def test_a_row_with_too_many_values_names_the_line(tmp_path: Path, db: Path) -> None:
    good = "".join(f'{i},"multi\nline"\n' for i in range(3000))  # line numbers != record numbers
    src = write(tmp_path / "bad.csv", "a,b\n" + good + "1,2,3\n")
    before = db.read_bytes()
    with pytest.raises(DataFileError) as e:
        import_file(src, db)
    assert str(e.value) == f"line {2 + 2 * 3000}: 3 values, but the header has 2 columns ({src})"
    assert db.read_bytes() == before


def test_broken_quoting_names_the_line(tmp_path: Path, db: Path) -> None:
    src = write(tmp_path / "q.csv", 'a,b\n1,2\n3,"x"y\n')
    before = db.read_bytes()
    with pytest.raises(DataFileError, match=r"^line 3: .*q\.csv\)$"):
        import_file(src, db)
    assert db.read_bytes() == before


def test_an_empty_file_is_an_error(tmp_path: Path, db: Path) -> None:
    with pytest.raises(DataFileError, match="empty"):
        import_file(write(tmp_path / "e.csv", ""), db)


def test_a_missing_file_is_an_error_and_creates_no_database(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="no such file"):
        import_file(tmp_path / "nope.csv", tmp_path / "new.db")
    assert not (tmp_path / "new.db").exists()


# JSON and JSON Lines


def test_json_array_of_objects(tmp_path: Path, db: Path) -> None:
    data = [{"id": 1, "name": "a", "tags": ["x"], "ok": True, "v": 1.5},
            {"id": 2, "name": None, "extra": {"k": 1}, "ok": False, "v": 2}]  # fmt: skip
    result = import_file(write(tmp_path / "items.json", json.dumps(data, indent=2)), db)
    assert result.kind == "json"
    assert types(db, "items") == {"id": "INTEGER", "name": "TEXT", "tags": "TEXT",
                                  "ok": "INTEGER", "v": "REAL", "extra": "TEXT"}  # fmt: skip
    assert rows(db, "SELECT * FROM items") == [
        (1, "a", '["x"]', 1, 1.5, None),
        (2, None, None, 0, 2.0, '{"k": 1}'),
    ]


def test_json_array_streams_across_chunks(tmp_path: Path, db: Path) -> None:
    data = [{"n": i, "text": "é" * (i % 300)} for i in range(20_000)]  # several 64 KB chunks
    src = write(tmp_path / "big.json", json.dumps(data))
    assert import_file(src, db).rows == 20_000
    assert rows(db, "SELECT sum(n), max(length(text)) FROM big") == [(199990000, 299)]


def test_a_key_first_seen_late_adds_a_column(tmp_path: Path, db: Path) -> None:
    lines = [json.dumps({"a": i}) for i in range(SAMPLE_ROWS + 10)] + ['{"a": 1, "late": "x"}']
    import_file(write(tmp_path / "l.jsonl", "\n".join(lines) + "\n"), db)
    assert rows(db, "SELECT count(*), count(late) FROM l") == [(SAMPLE_ROWS + 11, 1)]


def test_broken_json_names_the_line(tmp_path: Path, db: Path) -> None:
    src = write(tmp_path / "b.json", '[\n{"a": 1},\n{"a": 2},\n{"a": }\n]\n')
    before = db.read_bytes()
    with pytest.raises(DataFileError, match=r"^line 4: not JSON"):
        import_file(src, db)
    assert db.read_bytes() == before


def test_jsonl_and_its_bad_line(tmp_path: Path, db: Path) -> None:
    ok = write(tmp_path / "events.jsonl", '{"e": "a", "n": 1}\n\n{"e": "b", "n": 2}\n')
    assert import_file(ok, db).rows == 2
    bad = write(tmp_path / "bad.jsonl", '{"e": 1}\n[1, 2]\n')
    with pytest.raises(DataFileError, match=r"^line 2: not a JSON object"):
        import_file(bad, db)


# Parquet


def test_parquet(tmp_path: Path, db: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import datetime

    table = pa.table({
        "id": pa.array([1, 2, None], pa.int64()),
        "price": [1.5, None, 3.25],
        "name": ["a", "b", None],
        "day": [datetime.date(2024, 1, 2), None, datetime.date(2024, 3, 4)],
    })  # fmt: skip
    pq.write_table(table, tmp_path / "sales.parquet", row_group_size=2)
    result = import_file(tmp_path / "sales.parquet", db)
    assert result.kind == "parquet" and result.rows == 3
    assert types(db, "sales") == {"id": "INTEGER", "price": "REAL", "name": "TEXT", "day": "TEXT"}
    assert rows(db, "SELECT * FROM sales") == [
        (1, 1.5, "a", "2024-01-02"), (2, None, "b", None), (None, 3.25, None, "2024-03-04")
    ]  # fmt: skip


def test_not_really_parquet_is_an_error(tmp_path: Path, db: Path) -> None:
    pytest.importorskip("pyarrow")
    src = tmp_path / "fake.parquet"
    src.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataFileError, match="cannot read the Parquet file"):
        import_file(src, db)


# Names, clashes, several files


@pytest.mark.parametrize(("file", "name"), [
    ("2024 sales (final).csv", "t_2024_sales_final"), ("select.csv", "select_table"),
    ("Über-Daten.csv", "über_daten"), ("sqlite_master.csv", "t_sqlite_master"),
    ("---.csv", "data"), ("a.b.c.json", "a_b_c"),
])  # fmt: skip
def test_table_names_need_no_quoting(file: str, name: str) -> None:
    assert table_name_for(file) == name


def test_table_names_avoid_the_taken_ones() -> None:
    assert table_name_for("x/data.csv", ["DATA", "data_2"]) == "data_3"


def test_a_weird_file_name_is_queryable_unquoted(tmp_path: Path, db: Path) -> None:
    src = write(tmp_path / "2024 sales (final).csv", "n\n1\n")
    assert import_file(src, db).table == "t_2024_sales_final"
    assert rows(db, "SELECT n FROM t_2024_sales_final") == [(1,)]


def test_an_existing_table_is_not_replaced_without_asking(tmp_path: Path, db: Path) -> None:
    before = db.read_bytes()
    with pytest.raises(TableExists, match="already has a table named existing"):
        import_file(write(tmp_path / "existing.csv", "x\n2\n"), db)
    assert db.read_bytes() == before


def test_replace_swaps_the_table(tmp_path: Path, db: Path) -> None:
    result = import_file(write(tmp_path / "Existing.csv", "y\nz\n"), db, replace=True)
    assert result.replaced and result.table == "existing"
    assert rows(db, "SELECT * FROM existing") == [("z",)]


def test_several_files_go_into_one_database(tmp_path: Path, db: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "c").mkdir()
    a = write(tmp_path / "a" / "data.csv", "n\n1\n")
    b = write(tmp_path / "b.jsonl", '{"m": 2}\n')
    c = write(tmp_path / "c" / "data.csv", "k\n3\n")
    results = import_files([a, b, c], db)
    assert [r.table for r in results] == ["data", "b", "data_2"]
    assert rows(db, "SELECT name FROM sqlite_schema ORDER BY name") == [
        ("b",), ("data",), ("data_2",), ("existing",)
    ]  # fmt: skip


def test_one_bad_file_among_several_imports_none(tmp_path: Path, db: Path) -> None:
    before = db.read_bytes()
    good = write(tmp_path / "good.csv", "n\n1\n")
    bad = write(tmp_path / "bad.jsonl", "{\n")
    with pytest.raises(DataFileError, match="bad.jsonl"):
        import_files([good, bad], db)
    assert db.read_bytes() == before


def test_a_new_database_is_created(tmp_path: Path) -> None:
    new = tmp_path / "fresh.db"
    import_file(write(tmp_path / "n.csv", "n\n1\n"), new)
    assert rows(new, "SELECT n FROM n") == [(1,)]
    assert rows(new, "PRAGMA journal_mode") == [("delete",)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.db", "n.csv"]  # no temp left


def test_kinds_are_detected_from_content_and_name(tmp_path: Path, db: Path) -> None:
    assert detect_kind(write(tmp_path / "x.txt", ' \n[{"a": 1}]')) == "json"
    assert detect_kind(write(tmp_path / "y.json", '{"a": 1}\n{"a": 2}\n')) == "jsonl"
    assert detect_kind(write(tmp_path / "z.dat", "a,b\n1,2\n")) == "csv"
    assert detect_kind(db) == "sqlite"


def test_a_sqlite_file_is_not_imported_as_data(tmp_path: Path, db: Path) -> None:
    with pytest.raises(DataFileError, match="SQLite database"):
        import_file(db, tmp_path / "other.db")


# Progress and Ctrl-C


def test_progress_reaches_the_total(tmp_path: Path, db: Path) -> None:
    src = write(tmp_path / "p.csv", "n\n" + "".join(f"{i}\n" for i in range(30_000)))
    seen: list[tuple[int, int]] = []
    import_file(src, db, progress=lambda done, total: seen.append((done, total)))
    size = src.stat().st_size
    assert len(seen) > 3 and seen[-1] == (size, size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_ctrl_c_mid_import_leaves_the_database_byte_identical(tmp_path: Path, db: Path) -> None:
    src = write(tmp_path / "p.csv", "n\n" + "".join(f"{i}\n" for i in range(30_000)))
    before = db.read_bytes()
    calls = 0

    def interrupt(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_file(src, db, progress=interrupt)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "session.db"]


# Memory


@pytest.mark.slow
def test_a_large_csv_imports_in_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "big.csv"
    line = '12345,some text here,3.25,,"quoted, with comma",' + "x" * 120 + "\n"
    with open(src, "w") as f:
        f.write("a,b,c,d,e,f\n")
        for _ in range(200_000_000 // len(line) // 1000):
            f.write(line * 1000)
    # VmHWM, the peak of this process's own memory: ru_maxrss would also count the pytest
    # process it was forked from (Linux keeps it across exec)
    script = (
        "import re, sys; from chatcli.sql.files import import_file; "
        "r = import_file(sys.argv[1], sys.argv[2]); "
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
        "print(r.rows, hwm)"
    )
    out = subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "big.db")],
                         capture_output=True, text=True, timeout=600, check=True)  # fmt: skip
    count, peak_kb = map(int, out.stdout.split())
    assert count > 1_000_000
    assert peak_kb < 100 * 1024  # KiB on Linux; the file is 200 MB
