"""Search under attack and at its edges: crafted arguments, the plain pass bounded by
the query, pages that do not depend on sync order (a red-team run of b4e1c07d2f58)."""

import uuid
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from skillmeat.core.database import tenant_scope
from skillmeat.core.repositories.search import search_entries
from tests.rls_world import World, build_world


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session.connection())


def add_entries(conn: Connection, source: uuid.UUID, rows: list[tuple[str, str]]) -> None:
    for i, (name, description) in enumerate(rows):
        conn.execute(
            text(
                "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path,"
                " upstream_url, detected_version_sha, confidence_score, name, description) "
                "VALUES (:s, 'skill', :p, 'https://x.io/e', 'a', 50, :n, :d)"
            ),
            {"s": source, "p": f"skills/rt{uuid.uuid4().hex[:8]}{i}", "n": name, "d": description},
        )


def names(session: Session, user: uuid.UUID, query: str, **kw: Any) -> list[str]:
    out: list[str] = []
    cursor = None
    with tenant_scope(session, user_id=user):
        while True:
            page = search_entries(session, query, limit=3, cursor=cursor, **kw)
            out += [h.entry.name for h in page.items]
            cursor = page.next_cursor
            if cursor is None:
                return out


@pytest.mark.parametrize("query", ["pop-up", "add-on", "built-in"])
def test_plain_pass_finds_only_entries_matching_the_query(
    session: Session, world: World, query: str
) -> None:
    """p_plain must be narrower than p_query: every candidate it adds must match the
    query as ranked. For a last word whose trailing parts are English stop words
    ('-up', '-on', '-in'), the plain query's English form drops them ('pop' alone)."""
    head = query.split("-")[0]
    conn = session.connection()
    add_entries(
        conn,
        world.a.source,
        [(f"{query} helper", "the real thing")]
        + [(f"unrelated tool {i}", f"we {head} things around") for i in range(5)],
    )
    got = names(session, world.a.members["viewer"], query)
    assert got == [f"{query} helper"], got


def test_plain_pass_crowds_out_the_real_matches(session: Session, world: World) -> None:
    """Worse: when the broadened plain query fills the 1,000 candidates, the prefix pass
    never runs and the entries that match the query are not ranked at all."""
    conn = session.connection()
    conn.execute(
        text(
            "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
            "upstream_url, detected_version_sha, confidence_score, name, description) "
            "SELECT :s, 'skill', 'skills/pop' || g, 'https://x.io/f', 'a', 50, 'filler ' || g, "
            "'a tool to pop things' FROM generate_series(1, 1001) g"
        ),
        {"s": world.a.source},
    )
    add_entries(conn, world.a.source, [("pop-up tool", "the real thing")])
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        page = search_entries(session, "tool pop-up", limit=5)
    assert page.items and page.items[0].entry.name == "pop-up tool", [
        (h.entry.name, h.score) for h in page.items
    ]


# --- probes that held up (pass on the current code) ---------------------------------

from tests.test_rls import act_as  # noqa: E402

_CALL = (
    "SELECT entry_id FROM skillmeat_private.search_catalog(CAST(:q AS tsquery), "
    "CAST(:pl AS tsquery), :ex, :px, :pat, :fz, CAST(:proj AS uuid), CAST(:src AS uuid[]), "
    "CAST(:ty AS text[]), CAST(:st AS text[]), true, CAST(:as AS double precision), "
    "CAST(:ai AS uuid), 501)"
)
_SETTINGS = [
    {},
    {"work_mem": "64"},
    {"gin_fuzzy_search_limit": "1"},
    {"enable_bitmapscan": "off", "enable_indexscan": "off", "enable_seqscan": "on"},
    {"random_page_cost": "1000000", "cpu_operator_cost": "0"},
    {"pg_trgm.similarity_threshold": "0", "pg_trgm.word_similarity_threshold": "0"},
    {"enable_material": "off", "enable_mergejoin": "off", "enable_memoize": "off"},
]


@pytest.mark.parametrize("settings", _SETTINGS, ids=lambda s: ",".join(s) or "default")
def test_member_crafted_arguments_never_reach_the_other_tenant(
    session: Session, world: World, settings: dict[str, str]
) -> None:
    conn = session.connection()
    conn.execute(
        text(
            "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
            "upstream_url, detected_version_sha, confidence_score, name, description) "
            "SELECT :s, 'skill', 'skills/b' || g, 'https://x.io/f', 'a', 50, 'walrus ' || g, "
            "'walrus secret' FROM generate_series(1, 1500) g"
        ),
        {"s": world.b.source},
    )
    add_entries(conn, world.a.source, [("walrus a", "walrus mine")])
    foreign = set(
        conn.execute(
            text("SELECT id FROM marketplace_catalog_entries WHERE source_id = :s"),
            {"s": world.b.source},
        ).scalars()
    )
    everything = "!'zzzzqqq'"
    variants = [
        dict(q=everything, pl=everything),
        dict(q="'walrus':*", pl=None, pat="%", fz="walrus"),
        dict(q="'nomatch'", pl=None, fz="walrus 1"),
        dict(q="'nomatch'", pl=None, fz="walrus", **{"as": "1e308", "ai": str(uuid.UUID(int=0))}),
        dict(q=everything, pl="'walrus'", src=[str(world.b.source), str(world.a.source)]),
        dict(q=everything, pl=everything, proj=str(world.b.project)),
        dict(q="'walrus':*", pl="'walrus'", pat="walrus%", ty=["skill"], st=None),
        dict(q="'walrus':*", pl="'walrus'", **{"as": "NaN"}),
    ]
    with conn.begin_nested() as sp:
        for name, value in settings.items():
            conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
        act_as(conn, world, "viewer")
        for v in variants:
            names = ("q", "pl", "ex", "px", "pat", "fz", "proj", "src", "ty", "st", "as", "ai")
            params: dict[str, Any] = dict.fromkeys(names)
            params.update(v)  # type: ignore[call-overload]
            got = set(conn.execute(text(_CALL), params).scalars())
            assert not got & foreign, (settings, v)
        sp.rollback()


