"""Catalog content, exclusions, import conflicts and search, on real snapshots and as
every actor of the RLS matrix. Expected results are computed here, in Python, over the
snapshot records (tokens of name, tags and description), never by asking PostgreSQL."""

import gzip
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from skillmeat.core.database import tenant_scope
from skillmeat.core.errors import NotFound, PermissionDenied, ValidationFailed
from skillmeat.core.repositories import marketplace as repo
from skillmeat.core.repositories.search import parse_query, search_entries
from skillmeat.core.schemas.marketplace import DetectedArtifact
from tests.rls_world import World, build_world
from tests.test_rls import act_as

META = Path(__file__).resolve().parent / "data" / "real_catalogs_meta"
REPOS = [
    "anthropics__skills",
    "anthropics__claude-code",
    "ccplugins__awesome-claude-code-plugins",
    "VoltAgent__awesome-claude-code-subagents",
]
TOKEN = re.compile(r"[^\W_]+")
REVIEW = {"review", "reviews", "reviewed", "reviewing", "reviewer", "reviewers"}


def records(name: str, which: str = "new") -> list[dict[str, Any]]:
    with gzip.open(META / f"{name}__{which}.jsonl.gz", "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def artifacts(recs: list[dict[str, Any]]) -> list[DetectedArtifact]:
    keys = ("artifact_type", "detected_path", "upstream_url", "detected_version_sha")
    return [
        DetectedArtifact(
            **{k: r[k] for k in keys},
            confidence_score=r["confidence_score"],
            name=r["name"],
            description=r["description"],
            tags=r["tags"],
        )
        for r in recs
    ]


def tokens(r: dict[str, Any]) -> list[str]:
    text_ = " ".join([r["name"], *r["tags"], r["description"] or ""]).lower()
    return TOKEN.findall(text_)


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session.connection())


@pytest.fixture
def catalog(session: Session, world: World) -> dict[str, Any]:
    """The four snapshots synced into tenant A, one source each; (source, path) -> record."""
    by_key: dict[tuple[uuid.UUID, str, str], dict[str, Any]] = {}
    sources = {}
    for name in REPOS:
        recs = records(name)
        with tenant_scope(session, admin=True):
            src = session.execute(
                text(
                    "INSERT INTO marketplace_sources (project_id, repo_url) VALUES (:p, :u) "
                    "RETURNING id"
                ),
                {"p": world.a.project, "u": recs[0]["repo_url"]},
            ).scalar_one()
        with tenant_scope(session, user_id=world.a.members["editor"]):
            repo.sync_catalog(session, src, artifacts(recs))
        sources[name] = src
        for r in recs:
            by_key[(src, r["artifact_type"], r["detected_path"])] = r
    return {"sources": sources, "records": by_key}


def search_all(session: Session, user: uuid.UUID | None, query: str, **kw: Any) -> list[Any]:
    """Every page, through the cursor (limit 7: many pages)."""
    hits: list[Any] = []
    cursor = None
    scope = tenant_scope(session, user_id=user) if user else tenant_scope(session, admin=True)
    with scope:
        while True:
            page = search_entries(session, query, limit=7, cursor=cursor, **kw)
            hits.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return hits


def keys(hits: list[Any]) -> set[tuple[uuid.UUID, str, str]]:
    return {(h.entry.source_id, h.entry.artifact_type.value, h.entry.detected_path) for h in hits}


def expected(catalog: dict[str, Any], match: Any) -> set[tuple[uuid.UUID, str, str]]:
    return {k for k, r in catalog["records"].items() if match(r, tokens(r))}


# --- content -------------------------------------------------------------------------


def test_synced_content_is_stored_and_read(
    session: Session, catalog: dict[str, Any], world: World
) -> None:
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        src = catalog["sources"]["anthropics__skills"]
        page = repo.list_entries(session, src, limit=500)
    recs = {k[2]: r for k, r in catalog["records"].items() if k[0] == src}
    assert {e.detected_path: (e.name, e.description, e.tags) for e in page.items} == {
        p: (r["name"], r["description"], r["tags"]) for p, r in recs.items()
    }


