"""The schema's own rules, exercised with plain SQL against the migrated database.

Each refused statement runs in a savepoint (an error aborts the transaction) and
is identified by its SQLSTATE and by the constraint, or column, PostgreSQL names.
"""

import datetime as dt
import itertools
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from _pytest.mark import ParameterSet
from sqlalchemy import Connection, Row, text
from sqlalchemy.exc import IntegrityError

from skillmeat.core.models import ArtifactType, CatalogStatus, MemberRole, TrustLevel, Visibility

CHECK_VIOLATION = "23514"
UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
NOT_NULL_VIOLATION = "23502"

_serial = itertools.count(1)


@dataclass(frozen=True)
class Sql:
    """A SQL expression inlined into the INSERT (e.g. a cast such as 'NaN'::float8), not bound."""

    expr: str

    def __repr__(self) -> str:
        return self.expr


def insert(connection: Connection, table: str, values: dict[str, object]) -> Row[Any]:
    columns = ", ".join(values)
    exprs = ", ".join(v.expr if isinstance(v, Sql) else f":{k}" for k, v in values.items())
    params = {k: v for k, v in values.items() if not isinstance(v, Sql)}
    sql = f"INSERT INTO {table} ({columns}) VALUES ({exprs}) RETURNING *"
    return connection.execute(text(sql), params).one()


def insert_project(connection: Connection, **overrides: object) -> Row[Any]:
    return insert(connection, "projects", {"name": f"Project {next(_serial)}", **overrides})


def insert_member(connection: Connection, **overrides: object) -> Row[Any]:
    values = {"user_id": uuid.uuid4(), "role": "viewer", **overrides}
    if "project_id" not in values:
        values["project_id"] = insert_project(connection).id
    return insert(connection, "project_members", values)


def insert_source(connection: Connection, **overrides: object) -> Row[Any]:
    """Only the required columns unless overridden, so the server defaults apply."""
    values = {"repo_url": f"https://github.com/acme/repo-{next(_serial)}", **overrides}
    if "project_id" not in values:
        values["project_id"] = insert_project(connection).id
    return insert(connection, "marketplace_sources", values)


def insert_entry(connection: Connection, **overrides: object) -> Row[Any]:
    n = next(_serial)
    values = {
        "artifact_type": "skill",
        "detected_path": f"skills/s{n}",
        "upstream_url": f"https://github.com/acme/repo/tree/HEAD/skills/s{n}",
        "detected_version_sha": "3f0c1a7d2b10" * 3,
        "confidence_score": 87.5,
        **overrides,
    }
    if "source_id" not in values:
        values["source_id"] = insert_source(connection).id
    return insert(connection, "marketplace_catalog_entries", values)


INSERTERS: dict[str, Callable[..., Row[Any]]] = {
    "projects": insert_project,
    "project_members": insert_member,
    "marketplace_sources": insert_source,
    "marketplace_catalog_entries": insert_entry,
}


@dataclass
class Violation:
    """What PostgreSQL named in the error: filled in when the `refused` block ends."""

    constraint: str | None = None
    column: str | None = None


@contextmanager
def refused(connection: Connection, sqlstate: str) -> Iterator[Violation]:
    """Expect the block to fail with `sqlstate`, inside a savepoint so the test can go on."""
    violation = Violation()
    with pytest.raises(IntegrityError) as exc, connection.begin_nested():
        yield violation
    error = exc.value.orig
    assert isinstance(error, psycopg.Error)
    assert error.sqlstate == sqlstate
    violation.constraint = error.diag.constraint_name
    violation.column = error.diag.column_name


def count(connection: Connection, sql: str, **params: object) -> int:
    value: int = connection.execute(text(sql), params).scalar_one()
    return value


def cases(table: str, column: str, values: Iterable[object]) -> list[ParameterSet]:
    return [pytest.param(table, column, v, id=f"{column}={v!r}") for v in values]


# --- value rules: CHECK constraints -------------------------------------------------------