def test_member_cannot_call_the_core_or_the_admin_entry(session: Session, world: World) -> None:
    conn = session.connection()
    for sql in (
        "SELECT * FROM skillmeat_private.search_core(NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
        " NULL, NULL, true, NULL, NULL, 10)",
        "SELECT * FROM skillmeat_private.search_catalog_admin(NULL, NULL, NULL, NULL, NULL,"
        " NULL, NULL, NULL, NULL, NULL, true, NULL, NULL, 10)",
    ):
        with conn.begin_nested() as sp:
            act_as(conn, world, "owner")
            with pytest.raises(Exception, match="permission denied"):
                conn.execute(text(sql))
            sp.rollback()


def test_member_login_cannot_become_search_or_admin(
    database_url: Any, engine: Any, committed_world: World
) -> None:
    """A real NOINHERIT member login, inside tenant_scope, running arbitrary SQL."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import sessionmaker
    from sqlalchemy.pool import NullPool

    from skillmeat.core.database import make_engine
    from tests.login_roles import MEMBER_POOL, login_role

    with login_role(engine, database_url, MEMBER_POOL) as url:
        pool = make_engine(url, poolclass=NullPool)
        try:
            for sql in (
                "SET ROLE skillmeat_search",
                "SET ROLE skillmeat_admin",
                "RESET ROLE; SELECT * FROM skillmeat_private.search_catalog_admin(NULL, NULL,"
                " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true, NULL, NULL, 10)",
                "SET SESSION AUTHORIZATION skillmeat_search",
            ):
                with (
                    sessionmaker(pool)() as s,
                    tenant_scope(s, user_id=committed_world.a.members["owner"]),
                    pytest.raises(DBAPIError),
                ):
                    s.execute(text(sql))
        finally:
            pool.dispose()


def test_page_two_does_not_depend_on_a_sources_last_sync(session: Session, world: World) -> None:
    """Over 1,000 plain matches the candidates are the first 1,000 in the order of the
    visible-source array (LATERAL over unnest), and that order is member_source_ids'
    array_agg order, read from ix_marketplace_sources_project_id_last_sync: (project,
    last_sync NULLS FIRST, id). Every sync sets last_sync and moves its source to the
    end of its project's list, so the next page is cut from another candidate set:
    unchanged entries are skipped or shown twice. (Before: bitmap order over
    `source_id = ANY`, independent of the array.)"""
    conn = session.connection()
    second = conn.execute(
        text(
            "INSERT INTO marketplace_sources (project_id, repo_url) "
            "VALUES (:p, 'https://github.com/a/second') RETURNING id"
        ),
        {"p": world.a.project},
    ).scalar_one()
    for src, tag in ((world.a.source, "one"), (second, "two")):
        conn.execute(
            text(
                "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, "
                "detected_path, upstream_url, detected_version_sha, confidence_score, name, "
                "description) SELECT :s, 'skill', 'skills/w' || g, 'https://x.io/f', 'a', 50, "
                ":t || ' ' || g, 'walrus' FROM generate_series(1, 700) g"
            ),
            {"s": src, "t": tag},
        )
    # both synced before: the first source two hours ago, the second one hour ago
    for src, ago in ((world.a.source, "2 hours"), (second, "1 hour")):
        conn.execute(
            text(
                "UPDATE marketplace_sources SET last_sync = now() - CAST(:a AS interval) "
                "WHERE id = :s"
            ),
            {"s": src, "a": ago},
        )
    user = world.a.members["viewer"]

    def page(cursor: str | None) -> Any:
        with tenant_scope(session, user_id=user):
            return search_entries(session, "walrus", limit=20, cursor=cursor)

    first = page(None)
    before = [h.entry.id for h in page(first.next_cursor).items]
    # what a sync of the first source does (skillmeat/core/repositories/sync.py)
    conn.execute(
        text("UPDATE marketplace_sources SET last_sync = now() WHERE id = :s"),
        {"s": world.a.source},
    )
    after = [h.entry.id for h in page(first.next_cursor).items]
    assert after == before