def test_name_defaults_to_the_last_segment_without_extension() -> None:
    a = DetectedArtifact(
        artifact_type="agent",
        detected_path="agents/Code-Reviewer.md",
        upstream_url="https://github.com/o/r/blob/a/agents/Code-Reviewer.md",
        detected_version_sha="a",
        confidence_score=90,
        description="  Reviews   code.\n Carefully ",
        tags=["Python", "python", " CLI "],
    )
    assert (a.name, a.description, a.tags) == (
        "Code-Reviewer",
        "Reviews code. Carefully",
        ["python", "cli"],
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "n" * 201),
        ("name", "a\u202eb"),
        ("description", "d" * 2001),
        ("tags", ["t"] * 1 + [f"t{i}" for i in range(20)]),
        ("tags", ["x" * 41]),
        ("tags", [" "]),
    ],
)
def test_content_is_bounded_and_clean(field: str, value: Any) -> None:
    base = {
        "artifact_type": "skill",
        "detected_path": "skills/a",
        "confidence_score": 50,
        "upstream_url": "https://github.com/o/r/tree/a/skills/a",
        "detected_version_sha": "a",
    }
    with pytest.raises(ValidationFailed) as info:
        from skillmeat.core.schemas.marketplace import validate_artifacts

        validate_artifacts([{**base, field: value}])
    assert field in info.value.field


# --- search on real data ---------------------------------------------------------------


def test_exact_name_ranks_first(session: Session, catalog: dict[str, Any], world: World) -> None:
    hits = search_all(session, world.a.members["viewer"], "python-pro")
    assert hits[0].entry.name == "python-pro" and hits[0].score >= 3
    # best first throughout, and more than one score, so that the order is tested
    scores = [h.score for h in search_all(session, world.a.members["viewer"], "review")]
    assert len(set(scores)) > 1 and scores == sorted(scores, reverse=True), scores


def test_prefix_finds_every_word_that_starts_with_it(
    session: Session, catalog: dict[str, Any], world: World
) -> None:
    hits = search_all(session, world.a.members["viewer"], "pyth")
    assert keys(hits) == expected(catalog, lambda r, t: any(w.startswith("pyth") for w in t))
    assert "python-pro" in {h.entry.name for h in hits}


def test_description_word(session: Session, catalog: dict[str, Any], world: World) -> None:
    hits = search_all(session, world.a.members["viewer"], "kubernetes")
    want = expected(catalog, lambda r, t: any(w.startswith("kubernetes") for w in t))
    assert want and keys(hits) == want


def test_typo_falls_back_to_similar_names(
    session: Session, catalog: dict[str, Any], world: World
) -> None:
    hits = search_all(session, world.a.members["viewer"], "pyhton-pro")
    assert hits and hits[0].entry.name == "python-pro"


def test_phrase(session: Session, catalog: dict[str, Any], world: World) -> None:
    hits = search_all(session, world.a.members["viewer"], '"code review"')

    def adjacent(r: dict[str, Any], t: list[str]) -> bool:
        return any(a == "code" and b in REVIEW for a, b in itertools.pairwise(t))

    assert keys(hits) == expected(catalog, adjacent)


def test_negation(session: Session, catalog: dict[str, Any], world: World) -> None:
    hits = search_all(session, world.a.members["viewer"], "reviewer -code")
    want = expected(
        catalog,
        lambda r, t: bool(REVIEW & set(t)) and not {"code", "codes", "coding", "coded"} & set(t),
    )
    assert want and keys(hits) == want


def test_or(session: Session, catalog: dict[str, Any], world: World) -> None:
    hits = search_all(session, world.a.members["viewer"], "kubernetes or terraform")
    want = expected(catalog, lambda r, t: bool({"kubernetes", "terraform"} & set(t)))
    assert keys(hits) == want