# Every CHECK by table and the column it guards (named ck_<table>_<name> by the convention).
CHECKS = {
    "projects": {"name": "ck_projects_name_not_blank"},
    "project_members": {"role": "ck_project_members_role"},
    "marketplace_sources": {
        "repo_url": "ck_marketplace_sources_repo_url_canonical",
        "branch_or_ref": "ck_marketplace_sources_branch_or_ref_not_blank",
        "root_hint": "ck_marketplace_sources_root_hint_relative",
        "manual_map": "ck_marketplace_sources_manual_map_object",
        "trust_level": "ck_marketplace_sources_trust_level",
        "visibility": "ck_marketplace_sources_visibility",
        "harvest_limit": "ck_marketplace_sources_harvest_limit_range",
    },
    "marketplace_catalog_entries": {
        "artifact_type": "ck_marketplace_catalog_entries_artifact_type",
        "status": "ck_marketplace_catalog_entries_status",
        "detected_path": "ck_marketplace_catalog_entries_detected_path_relative",
        "upstream_url": "ck_marketplace_catalog_entries_upstream_url_https",
        "detected_version_sha": "ck_marketplace_catalog_entries_detected_version_sha_not_blank",
        "confidence_score": "ck_marketplace_catalog_entries_confidence_score_range",
    },
}

# Bounded, clean input (revision 96234684d7d9): more than one CHECK per column, by name.
BOUNDS = {
    "marketplace_sources": {
        "ck_marketplace_sources_branch_or_ref_length": "branch_or_ref",
        "ck_marketplace_sources_branch_or_ref_clean": "branch_or_ref",
        "ck_marketplace_sources_root_hint_clean": "root_hint",
        "ck_marketplace_sources_manual_map_size": "manual_map",
        # Depth 1 (revision 5d2f8a41c7e9): tests/test_links.py refuses it.
        "ck_marketplace_sources_discovered_never_harvests": "discovered_at",
    },
    "marketplace_catalog_entries": {
        "ck_marketplace_catalog_entries_detected_path_clean": "detected_path",
        "ck_marketplace_catalog_entries_upstream_url_length": "upstream_url",
        "ck_marketplace_catalog_entries_upstream_url_clean": "upstream_url",
        "ck_marketplace_catalog_entries_detected_version_sha_length": "detected_version_sha",
        "ck_marketplace_catalog_entries_detected_version_sha_clean": "detected_version_sha",
        "ck_marketplace_catalog_entries_imported_version_sha_length": "imported_version_sha",
        "ck_marketplace_catalog_entries_imported_version_sha_clean": "imported_version_sha",
        # Catalog content and exclusions (revision 3f9c1d2e8b70).
        "ck_marketplace_catalog_entries_name_not_blank": "name",
        "ck_marketplace_catalog_entries_name_length": "name",
        "ck_marketplace_catalog_entries_name_clean": "name",
        "ck_marketplace_catalog_entries_description_length": "description",
        "ck_marketplace_catalog_entries_description_clean": "description",
        "ck_marketplace_catalog_entries_tags_size": "tags",
        "ck_marketplace_catalog_entries_excluded_with_reason": "excluded_reason",
        "ck_marketplace_catalog_entries_excluded_reason_length": "excluded_reason",
    },
}

# Relative paths are canonical: no empty, '.' or '..' segment, so one path has one spelling.
BAD_PATHS = [
    *["", "/x", "/", "..", "../x", "a/../b", "a/..", "a//b", "skills/x/", "./x", "a/./b"],
    "a/" * 512 + "b",  # 1025 bytes: longer than the CHECK allows (an index entry must fit)
]

