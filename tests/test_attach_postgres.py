"""Attaching a live PostgreSQL database end to end: the installed chatcli, a real server the tests
start (tests/pg_server.py) and the loopback model server scripted to query it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_clean_error, only_session, tree_digest
from fake_openai import FakeOpenAI
from pg_server import PgSample, pg_fixture  # noqa: F401  (the session fixture `pg`)

pytestmark = pytest.mark.realserver


@pytest.fixture
def pg_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The chatcli environment with no password anywhere libpq looks (tests add PGPASSWORD)."""
    clean = {k: v for k, v in env.items() if not k.startswith("PG")}
    clean["PGPASSFILE"] = str(tmp_path / "no-pgpass")
    return clean


def _tree_text(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def _tool_results(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def test_a_url_with_a_password_is_stored_without_it(
    root: Path, pg: PgSample, pg_env: dict[str, str], chatcli
) -> None:
    assert chatcli("new", input="hi\n", **pg_env).returncode == 0
    sid = only_session(root)
    url = pg.url(pg.reader, with_password=True)
    result = chatcli("attach-db", sid, url, **pg_env)
    assert result.returncode == 0, result.stderr
    assert f"attached {pg.url(pg.reader)} to session {sid}" in result.stdout
    assert result.stderr.count("password in the URL was not saved") == 1
    assert "PGPASSWORD" in result.stderr and "pgpass" in result.stderr
    meta = json.loads((root / "meta" / f"{sid}.json").read_text())
    assert meta["db_url"] == pg.url(pg.reader)
    assert pg.reader_password.encode() not in _tree_text(root)
    assert pg.reader_password not in result.stdout + result.stderr


def test_a_new_postgres_session_left_at_once_is_kept(
    root: Path, pg: PgSample, pg_env: dict[str, str], chatcli
) -> None:
    """`new --db postgresql://...` then Ctrl-D: the URL is the session's data, not nothing."""
    env = {**pg_env, "PGPASSWORD": pg.reader_password}
    result = chatcli("new", "--db", pg.url(pg.reader), input="", **env)
    assert result.returncode == 0, result.stderr
    sid = only_session(root)
    meta = json.loads((root / "meta" / f"{sid}.json").read_text())
    assert meta["db_url"] == pg.url(pg.reader)


def test_the_model_queries_postgres_in_its_dialect(
    root: Path, pg: PgSample, pg_env: dict[str, str], server: FakeOpenAI, chatcli
) -> None:
    server.tool_calls([("run_sql", {"query": "SELECT count(*) AS n FROM orders"})])
    server.reply("4 orders")
    result = chatcli(
        "new", "--db", pg.url(pg.reader), input="how many orders?\n",
        PGPASSWORD=pg.reader_password, **pg_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, second = server.requests
    system = first["messages"][0]["content"]
    assert "attached a PostgreSQL database" in system and "SQLite" not in system
    assert "orders(" in system and "customers(" in system
    assert all("PostgreSQL" in t["function"]["description"] for t in first["tools"])
    assert _tool_results(second) == ["n\n4"]
    assert not (root / "db" / f"{only_session(root)}.db").exists()  # nothing copied
    assert "safer" not in result.stderr  # a SELECT-only role: no warning


def test_a_fork_stays_attached_to_the_same_database(
    root: Path, pg: PgSample, pg_env: dict[str, str], server: FakeOpenAI, chatcli
) -> None:
    env = {**pg_env, "PGPASSWORD": pg.reader_password}
    server.reply("ready")
    assert chatcli("new", "--db", pg.url(pg.reader), input="hi\n", **env).returncode == 0
    sid = only_session(root)
    before = tree_digest(root, ("memory", "meta"), dotfiles=False)
    result = chatcli("fork", sid, **env)
    assert result.returncode == 0, result.stderr
    assert f"attached to the same database, {pg.url(pg.reader)}" in result.stderr
    forked = result.stdout.split(" into ")[1].split()[0]
    assert json.loads((root / "meta" / f"{forked}.json").read_text())["db_url"] == pg.url(pg.reader)
    server.tool_calls([("run_sql", {"query": "SELECT count(*) AS n FROM orders"})])
    server.reply("4 orders")
    asked = chatcli("ask", "-s", forked, "how many orders?", **env)
    assert asked.returncode == 0, asked.stderr
    assert _tool_results(server.requests[-1]) == ["n\n4"]
    assert not (root / "db").exists() or not list((root / "db").iterdir())  # nothing copied
    after = tree_digest(root, ("memory", "meta"), dotfiles=False)
    assert {k: v for k, v in after.items() if sid in k} == before  # the original only read


HOSTILE = {
    "commit then drop": "COMMIT; DROP TABLE orders",
    "copy to program": "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "read write": "SET TRANSACTION READ WRITE",
    "sleep": "SELECT pg_sleep(30)",
    "delete": "DELETE FROM orders",
}


def test_hostile_statements_from_the_model_and_sql_change_nothing(
    root: Path, tmp_path: Path, pg: PgSample, pg_env: dict[str, str], server: FakeOpenAI, chatcli
) -> None:
    """As the owner (a role that can write): through the model's run_sql and through /sql, each
    statement fails with one line, the chat goes on, and a second connection sees no change."""
    marker = tmp_path / "pwned"
    statements = [q.format(marker=marker) for q in HOSTILE.values()]
    with pg.admin() as admin:
        before = pg.state(admin)
    for query in statements:
        server.tool_calls([("run_sql", {"query": query})])
        server.reply("done")
    lines = "".join(f"try {i}\n" for i in range(len(statements)))
    lines += "".join(f"/sql {q}\n" for q in statements)
    result = chatcli(
        "new", "--db", pg.url(pg.owner), input=lines,
        **{**pg_env, "PGPASSWORD": pg.owner_password, "CHATCLI_SQL_TIMEOUT": "1"},
    )  # fmt: skip
    assert "Traceback" not in result.stderr
    results = _tool_results(server.requests[-1])  # the whole history: every call's result
    assert len(results) == len(statements) and all(r.startswith("error: ") for r in results)
    assert "time limit" in results[3] or "1 s" in results[3], results[3]
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("chatcli: error:")]
    assert len(errors) == len(statements), result.stderr
    assert result.stderr.count("a role granted only SELECT is safer") == 1
    assert not marker.exists()
    with pg.admin() as admin:
        assert pg.state(admin) == before


@pytest.fixture
def superuser(pg: PgSample) -> tuple[str, str]:
    name, password = "chat_super", "super-secret-1"
    with pg.admin() as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if not exists:
            admin.execute(f"CREATE ROLE {name} SUPERUSER LOGIN PASSWORD '{password}'")
    return name, password


def test_a_superuser_is_refused_and_nothing_is_stored(
    root: Path, pg: PgSample, pg_env: dict[str, str], chatcli, superuser: tuple[str, str]
) -> None:
    name, password = superuser
    assert chatcli("new", input="hi\n", **pg_env).returncode == 0
    sid = only_session(root)
    before = tree_digest(root)
    url = pg.server.url(name, pg.dbname)
    result = chatcli("attach-db", sid, url, PGPASSWORD=password, **pg_env)
    assert result.returncode != 0
    assert_clean_error(result.stderr)
    assert "superuser" in result.stderr and "pg_allow_superuser" in result.stderr
    assert tree_digest(root) == before


def test_a_superuser_is_allowed_by_the_setting(
    root: Path, pg: PgSample, pg_env: dict[str, str], chatcli, superuser: tuple[str, str]
) -> None:
    name, password = superuser
    assert chatcli("new", input="hi\n", **pg_env).returncode == 0
    sid = only_session(root)
    url = pg.server.url(name, pg.dbname)
    result = chatcli(
        "attach-db", sid, url, PGPASSWORD=password, CHATCLI_PG_ALLOW_SUPERUSER="1", **pg_env
    )
    assert result.returncode == 0, result.stderr
    assert "superuser" in result.stderr  # said once, even when allowed


def test_a_failed_login_is_one_line_and_the_chat_goes_on(
    root: Path, pg: PgSample, pg_env: dict[str, str], chatcli
) -> None:
    assert chatcli("new", input="hi\n", **pg_env).returncode == 0
    sid = only_session(root)
    assert chatcli(
        "attach-db", sid, pg.url(pg.reader), PGPASSWORD=pg.reader_password, **pg_env
    ).returncode == 0  # fmt: skip
    result = chatcli(
        "resume", sid, input="/sql SELECT 1\n/sql SELECT 2\n/title still here\n",
        PGPASSWORD="wrong", **pg_env,
    )  # fmt: skip
    assert result.returncode == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("chatcli: error:")]
    assert len(errors) == 2 and all("cannot log in to PostgreSQL" in e for e in errors), errors
    assert "title: still here" in result.stderr


def test_files_cannot_go_into_a_postgres_session(
    root: Path, tmp_path: Path, pg: PgSample, pg_env: dict[str, str], chatcli
) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("x\n1\n")
    assert chatcli("new", input="hi\n", **pg_env).returncode == 0
    sid = only_session(root)
    assert chatcli(
        "attach-db", sid, pg.url(pg.reader), PGPASSWORD=pg.reader_password, **pg_env
    ).returncode == 0  # fmt: skip
    before = tree_digest(root)
    result = chatcli("attach-db", sid, str(csv), **pg_env)
    assert result.returncode != 0
    assert_clean_error(result.stderr)
    assert "PostgreSQL" in result.stderr
    assert tree_digest(root) == before