def test_code_reviewer_matches_code_reviewer_spelled_apart(
    session: Session, catalog: dict[str, Any], world: World
) -> None:
    apart = search_all(session, world.a.members["viewer"], "code reviewer")
    hyphen = search_all(session, world.a.members["viewer"], "code-reviewer")
    names = {h.entry.name for h in hyphen}
    assert "code-reviewer" in names and keys(hyphen) <= keys(apart)
    assert hyphen[0].entry.name == "code-reviewer" and hyphen[0].score >= 3


def test_pages_are_ordered_and_stable_under_inserts(
    session: Session, catalog: dict[str, Any], world: World
) -> None:
    viewer = world.a.members["viewer"]
    with tenant_scope(session, user_id=viewer):
        first = search_entries(session, "agent", limit=5)
    with tenant_scope(session, admin=True):
        session.execute(
            text(
                "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
                "upstream_url, detected_version_sha, confidence_score, name) "
                "SELECT :s, 'agent', 'agents/new' || g, 'https://x.io/a', 'a', 50, 'agent ' || g "
                "FROM generate_series(1, 30) g"
            ),
            {"s": catalog["sources"]["anthropics__skills"]},
        )
    with tenant_scope(session, user_id=viewer):
        rest: list[Any] = []
        cursor = first.next_cursor
        while cursor:
            page = search_entries(session, "agent", limit=50, cursor=cursor)
            rest.extend(page.items)
            cursor = page.next_cursor
    seen = [(h.score, h.entry.id) for h in [*first.items, *rest]]
    assert len(set(seen)) == len(seen)  # nothing repeated
    ordered = sorted(seen, key=lambda s: (-s[0], s[1]))
    assert seen == ordered


@pytest.mark.parametrize("query", ["", "   ", "x" * 201, "-foo", '""', "or"])
def test_bad_queries_are_refused(session: Session, world: World, query: str) -> None:
    with tenant_scope(session, user_id=world.a.members["viewer"]), pytest.raises(ValidationFailed):
        search_entries(session, query)


def test_parse_query_shapes() -> None:
    parsed = parse_query('python "code review" -java or go')
    assert [len(g) for g in parsed.groups] == [1, 1, 2]
    assert parsed.exact is None and parsed.fuzzy is None
    one = parse_query("Pyhton-Pro")
    assert (one.exact, one.fuzzy, one.pattern) == ("pyhton pro", "pyhton-pro", "pyhton-pro%")


# --- exclusions ----------------------------------------------------------------------


def test_exclusion_hides_and_survives_rescans(session: Session, world: World) -> None:
    ed, viewer = world.a.members["editor"], world.a.members["viewer"]
    name = "anthropics__skills"
    old, new = records(name, "old"), records(name, "new")
    with tenant_scope(session, admin=True):
        src = session.execute(
            text(
                "INSERT INTO marketplace_sources (project_id, repo_url) VALUES (:p, :u) "
                "RETURNING id"
            ),
            {"p": world.a.project, "u": old[0]["repo_url"]},
        ).scalar_one()
    with tenant_scope(session, user_id=ed):
        repo.sync_catalog(session, src, artifacts(old))
        target = next(
            e for e in repo.list_entries(session, src, limit=500).items if e.name == "pdf"
        )
    with pytest.raises(PermissionDenied, match="not exclude or restore"):  # noqa: SIM117
        with tenant_scope(session, user_id=viewer):
            repo.exclude_entries(session, [target.id], reason="not for us")
    with pytest.raises(NotFound), tenant_scope(session, user_id=world.b.members["owner"]):
        repo.restore_entries(session, [target.id])
    with tenant_scope(session, user_id=ed):
        assert repo.exclude_entries(session, [target.id], reason="not for us") == [target.id]

    def visible(include: bool = False) -> tuple[bool, bool, int]:
        with tenant_scope(session, user_id=viewer):
            listed = target.id in {
                e.id
                for e in repo.list_entries(session, src, limit=500, include_excluded=include).items
            }
            found = target.id in {
                h.entry.id
                for h in search_entries(session, "pdf", include_excluded=include, limit=100).items
            }
            counted = sum(
                repo.catalog_counts(session, [src], include_excluded=include)[src].values()
            )
        return listed, found, counted

    total = len(old)
    assert visible() == (False, False, total - 1)
    assert visible(True) == (True, True, total)
    # rescans: a new version, then removed, then back: still excluded
    with tenant_scope(session, user_id=ed):
        repo.sync_catalog(session, src, artifacts(new))
        repo.sync_catalog(
            session, src, [a for a in artifacts(new) if a.detected_path != target.detected_path]
        )
        repo.sync_catalog(session, src, artifacts(new))
        entry = next(
            e
            for e in repo.list_entries(session, src, limit=500, include_excluded=True).items
            if e.id == target.id
        )
    assert (entry.excluded_reason, entry.excluded_at is not None) == ("not for us", True)
    with tenant_scope(session, user_id=ed):
        assert repo.restore_entries(session, [target.id]) == [target.id]
    assert visible()[:2] == (True, True)