REFUSED: list[ParameterSet] = [
    *cases("projects", "name", ["", " ", "    ", "\t\n"]),
    *cases("project_members", "role", ["admin", "Owner", "VIEWER", "", " owner", "owner "]),
    *cases(
        "marketplace_sources",
        "repo_url",
        [
            "https://github.com/anthropics/skills.git",
            "https://github.com/anthropics/skills.GIT",
            "https://github.com/anthropics/skills/",
            "http://github.com/anthropics/skills",
            "https://www.github.com/anthropics/skills",
            "https://gitlab.com/anthropics/skills",
            "https://github.com/anthropics",
            "https://github.com/anthropics/",
            "https://github.com/anthropics/skills/tree",
            "https://github.com/-anthropics/skills",
            "https://github.com/anthropics-/skills",
            "https://github.com/anth--ropics/skills",
            "https://github.com/" + "a" * 40 + "/skills",
            "https://github.com/anthropics/..",
            "https://github.com/anthropics/.",
            "https://github.com/anthropics/" + "r" * 101,
            "https://github.com/anthropics/sk ills",
            "https://github.com/anthropics/skills\n",
            "https://github.com/anthropics/skills?tab=readme",
            "github.com/anthropics/skills",
            "",
        ],
    ),
    *cases("marketplace_sources", "branch_or_ref", ["", " ", "   "]),
    *cases(
        "marketplace_sources",
        "root_hint",
        ["", "/abs", "/", "..", "../x", "a/../b", "a/..", "a//b", "a/", "./a", "a/./b"],
    ),
    *cases(
        "marketplace_sources",
        "manual_map",
        [Sql("'[]'::jsonb"), Sql("'\"x\"'::jsonb"), Sql("'null'::jsonb"), Sql("'1'::jsonb")],
    ),
    *cases("marketplace_sources", "trust_level", ["trusted", "Signed", "UNSIGNED", ""]),
    *cases("marketplace_sources", "visibility", ["internal", "Public", "PRIVATE", ""]),
    *cases("marketplace_sources", "harvest_limit", [-1, 21, 1000]),
    *cases(
        "marketplace_catalog_entries",
        "artifact_type",
        ["Skill", "skills", "prompt", "mcp-server", ""],
    ),
    *cases("marketplace_catalog_entries", "status", ["deleted", "New", "UNCHANGED", ""]),
    *cases(
        "marketplace_catalog_entries",
        "detected_path",
        BAD_PATHS,
    ),
    *cases(
        "marketplace_catalog_entries",
        "upstream_url",
        [
            "http://github.com/anthropics/skills",
            "ftp://github.com/anthropics/skills",
            "",
            "https://",
            "https://github.com/anthropics/sk ills",
            "github.com/anthropics/skills",
        ],
    ),
    *cases("marketplace_catalog_entries", "detected_version_sha", ["", "  "]),
    *cases(
        "marketplace_catalog_entries",
        "confidence_score",
        [
            -0.01,
            100.01,
            12.345,
            0.001,
            Sql("'NaN'::float8"),
            Sql("'Infinity'::float8"),
            Sql("'-Infinity'::float8"),
        ],
    ),
]


@pytest.mark.parametrize(("table", "column", "value"), REFUSED)
def test_check_refuses(connection: Connection, table: str, column: str, value: object) -> None:
    with refused(connection, CHECK_VIOLATION) as violation:
        INSERTERS[table](connection, **{column: value})
    assert violation.constraint == CHECKS[table][column]


ACCEPTED: list[ParameterSet] = [
    *cases("projects", "name", ["Acme", "x", " padded "]),
    *cases("project_members", "role", [role.value for role in MemberRole]),
    *cases(
        "marketplace_sources",
        "repo_url",
        [
            "https://github.com/anthropics/skills",
            "https://github.com/my-org/skills",
            "https://github.com/a1-b2-c3/skills",
            "https://github.com/anthropics/my.skills_v2-beta",
            "https://github.com/anthropics/.github",
            "https://github.com/" + "a" * 39 + "/skills",
            "https://github.com/anthropics/" + "r" * 100,
            "https://github.com/a/b",
        ],
    ),
    *cases("marketplace_sources", "branch_or_ref", ["main", "v1.2.0", "feature/x", "3f0c1a7"]),
    *cases(
        "marketplace_sources", "root_hint", [None, ".", "skills", "a/b", ".claude/skills", "a/..b"]
    ),
    *cases("marketplace_sources", "trust_level", [level.value for level in TrustLevel]),
    *cases("marketplace_sources", "visibility", [v.value for v in Visibility]),
    *cases("marketplace_sources", "harvest_limit", [0, 5, 20]),
    *cases("marketplace_catalog_entries", "artifact_type", [t.value for t in ArtifactType]),
    *cases("marketplace_catalog_entries", "status", [s.value for s in CatalogStatus]),
    *cases(
        "marketplace_catalog_entries",
        "detected_path",
        [".", "a/b.md", "skills/x", ".claude/agents/reviewer.md", "a/..b", "a..b/c"],
    ),
    *cases(
        "marketplace_catalog_entries",
        "upstream_url",
        [
            "https://github.com/anthropics/skills/tree/main/skills/pdf",
            "https://github.com",
            "https://git.example.com:8443/a/b?ref=main#L1",
        ],
    ),
    *cases("marketplace_catalog_entries", "detected_version_sha", ["a", "3f0c1a7d2b10" * 3]),
    *cases(
        "marketplace_catalog_entries",
        "confidence_score",
        [0.0, 100.0, 99.99, 0.01, 50.5, 0.1 + 0.2],
    ),
]


