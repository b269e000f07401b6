"""The docs' examples run as written, against throwaway databases: the blocks
tests/docblocks.py assigns to the tests of this file (tests/test_docs_inventory.py
checks that every block has a test)."""

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from skillmeat.core.database import make_engine
from skillmeat.core.database.provision import throwaway_database, upgrade_to_head
from tests.docblocks import ROOT, blocks_for

RUNNER = "tests/test_docs.py::"


def texts(runner: str, lang: str | None = None) -> list[str]:
    """The text of the blocks `runner` claims (of one language)."""
    return [b.text for b in blocks_for(RUNNER + runner) if lang in (None, b.lang)]


@pytest.fixture
def scratch_url(pg_server_url: URL) -> Iterator[str]:
    with throwaway_database(pg_server_url, prefix="skillmeat_docs") as url:
        upgrade_to_head(url)
        yield url.render_as_string(hide_password=False)


def run(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"SKILLMEAT_DATABASE_URL": url}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_usage_example_runs_as_written(scratch_url: str) -> None:
    blocks = texts("test_usage_example_runs_as_written")
    assert blocks, "docs/usage.md has no python example"
    stdout = ""
    for block in blocks:
        result = run([sys.executable, "-c", block], scratch_url)
        assert result.returncode == 0, result.stderr
        stdout += result.stdout
    assert "is already a source of this project" in stdout
    assert "['skills/skill-0', 'skills/skill-1']" in stdout
    assert "is not a source visible to this user" in stdout
    assert "async: sources due for a rescan:" in stdout
    assert "search: [('python-reviewer', " in stdout
    assert "conflict: skill skill-0 -> ['skill-0', 'skill-0-extras']" in stdout
    assert "['https://github.com/Acme/tools', 'https://github.com/acme/more']" in stdout


def test_scans_worker_loop_runs_as_written(scratch_url: str) -> None:
    blocks = texts("test_scans_worker_loop_runs_as_written")
    assert len(blocks) == 1, "docs/scans.md has one python example (the worker loop)"
    result = run([sys.executable, "-c", blocks[0]], scratch_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("scan ") and lines[0].endswith(": 1 new")
    assert lines[1:] == ["succeeded", "1 1.0"]


def test_cli_upgrade_creates_and_migrates_then_current_reports_head(pg_server_url: URL) -> None:
    with throwaway_database(pg_server_url, prefix="skillmeat_cli") as url:
        target = url.set(database=f"{url.database}_new")
        shown = target.render_as_string(hide_password=False)
        try:
            first = run(["skillmeat-db", "upgrade"], shown)
            assert first.returncode == 0, first.stderr
            assert f"created database '{target.database}'" in first.stdout
            again = run(["skillmeat-db", "upgrade"], shown)
            assert "nothing to do" in again.stdout
            current = run(["skillmeat-db", "current"], shown)
            assert "(at head)" in current.stdout
        finally:
            from skillmeat.core.database.provision import drop_database

            drop_database(target)


def test_cli_fails_in_one_line_without_a_traceback() -> None:
    result = run(["skillmeat-db", "current"], "postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert result.returncode == 3  # current: 3 = could not tell
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("skillmeat-db current: cannot use")


def test_demo_shows_isolation_and_cleans_up(scratch_url: str) -> None:
    result = run(["skillmeat-db", "demo"], scratch_url)
    assert result.returncode == 0, result.stderr
    assert "refused: source_id: " in result.stdout and "not a source visible" in result.stdout
    rows = dict(
        (line.split()[0], line.split()[1:])
        for line in result.stdout.splitlines()
        if line.strip().split(" ")[0] in {"alice", "bob", "carol"}
    )
    assert rows["carol"][:2] == ["2", "2"]  # carol views both projects' sources
    assert rows["alice"][:2] == ["1", "1"]
    assert "deleted" in result.stdout
    scan_lines = result.stdout.split("5. A rescan as a background job")[1]
    assert "requested by bob:         scan " in scan_lines and " queued" in scan_lines
    assert "claimed by a worker:      attempt 1" in scan_lines
    assert "completed by the worker:  " in scan_lines
    assert " succeeded by demo-worker" in scan_lines
    assert "scan_state=succeeded" in scan_lines


@pytest.mark.parametrize(
    "url",
    ["garbage", "postgresql+nosuchdriver://postgres@127.0.0.1/x"],
    ids=["unparseable", "unknown-driver"],
)
def test_cli_bad_url_is_one_line(url: str) -> None:
    result = run(["skillmeat-db", "current"], url)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("skillmeat-db current: bad database URL:")


def test_cli_on_a_database_newer_than_the_code(pg_server_url: URL) -> None:
    with throwaway_database(pg_server_url, prefix="skillmeat_cli") as url:
        from sqlalchemy import text
        from sqlalchemy.pool import NullPool

        from skillmeat.core.database import make_engine

        engine = make_engine(url, poolclass=NullPool)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('deadbeef0000')"))
        engine.dispose()
        shown = url.render_as_string(hide_password=False)
        current = run(["skillmeat-db", "current"], shown)
        assert "deadbeef0000 (unknown to this code" in current.stdout
        assert current.returncode == 2
        upgrade = run(["skillmeat-db", "upgrade"], shown)
        assert upgrade.returncode == 1
        assert "Traceback" not in upgrade.stderr
        assert "deadbeef0000" in upgrade.stderr


def test_security_doc_runs_as_written(scratch_url: str, pg_server_url: URL) -> None:
    """docs/security.md: its python, its SQL (as psql would) and its test command."""
    python = texts("test_security_doc_runs_as_written", "python")
    assert len(python) == 3
    outputs = []
    for block in python:
        result = run([sys.executable, "-c", block], scratch_url)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0].strip() == "[]"
    assert outputs[1].startswith("SELECT set_config('skillmeat.user_id', '8a1f0c6e-")

    # The SQL blocks, through psql on the scratch database; the login roles get names
    # of their own (roles are cluster-wide and other runs may share the server).
    suffix = secrets.token_hex(4)
    psql_url = make_url(scratch_url).set(drivername="postgresql")
    sql_blocks = texts("test_security_doc_runs_as_written", "sql")
    assert len(sql_blocks) == 2
    wiring = sql_blocks[0].replace("skillmeat_backend", f"skillmeat_backend_{suffix}")
    # a member whose id the verification block claims without a proof
    seed = (
        "WITH p AS (INSERT INTO projects (name) VALUES ('docs') RETURNING id) "
        "INSERT INTO project_members SELECT id, gen_random_uuid(), 'owner' FROM p"
    )
    try:
        for block in (seed, wiring, sql_blocks[1]):
            result = run(
                [
                    "psql",
                    psql_url.render_as_string(hide_password=False),
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-X",
                    "-q",
                    "-c",
                    block,
                ],
                scratch_url,
            )
            assert result.returncode == 0, result.stderr
        assert re.search(r"\n +0 \| +0 \| +0 \| +0\n", result.stdout), result.stdout
    finally:
        engine = make_engine(pg_server_url, poolclass=NullPool)
        with engine.begin() as conn:
            # every login role the block creates (it once missed the worker's, which leaked)
            for name in re.findall(r"CREATE ROLE (\w+)", wiring):
                conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
        engine.dispose()

    (command,) = texts("test_security_doc_runs_as_written", "sh")
    collected = run(
        [*command.split(), "--collect-only", "-q", "-p", "no:cacheprovider"], scratch_url
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