def test_exclusion_reason_is_required(session: Session, world: World) -> None:
    with tenant_scope(session, user_id=world.a.members["editor"]), pytest.raises(ValidationFailed):
        repo.exclude_entries(session, [world.a.entry], reason="  ")


# --- import conflicts ------------------------------------------------------------------


def test_conflicts_on_repeated_names(
    session: Session, catalog: dict[str, Any], world: World
) -> None:
    recs = catalog["records"]
    ed = world.a.members["editor"]
    with tenant_scope(session, user_id=ed):
        all_entries = {
            (e.source_id, e.artifact_type.value, e.detected_path): e
            for src in catalog["sources"].values()
            for e in repo.list_entries(session, src, limit=500).items
        }
    reviewers = [
        e
        for k, e in all_entries.items()
        if recs[k]["name"].lower() == "code-reviewer" and k[1] == "agent"
    ]
    already, given = reviewers[0], reviewers[1:]
    with tenant_scope(session, user_id=ed):
        repo.mark_imported(session, [already.id])
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        conflicts = repo.import_conflicts(session, [e.id for e in given])
        unique = next(e for e in all_entries.values() if e.name == "python-pro")
        assert repo.import_conflicts(session, [unique.id]) == []
    assert len(conflicts) == 1
    group = conflicts[0]
    assert (group.name, group.artifact_type.value) == ("code-reviewer", "agent")
    assert {m.entry.id for m in group.members} == {e.id for e in reviewers}
    names = [m.suggested_name.lower() for m in group.members]
    assert len(set(names)) == len(names)
    imported = [m for m in group.members if m.imported]
    assert [m.entry.id for m in imported] == [already.id] and imported[
        0
    ].suggested_name == already.name
    for m in group.members:
        if not m.imported:
            assert m.suggested_name.startswith("code-reviewer-" + m.repo_url.rsplit("/", 1)[-1])
    with tenant_scope(session, user_id=world.outsider):
        assert repo.import_conflicts(session, [e.id for e in given]) == []


# --- RLS: every actor finds exactly what it can list -----------------------------------


ACTORS = ["viewer", "editor", "owner", "outsider", "forged", "admin"]


@pytest.mark.parametrize("actor", ACTORS)
def test_search_returns_exactly_the_rows_the_actor_can_read(
    session: Session, world: World, actor: str
) -> None:
    conn = session.connection()
    for tenant in (world.a, world.b):
        conn.execute(
            text(
                "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
                "upstream_url, detected_version_sha, confidence_score, name, description) "
                "SELECT :s, 'agent', 'agents/a' || g, 'https://x.io/a', 'a', 50, 'helper-' || g, "
                "'Reviews pull requests' FROM generate_series(1, 5) g"
            ),
            {"s": tenant.source},
        )
    if actor == "admin":
        hits = search_all(session, None, "reviews")
        with tenant_scope(session, admin=True):
            readable = set(
                session.execute(
                    text("SELECT id FROM marketplace_catalog_entries WHERE description IS NOT NULL")
                ).scalars()
            )
        assert {h.entry.id for h in hits} == readable and len(readable) >= 10
        return
    user = {"outsider": world.outsider, "forged": uuid.uuid4()}.get(actor) or world.a.members[actor]
    with conn.begin_nested() as sp:
        if actor == "forged":
            # a well-formed identity whose proof was made with another key
            from skillmeat.core.database.identity import IdentityKey, identity_settings

            conn.execute(text("SELECT set_config('role', 'skillmeat_app', true)"))
            for n, v in identity_settings(
                world.a.members["viewer"], key=IdentityKey.generate()
            ).items():
                conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": n, "v": v})
            rows = conn.execute(
                text(
                    "SELECT count(*) FROM skillmeat_private.search_catalog("
                    "to_tsquery('simple', 'reviews'), "
                    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL, 100)"
                )
            ).scalar_one()
            sp.rollback()
            assert rows == 0
            return
        act_as(conn, world, actor if actor != "outsider" else "outsider")
        readable = set(
            conn.execute(
                text("SELECT id FROM marketplace_catalog_entries WHERE description IS NOT NULL")
            ).scalars()
        )
        sp.rollback()
    hits = search_all(session, user, "reviews")
    assert {h.entry.id for h in hits} == readable
    assert len(readable) == (0 if actor == "outsider" else 5)