@pytest.mark.parametrize(("table", "column", "value"), ACCEPTED)
def test_check_accepts(connection: Connection, table: str, column: str, value: object) -> None:
    row = INSERTERS[table](connection, **{column: value})
    assert getattr(row, column) == value


def test_manual_map_accepts_an_object(connection: Connection) -> None:
    row = insert_source(connection, manual_map=Sql("""'{"skills/pdf": "skill"}'::jsonb"""))
    assert row.manual_map == {"skills/pdf": "skill"}


@pytest.mark.parametrize("table", CHECKS)
def test_every_check_is_covered(connection: Connection, table: str) -> None:
    """A CHECK added to the schema without a line in CHECKS (and cases in REFUSED) fails here."""
    names = connection.execute(
        text(
            "SELECT conname FROM pg_constraint WHERE contype = 'c' "
            "AND conrelid = CAST(:table AS regclass) ORDER BY conname"
        ),
        {"table": table},
    ).scalars()
    assert list(names) == sorted([*CHECKS[table].values(), *BOUNDS.get(table, {})])


# --- NOT NULL ------------------------------------------------------------------------------

NOT_NULL = {
    "projects": ["id", "name", "created_at", "updated_at"],
    "project_members": ["project_id", "user_id", "role", "created_at"],
    "marketplace_sources": [
        "id",
        "project_id",
        "repo_url",
        "branch_or_ref",
        "manual_map",
        "trust_level",
        "visibility",
        "created_at",
        "updated_at",
    ],
    "marketplace_catalog_entries": [
        "id",
        "source_id",
        "artifact_type",
        "detected_path",
        "upstream_url",
        "detected_version_sha",
        "detected_at",
        "confidence_score",
        "status",
        # name is NOT NULL too, but a NULL is named from the path by a trigger
        "tags",
        "created_at",
        "updated_at",
    ],
}


@pytest.mark.parametrize(
    ("table", "column"),
    [pytest.param(t, c, id=f"{t}.{c}") for t, columns in NOT_NULL.items() for c in columns],
)
def test_explicit_null_is_refused(connection: Connection, table: str, column: str) -> None:
    # A server default applies only when the column is omitted, never to an explicit NULL.
    with refused(connection, NOT_NULL_VIOLATION) as violation:
        INSERTERS[table](connection, **{column: None})
    assert violation.column == column


# --- defaults ------------------------------------------------------------------------------


def test_source_defaults(connection: Connection) -> None:
    row = insert_source(connection)
    assert (
        row.branch_or_ref,
        row.root_hint,
        row.manual_map,
        row.trust_level,
        row.visibility,
        row.last_sync,
        row.last_error,
    ) == ("HEAD", None, {}, "unsigned", "private", None, None)


def test_entry_defaults(connection: Connection) -> None:
    row = insert_entry(connection)
    now = connection.execute(text("SELECT now()")).scalar_one()
    assert (row.status, row.detected_at, row.imported_at) == ("new", now, None)


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "parent_column", "constraint"),
    [
        ("project_members", "project_id", "fk_project_members_project_id_projects"),
        ("marketplace_sources", "project_id", "fk_marketplace_sources_project_id_projects"),
        (
            "marketplace_catalog_entries",
            "source_id",
            "fk_marketplace_catalog_entries_source_id_marketplace_sources",
        ),
    ],
)
def test_missing_parent_is_refused(
    connection: Connection, table: str, parent_column: str, constraint: str
) -> None:
    with refused(connection, FOREIGN_KEY_VIOLATION) as violation:
        INSERTERS[table](connection, **{parent_column: uuid.uuid4()})
    assert violation.constraint == constraint


