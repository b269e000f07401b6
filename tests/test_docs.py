"""The docs' examples run as written, against throwaway databases: the blocks
tests/docblocks.py assigns to the tests of this file (tests/test_docs_inventory.py
checks that every block has a test)."""

import os
import re
import secrets
import shlex
import site
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from skillmeat.core.database import make_engine
from skillmeat.core.database.migrations import SchemaState, head_revision, schema_status
from skillmeat.core.database.provision import (
    database_exists,
    drop_database,
    throwaway_database,
    upgrade_to_head,
)
from tests.doc_commands import docs_database, docs_server, shell
from tests.docblocks import ROOT, blocks_for, parse

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
    """docs/security.md: its python and its SQL (as psql would)."""
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


# --- shell commands, SQL and the pytest commands -----------------------------------


def collect(command: str) -> list[str]:
    """The test ids a pytest command of the docs selects (collected, not run)."""
    result = shell(f"{command} --collect-only -q -p no:cacheprovider", url="")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_pytest_commands_collect_what_they_say() -> None:
    """docs/migrations.md's and docs/security.md's pytest commands, collected only: this
    suite runs the tests they select, so running them again would only double it. What
    is checked is that each command selects those tests from the repository root, and
    that tests/conftest.py brings in pytest-alembic's tests, as docs/migrations.md says."""
    blocks = blocks_for(RUNNER + "test_pytest_commands_collect_what_they_say")
    assert blocks
    for block in blocks:
        for command in block.commands():
            assert command.startswith("pytest "), command
            collected = collect(command)
            for path in command.split()[1:]:
                assert any(test.startswith(f"{path}::") for test in collected), (command, path)
            if block.section == "How reversibility is tested":
                alembic = [test for test in collected if "::pytest-alembic::" in test]
                assert "tests/conftest.py::pytest-alembic::test_up_down_consistency" in alembic, (
                    f"{command}: collects no pytest-alembic test"
                )


@pytest.mark.packaging
def test_readme_quickstart(pg_server_url: URL, tmp_path: Path) -> None:
    """The README's quickstart in a fresh venv: `pip install -e ".[dev]"` installs this
    checkout and `skillmeat-db upgrade` creates and migrates the database of
    SKILLMEAT_DATABASE_URL (a new one on the test server); `pytest` is collected (this
    suite is that run). Offline: the venv borrows this environment's packages through a
    .pth line, and pip neither reads an index nor builds in isolation."""
    (block,) = blocks_for(RUNNER + "test_readme_quickstart")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    offline = {
        "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PIP_NO_INDEX": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip reads "0" as: no isolation
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    with throwaway_database(pg_server_url, prefix="skillmeat_quickstart") as server:
        target = server.set(database=f"{server.database}_new")
        try:
            for command in block.commands():
                if command.startswith("pytest"):
                    collected = collect(command)
                    files = {test.split("::")[0] for test in collected}
                    assert files >= {
                        p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("test_*.py")
                    }
                    continue
                result = shell(command, url=target, env=offline)
                assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
                assert f"created database '{target.database}'" in result.stdout
                assert f"-> {head_revision()} (head)" in result.stdout
            assert (env_dir / "bin" / "skillmeat-db").exists()
        finally:
            drop_database(target)


def addressed(command: str, server: URL) -> URL | None:
    """The database a command names (a URL, or psql's -d), if it names one."""
    found = re.search(r"(postgres(?:ql)?(?:\+psycopg)?://\S+)|-d (\w+)", command)
    if not found:
        return None
    if found[2]:
        return server.set(database=found[2])
    return make_url(re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", found[1]))


def test_database_commands(pg_server_url: URL) -> None:
    """The README's and docs/migrations.md's deploy commands and docs/schema.md's psql, as
    written. SKILLMEAT_DATABASE_URL names a database that does not exist yet (so the
    first `skillmeat-db upgrade` creates it); commands naming `skillmeat` read the docs'
    database (created at head for the test when it is missing)."""
    server = docs_server(pg_server_url)
    commands = [
        line for b in blocks_for(RUNNER + "test_database_commands") for line in b.commands()
    ]
    assert any(c.startswith("skillmeat-db upgrade") for c in commands)
    with (
        throwaway_database(server, prefix="skillmeat_docs") as spare,
        docs_database(server, "skillmeat"),
    ):
        fresh = spare.set(database=f"{spare.database}_new")
        try:
            outputs = {}
            for command in commands:
                result = shell(command, url=fresh)
                expected = 0
                if re.search(r"\bskillmeat-db\b.* current\b", command):
                    target = addressed(command, server) or fresh
                    assert database_exists(target), f"{command}: no database {target.database}"
                    state = schema_status(target).state
                    expected = {SchemaState.AT_HEAD: 0, SchemaState.UNKNOWN: 2}.get(state, 1)
                    assert result.stdout.startswith(f"{target.database}: revision "), result
                assert result.returncode == expected, (command, result.stdout, result.stderr)
                assert "Traceback" not in result.stderr, result.stderr
                outputs[command] = result.stdout
        finally:
            drop_database(fresh)
    upgrade = next(out for c, out in outputs.items() if c.startswith("skillmeat-db upgrade"))
    assert f"created database '{fresh.database}'" in upgrade
    assert head_revision() in next(out for c, out in outputs.items() if "alembic history" in c)
    # docs/schema.md: "(`enum_eq`, `numeric_ge`: f; the others: t.)"
    (leakproof,) = [out for c, out in outputs.items() if "proleakproof" in c]
    rows = dict(re.findall(r"^ *(\w+) +\| ([tf])$", leakproof, flags=re.M))
    assert rows == {
        "enum_eq": "f",
        "numeric_ge": "f",
        "texteq": "t",
        "text_ge": "t",
        "float8ge": "t",
        "uuid_eq": "t",
        "timestamptz_lt": "t",
    }, leakproof


def test_token_keys_command() -> None:
    """docs/security.md's key command yields a SKILLMEAT_TOKEN_KEYS the library accepts."""
    (block,) = blocks_for(RUNNER + "test_token_keys_command")
    check = "from skillmeat.core.crypto import configured_keyring; print(configured_keyring())"
    result = shell(f"{block.text}{sys.executable} -c {shlex.quote(check)}", url="")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "TokenKeyring(key_ids=['k1'])\n"


def test_scaling_readiness_query(scratch_url: str) -> None:
    """docs/scaling.md's readiness query, through psql on a database at head: its result is
    the one the page shows, and names exactly the constraints its table would change."""
    (block,) = blocks_for(RUNNER + "test_scaling_readiness_query")
    psql_url = make_url(scratch_url).set(drivername="postgresql")
    result = subprocess.run(
        [
            "psql",
            psql_url.render_as_string(hide_password=False),
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            block.text,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    page = parse(block.doc)
    shown = page[page.index(block) + 1]
    assert shown.lang == "text", f"{block}: the result belongs in the ```text block after it"
    got = [line.rstrip() for line in result.stdout.strip("\n").splitlines()]
    assert got == shown.text.strip("\n").splitlines(), result.stdout

    # every constraint it names is one the page's table changes, and the other way round
    text = (ROOT / block.doc).read_text()
    table = text[text.index("### Constraint changes") : text.index("### Readiness")]
    changed = set()
    for row in re.findall(r"^\| (\w+) \| (.*) \| (.*) \|$", table, flags=re.M):
        if not row[2].startswith("unchanged"):
            changed |= set(re.findall(r"`((?:pk|uq|fk)_\w+)`", row[1]))
    named = {line.split("|")[2].strip() for line in got[2:-1]} - {""}
    assert changed == named