def test_caller_given_sources_and_project_only_narrow(session: Session, world: World) -> None:
    """The tenant filter comes from the verified identity, never from the caller: another
    tenant's source_ids or project_id find nothing, in the library and in a direct call."""
    conn = session.connection()
    for tenant in (world.a, world.b):
        conn.execute(
            text(
                "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
                "upstream_url, detected_version_sha, confidence_score, name, description) "
                "SELECT :s, 'agent', 'agents/n' || g, 'https://x.io/a', 'a', 50, 'narrow-' || g, "
                "'Narrowing walrus' FROM generate_series(1, 3) g"
            ),
            {"s": tenant.source},
        )
    viewer = world.a.members["viewer"]
    assert len(search_all(session, viewer, "walrus")) == 3
    assert search_all(session, viewer, "walrus", source_ids=[world.b.source]) == []
    assert search_all(session, viewer, "walrus", project_id=world.b.project) == []
    mixed = search_all(session, viewer, "walrus", source_ids=[world.a.source, world.b.source])
    assert {h.entry.source_id for h in mixed} == {world.a.source}
    with conn.begin_nested() as sp:
        act_as(conn, world, "viewer")
        found = conn.execute(
            text(
                "SELECT count(*) FROM skillmeat_private.search_catalog(to_tsquery('simple', "
                "'walrus'), NULL, NULL, NULL, NULL, NULL, NULL, CAST(:s AS uuid[]), NULL, NULL, "
                "false, NULL, NULL, 100)"
            ),
            {"s": [world.b.source]},
        ).scalar_one()
        sp.rollback()
    assert found == 0


def test_admin_function_is_refused_to_members(session: Session, world: World) -> None:
    conn = session.connection()
    with conn.begin_nested() as sp:
        act_as(conn, world, "owner")
        with pytest.raises(Exception, match="permission denied"):
            conn.execute(
                text(
                    "SELECT * FROM skillmeat_private.search_catalog_admin(to_tsquery('x'), "
                    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL, 10)"
                )
            )
        sp.rollback()


# --- EXPLAIN: the definer's own plan, captured by auto_explain ---------------------------


def definer_plans(session: Session, world: World, query: str, **kw: Any) -> Iterator[str]:
    conn = session.connection()
    raw = conn.connection.driver_connection
    notices: list[str] = []
    raw.add_notice_handler(lambda d: notices.append(d.message_primary or ""))  # type: ignore[union-attr]
    conn.execute(text("LOAD 'auto_explain'"))
    for name, value in [
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_nested_statements", "on"),
        ("auto_explain.log_level", "notice"),
        ("auto_explain.log_format", "text"),
    ]:
        conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
    with tenant_scope(session, user_id=world.a.members["viewer"]):
        search_entries(session, query, **kw)
    conn.execute(text("SELECT set_config('auto_explain.log_min_duration', '-1', true)"))
    yield from notices