def test_member_is_unique_per_project(connection: Connection) -> None:
    member = insert_member(connection, role="viewer")
    with refused(connection, UNIQUE_VIOLATION) as violation:
        insert_member(
            connection, project_id=member.project_id, user_id=member.user_id, role="owner"
        )
    assert violation.constraint == "pk_project_members"


def test_user_may_be_member_of_several_projects(connection: Connection) -> None:
    user = uuid.uuid4()
    insert_member(connection, user_id=user)
    insert_member(connection, user_id=user)
    assert count(connection, "SELECT count(*) FROM project_members WHERE user_id = :u", u=user) == 2


@pytest.mark.parametrize(
    "second",
    [
        "https://github.com/Anthropics/Skills",
        "https://github.com/anthropics/skills",
        "https://github.com/ANTHROPICS/SKILLS",
    ],
)
def test_repo_is_unique_per_project_ignoring_case(connection: Connection, second: str) -> None:
    project = insert_project(connection).id
    insert_source(connection, project_id=project, repo_url="https://github.com/Anthropics/Skills")
    with refused(connection, UNIQUE_VIOLATION) as violation:
        insert_source(connection, project_id=project, repo_url=second)
    assert violation.constraint == "uq_marketplace_sources_project_id_lower_repo_url"


def test_same_repo_in_two_projects_is_accepted(connection: Connection) -> None:
    url = "https://github.com/anthropics/skills"
    insert_source(connection, repo_url=url)
    insert_source(connection, repo_url=url.replace("anthropics", "Anthropics"))
    same = "SELECT count(*) FROM marketplace_sources WHERE lower(repo_url) = :u"
    assert count(connection, same, u=url) == 2


def test_entry_path_is_unique_per_source_and_type(connection: Connection) -> None:
    entry = insert_entry(connection, artifact_type="skill", detected_path="skills/x")
    with refused(connection, UNIQUE_VIOLATION) as violation:
        insert_entry(
            connection, source_id=entry.source_id, artifact_type="skill", detected_path="skills/x"
        )
    assert violation.constraint == "uq_marketplace_catalog_entries_source_type_path"


@pytest.mark.parametrize(
    ("same_source", "artifact_type"), [(True, "agent"), (False, "skill")], ids=["type", "source"]
)
def test_entry_path_may_repeat_under_another(
    connection: Connection, same_source: bool, artifact_type: str
) -> None:
    first = insert_entry(connection, artifact_type="skill", detected_path="skills/x")
    source_id = first.source_id if same_source else insert_source(connection).id
    second = insert_entry(
        connection, source_id=source_id, artifact_type=artifact_type, detected_path="skills/x"
    )
    assert (second.source_id, second.artifact_type, second.detected_path) == (
        source_id,
        artifact_type,
        "skills/x",
    )


# --- cascades ------------------------------------------------------------------------------


def test_deleting_a_project_deletes_its_members(connection: Connection) -> None:
    doomed, kept = insert_project(connection).id, insert_project(connection).id
    for role in MemberRole:
        insert_member(connection, project_id=doomed, role=role.value)
    insert_member(connection, project_id=kept)

    connection.execute(text("DELETE FROM projects WHERE id = :id"), {"id": doomed})

    rows = connection.execute(
        text(
            "SELECT project_id, count(*) FROM project_members "
            "WHERE project_id IN (:doomed, :kept) GROUP BY project_id"
        ),
        {"doomed": doomed, "kept": kept},
    ).all()
    assert [tuple(r) for r in rows] == [(kept, 1)]


def test_deleting_a_project_deletes_its_sources_and_their_entries(connection: Connection) -> None:
    doomed, kept = insert_project(connection).id, insert_project(connection).id
    doomed_sources = [insert_source(connection, project_id=doomed).id for _ in range(2)]
    kept_source = insert_source(connection, project_id=kept).id
    for source in [*doomed_sources, kept_source]:
        insert_entry(connection, source_id=source)
        insert_entry(connection, source_id=source)

    connection.execute(text("DELETE FROM projects WHERE id = :id"), {"id": doomed})

    sources = connection.execute(
        text("SELECT id FROM marketplace_sources WHERE project_id IN (:d, :k)"),
        {"d": doomed, "k": kept},
    ).scalars()
    assert list(sources) == [kept_source]
    entries = connection.execute(
        text(
            "SELECT source_id, count(*) FROM marketplace_catalog_entries "
            "WHERE source_id IN (:a, :b, :k) GROUP BY source_id"
        ),
        {"a": doomed_sources[0], "b": doomed_sources[1], "k": kept_source},
    ).all()
    assert [tuple(r) for r in entries] == [(kept_source, 2)]


def test_deleting_a_source_deletes_its_entries(connection: Connection) -> None:
    entry = insert_entry(connection)
    connection.execute(
        text("DELETE FROM marketplace_sources WHERE id = :id"), {"id": entry.source_id}
    )
    left = "SELECT count(*) FROM marketplace_catalog_entries WHERE source_id = :s"
    assert count(connection, left, s=entry.source_id) == 0


# --- timestamps and ids --------------------------------------------------------------------

TIMESTAMP_COLUMNS = {
    ("projects", "created_at"),
    ("projects", "updated_at"),
    ("project_members", "created_at"),
    ("marketplace_sources", "created_at"),
    ("marketplace_sources", "updated_at"),
    ("marketplace_sources", "last_sync"),
    ("marketplace_sources", "discovered_at"),
    ("marketplace_catalog_entries", "created_at"),
    ("marketplace_catalog_entries", "updated_at"),
    ("marketplace_catalog_entries", "detected_at"),
    ("marketplace_catalog_entries", "imported_at"),
    ("marketplace_catalog_entries", "excluded_at"),
}


def test_every_timestamp_is_timestamptz(connection: Connection) -> None:
    rows = connection.execute(
        text(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type LIKE 'timestamp%' "
            "AND table_name IN ('projects', 'project_members', 'marketplace_sources', "
            "'marketplace_catalog_entries')"
        )
    ).all()
    assert {(t, c): d for t, c, d in rows} == dict.fromkeys(
        TIMESTAMP_COLUMNS, "timestamp with time zone"
    )


@pytest.mark.parametrize("table", INSERTERS)
def test_timestamps_default_to_now(connection: Connection, table: str) -> None:
    row = INSERTERS[table](connection)
    now = connection.execute(text("SELECT now()")).scalar_one()
    stamps = [row.created_at, *([row.updated_at] if table != "project_members" else [])]
    assert stamps == [now] * len(stamps)


# One real change per UPDATE, so each statement is an ordinary edit of the row.
CHANGES = {
    "projects": "name = name || '!'",
    "marketplace_sources": "last_error = coalesce(last_error, '') || '!'",
    "marketplace_catalog_entries": "detected_version_sha = detected_version_sha || '0'",
}


def update_returning(
    connection: Connection, table: str, row_id: uuid.UUID, change: str
) -> Row[Any]:
    # RETURNING runs after the trigger, so `clock` is an upper bound for updated_at.
    sql = (
        f"UPDATE {table} SET {change} WHERE id = :id "
        "RETURNING created_at, updated_at, clock_timestamp() AS clock"
    )
    return connection.execute(text(sql), {"id": row_id}).one()


def clock(connection: Connection) -> dt.datetime:
    value: dt.datetime = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
    return value


@pytest.mark.parametrize("table", CHANGES)
def test_updated_at_advances_on_each_update_in_one_transaction(
    connection: Connection, table: str
) -> None:
    row = INSERTERS[table](connection)
    stamps = [row.updated_at]
    for _ in range(2):
        before = clock(connection)
        after = update_returning(connection, table, row.id, CHANGES[table])
        # The wall clock of the statement, not now() (the transaction's start) plus a tick.
        assert before <= after.updated_at <= after.clock
        assert after.created_at == row.created_at
        stamps.append(after.updated_at)
    assert stamps[0] < stamps[1] < stamps[2]