def test_text_predicate_is_an_index_condition_in_the_definer_plan(
    session: Session, world: World
) -> None:
    conn = session.connection()
    conn.execute(
        text(
            "INSERT INTO marketplace_sources (project_id, repo_url) "
            "SELECT :p, 'https://github.com/bulk/r' || g "
            "FROM generate_series(1, 40) g"
        ),
        {"p": world.a.project},
    )
    conn.execute(
        text(
            "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
            "upstream_url, "
            "detected_version_sha, confidence_score, name, description) "
            "SELECT s.id, 'skill', 'skills/s' || g, 'https://x.io/a', 'a', 50, 'skill-' || g, "
            "CASE WHEN g % 500 = 0 THEN 'rare zebra words' ELSE 'common text about tools' END "
            "FROM marketplace_sources s, generate_series(1, 500) g WHERE s.project_id = :p"
        ),
        {"p": world.a.project},
    )
    conn.execute(text("ANALYZE marketplace_catalog_entries"))
    plans = [
        p for p in definer_plans(session, world, "zebra") if "marketplace_catalog_entries" in p
    ]
    joined = "\n".join(plans)
    assert "Index Cond" in joined and "search_vector @@" in joined, joined
    text_conditions = [
        line
        for line in joined.splitlines()
        if "search_vector @@" in line and "Query Text" not in line
    ]
    assert text_conditions
    assert all("Index Cond" in line or "Recheck Cond" in line for line in text_conditions), joined
    assert "Seq Scan on marketplace_catalog_entries" not in joined, joined


@pytest.mark.parametrize("narrow", [True, False], ids=["one-small-source", "over-1000-entries"])
def test_type_ahead_prefix_in_small_and_large_scopes(
    session: Session, catalog: dict[str, Any], world: World, narrow: bool
) -> None:
    """The prefix's pass tests each entry of a scope of at most 1,000 entries and goes
    through the GIN index for a larger one; both find every word starting with it."""
    conn = session.connection()
    bulk = conn.execute(
        text(
            "INSERT INTO marketplace_sources (project_id, repo_url) "
            "VALUES (:p, 'https://github.com/bulk/fillers') RETURNING id"
        ),
        {"p": world.a.project},
    ).scalar_one()
    conn.execute(
        text(
            "INSERT INTO marketplace_catalog_entries (source_id, artifact_type, detected_path, "
            "upstream_url, detected_version_sha, confidence_score, name, description) "
            "SELECT :s, 'skill', 'skills/f' || g, 'https://x.io/f', 'a', 50, 'filler-' || g, "
            "'plain filler text' FROM generate_series(1, 1200) g"
        ),
        {"s": bulk},
    )
    conn.execute(text("ANALYZE marketplace_catalog_entries"))

    def pyth(r: dict[str, Any], t: list[str]) -> bool:
        return any(w.startswith("pyth") for w in t)

    want = expected(catalog, pyth)
    kw: dict[str, Any] = {}
    if narrow:
        source = max(catalog["sources"].values(), key=lambda s: sum(k[0] == s for k in want))
        assert sum(k[0] == source for k in catalog["records"]) <= 1000
        want = {k for k in want if k[0] == source}
        kw = {"source_ids": [source]}
    assert want
    assert keys(search_all(session, world.a.members["viewer"], "pyth", **kw)) == want
    plans = "\n".join(definer_plans(session, world, "pyth", **kw))
    assert ("ts_match_vq" in plans) == narrow, plans


# --- the benchmark command, at tiny sizes --------------------------------------------------


def test_bench_search_prints_every_scenario_and_target(
    pg_server_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    from skillmeat import cli

    argv = ["--url", pg_server_url.render_as_string(hide_password=False), "bench", "search"]
    sizes = ["--entries", "6000", "--big", "3000", "--mid", "1000", "--singles", "50,500"]
    assert cli.main([*argv, *sizes, "--repeat", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    for scenario in (
        "member, 3,000 visible: rare",
        "member, 1,000 visible: common",
        "source of 500",
    ):
        assert scenario in out, out
    assert "target every scenario <= 2x its baseline" in out
    assert "target common <= 5x rare, member seeing 3,000" in out
    assert "target no Seq Scan in the definer's plans" in out
    assert "same page" in out