@pytest.mark.parametrize("table", CHANGES)
@pytest.mark.parametrize("stamp", ["2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z"])
def test_updated_at_ignores_an_explicit_value(
    connection: Connection, table: str, stamp: str
) -> None:
    row = INSERTERS[table](connection)
    before = clock(connection)
    after = update_returning(connection, table, row.id, f"updated_at = '{stamp}'")
    assert before <= after.updated_at <= after.clock


@pytest.mark.parametrize("table", CHANGES)
def test_updated_at_never_goes_back_when_the_clock_does(connection: Connection, table: str) -> None:
    # A stored updated_at ahead of the clock stands for a clock stepped back since.
    ahead = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
    row = INSERTERS[table](connection, updated_at=ahead)
    after = update_returning(connection, table, row.id, CHANGES[table])
    assert after.updated_at == ahead + dt.timedelta(microseconds=1)


@pytest.mark.parametrize("table", CHANGES)
def test_id_is_generated_by_the_server(connection: Connection, table: str) -> None:
    first, second = INSERTERS[table](connection).id, INSERTERS[table](connection).id
    assert isinstance(first, uuid.UUID)
    assert (first.version, second.version) == (4, 4)
    assert first != second


# --- bounded, clean input ------------------------------------------------------------------

# One character of each class the `_clean` CHECKs refuse (NUL needs none: text cannot hold it).
UNCLEAN = {
    "C0 first": "\x01",
    "BEL": "\x07",
    "ESC": "\x1b",
    "C0 last": "\x1f",
    "DEL": "\x7f",
    "C1 first": "\x80",
    "NEL": "\x85",
    "C1 last": "\x9f",
    "LRE": "\u202a",
    "RLO": "\u202e",
    "LRI": "\u2066",
    "PDI": "\u2069",
}
# Next to each refused range, and ordinary non-ASCII: accepted.
NEAR = {"space": " ", "tilde": "~", "NBSP": "\xa0", "U+2029": "\u2029", "U+202F": "\u202f"}
NEAR |= {"U+2065": "\u2065", "U+206A": "\u206a", "e-acute": "\xe9", "CJK": "\u65e5"}
NFD = "cafe\u0301"

# table, column, how a value holding `text` is spelled there, whether it is a path
TEXT_COLUMNS = [
    ("marketplace_sources", "branch_or_ref", "a{}b", False),
    ("marketplace_sources", "root_hint", "skills/a{}b", True),
    ("marketplace_catalog_entries", "detected_path", "skills/a{}b", True),
    ("marketplace_catalog_entries", "upstream_url", "https://x.io/a{}b", False),
    ("marketplace_catalog_entries", "detected_version_sha", "a{}b", False),
    ("marketplace_catalog_entries", "imported_version_sha", "a{}b", False),
]


def _unclean_cases() -> list[ParameterSet]:
    params = []
    for table, column, spelling, is_path in TEXT_COLUMNS:
        constraint = f"ck_{table}_{column}_clean"
        bad = {name: spelling.format(char) for name, char in UNCLEAN.items()}
        bad["NFD"] = spelling.format(NFD)
        if is_path:
            bad |= {"backslash": spelling.format("\\"), "dotdot-backslash": "..\\..\\etc"}
        for name, value in bad.items():
            params.append(pytest.param(table, column, value, constraint, id=f"{column}-{name}"))
    return params


BOUNDED_REFUSED: list[ParameterSet] = [
    *_unclean_cases(),
    *[
        pytest.param(t, c, v, f"ck_{t}_{c}_length", id=f"{c}-{len(v)}")
        for t, c, v in [
            ("marketplace_sources", "branch_or_ref", "r" * 256),
            ("marketplace_catalog_entries", "upstream_url", "https://x.io/" + "a" * 2036),
            ("marketplace_catalog_entries", "upstream_url", "https://x.io/" + "a" * (20 << 20)),
            ("marketplace_catalog_entries", "detected_version_sha", "\xe9" * 257),
            ("marketplace_catalog_entries", "detected_version_sha", "f" * (20 << 20)),
            ("marketplace_catalog_entries", "imported_version_sha", "f" * 257),
        ]
    ],
    # 1025 bytes in 513 characters: the limit is in bytes.
    pytest.param(
        "marketplace_sources",
        "root_hint",
        "\xe9/" * 341 + "xx",
        "ck_marketplace_sources_root_hint_relative",
        id="root_hint-1025-bytes",
    ),
]


@pytest.mark.parametrize(("table", "column", "value", "constraint"), BOUNDED_REFUSED)
def test_bounded_check_refuses(
    connection: Connection, table: str, column: str, value: str, constraint: str
) -> None:
    with refused(connection, CHECK_VIOLATION) as violation:
        INSERTERS[table](connection, **{column: value})
    assert violation.constraint == constraint


BOUNDED_ACCEPTED: list[ParameterSet] = [
    *[
        pytest.param(t, c, spelling.format(char), id=f"{c}-{name}")
        for t, c, spelling, _ in TEXT_COLUMNS
        for name, char in NEAR.items()
        # whitespace in a URL is upstream_url_https's business
        if not (c == "upstream_url" and char in (" ", "\xa0", "\u2029", "\u202f"))
    ],
    *[
        pytest.param(t, c, spelling.format("\\"), id=f"{c}-backslash")
        for t, c, spelling, is_path in TEXT_COLUMNS
        if not is_path
    ],
    pytest.param("marketplace_sources", "branch_or_ref", "r" * 255, id="branch_or_ref-255"),
    pytest.param(
        "marketplace_catalog_entries",
        "upstream_url",
        "https://x.io/" + "a" * 2035,
        id="upstream_url-2048",
    ),
    pytest.param(
        "marketplace_catalog_entries",
        "detected_version_sha",
        "\xe9" * 256,
        id="detected_version_sha-256-chars-512-bytes",
    ),
    pytest.param(
        "marketplace_catalog_entries", "imported_version_sha", "f" * 256, id="imported-256"
    ),
    pytest.param(
        "marketplace_sources", "root_hint", "\xe9/" * 341 + "x", id="root_hint-1024-bytes"
    ),
]


@pytest.mark.parametrize(("table", "column", "value"), BOUNDED_ACCEPTED)
def test_bounded_check_accepts(connection: Connection, table: str, column: str, value: str) -> None:
    row = INSERTERS[table](connection, **{column: value})
    assert getattr(row, column) == value


def _manual_map(value: object) -> Sql:
    return Sql(f"CAST('{json.dumps(value)}' AS jsonb)")


@pytest.mark.parametrize(
    "manual_map",
    [
        {"skill": [f"s/{n}" for n in range(101)]},
        {"skill": [f"s/{n}" for n in range(60)], "agent": [f"a/{n}" for n in range(41)]},
        {f"k{n}": "x" for n in range(101)},  # bare strings count one each
        {"skill": [f"s/{n}" for n in range(50_000)]},
    ],
    ids=["101-in-one", "60+41", "101-bare-strings", "50000"],
)
def test_manual_map_of_more_than_100_paths_is_refused(
    connection: Connection, manual_map: dict[str, Any]
) -> None:
    with refused(connection, CHECK_VIOLATION) as violation:
        insert_source(connection, manual_map=_manual_map(manual_map))
    assert violation.constraint == "ck_marketplace_sources_manual_map_size"


@pytest.mark.parametrize(
    "manual_map",
    [
        {},
        {"skill": [f"s/{n}" for n in range(100)]},
        {"skill": [f"s/{n}" for n in range(60)], "agent": [f"a/{n}" for n in range(40)]},
    ],
    ids=["empty", "100-in-one", "60+40"],
)
def test_manual_map_of_at_most_100_paths_is_accepted(
    connection: Connection, manual_map: dict[str, Any]
) -> None:
    assert insert_source(connection, manual_map=_manual_map(manual_map)).manual_map == manual_map
